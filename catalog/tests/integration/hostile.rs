//! A hostile or broken hub: names that would escape the cache, pickle files in odd places, stalled
//! bodies; and split GGUF models, which are one entry.

use artifacts_contract::{ArtifactStatus, CatalogId, ModelEntry};

use crate::common::{Env, Route, Server, sha256, tiny_llama_gguf};

/// A one-file GGUF repo whose model info answers with `sha`, and whose file is served at that sha.
fn serve_repo_with_sha(server: &Server, sha: &str, weights: &[u8]) {
    let info = serde_json::json!({
        "id": "evil/tiny-GGUF", "sha": sha, "gated": false, "pipeline_tag": "text-generation",
        "siblings": [{"rfilename": "tiny-Q4_K_M.gguf", "size": weights.len(),
                      "lfs": {"sha256": sha256(weights), "size": weights.len()}}]
    });
    server.route(
        "/api/models/evil/tiny-GGUF?blobs=true",
        Route::json(info.to_string()),
    );
    let encoded = catalog::ingest::hf::encode_segment(sha);
    server.route(
        &format!("/evil/tiny-GGUF/resolve/{encoded}/tiny-Q4_K_M.gguf"),
        Route::bytes(weights.to_vec()),
    );
}

/// Every path under `root`, for checking nothing was written.
fn tree(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

#[test]
fn a_hub_answering_a_climbing_sha_is_refused_before_anything_is_written() {
    let server = Server::start();
    serve_repo_with_sha(&server, "../../../../x", &tiny_llama_gguf());
    let mut env = Env::new(&server);
    // HF_HOME two levels down, so `../../../../x` from its snapshots folder would land in this tempdir.
    let outer = tempfile::tempdir().unwrap();
    let hf_home = outer.path().join("a/b");
    std::fs::create_dir_all(&hf_home).unwrap();
    env.extra.push(("HF_HOME".into(), hf_home.display().to_string()));
    let err = env.fails(&["add", "hf:evil/tiny-GGUF"]);
    assert!(
        err.contains("refusing the commit sha \"../../../../x\"") && err.contains("one name"),
        "{err}"
    );
    assert!(env.entries().is_empty());
    assert_eq!(
        tree(outer.path()),
        [outer.path().join("a"), outer.path().join("a/b")]
    );
    assert!(
        server.seen().iter().all(|s| !s.path.contains("resolve")),
        "no file was fetched: {:?}",
        server.seen()
    );
}

#[test]
fn other_unsafe_shas_are_refused_with_their_rule() {
    for (sha, rule) in [
        ("a\\b", "backslash"),
        ("/etc", "absolute"),
        ("", "empty"),
        ("a\u{0}b", "NUL"),
    ] {
        let server = Server::start();
        serve_repo_with_sha(&server, sha, &tiny_llama_gguf());
        let env = Env::new(&server);
        let err = env.fails(&["add", "hf:evil/tiny-GGUF"]);
        assert!(err.contains("commit sha") && err.contains(rule), "{sha:?}: {err}");
    }
}

#[test]
fn a_stored_entry_with_a_climbing_revision_is_not_pulled() {
    let server = Server::start();
    let env = Env::new(&server);
    let catalog = catalog::Catalog::open(env.home.path()).unwrap();
    let mut entry = minimal_civitai_entry();
    entry.revision = Some("../../../outside".into());
    catalog.upsert(&entry).unwrap();
    let id = entry.id.to_string();
    let err = env.fails(&["pull", &id]);
    assert!(
        err.contains("refusing the version id \"../../../outside\""),
        "{err}"
    );
    assert!(!env.home.path().join("outside").exists());
}

fn minimal_civitai_entry() -> ModelEntry {
    let now = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
    ModelEntry {
        id: CatalogId::CivitAi {
            model: 5,
            version: None,
        },
        name: "x".into(),
        author: None,
        source: artifacts_contract::ModelSource::CivitAi,
        source_url: None,
        revision: None,
        path: None,
        size: 0,
        files: Vec::new(),
        status: ArtifactStatus::NotDownloaded,
        added_at: now,
        updated_at: now,
        config: artifacts_contract::TypedConfig::Image(artifacts_contract::ImageConfig::new(
            artifacts_contract::ImageBase::Sd1,
        )),
    }
}

#[test]
fn a_pickle_vae_beside_safetensors_is_refused_unless_allowed() {
    let server = Server::start();
    let index = br#"{"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}"#;
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let info = serde_json::json!({
        "id": "evil/sd", "sha": sha, "gated": false, "pipeline_tag": "text-to-image",
        "library_name": "diffusers",
        "siblings": [
            {"rfilename": "model_index.json", "size": index.len()},
            {"rfilename": "unet/diffusion_pytorch_model.safetensors", "size": 10},
            {"rfilename": "vae/diffusion_pytorch_model.bin", "size": 10},
        ]
    });
    server.route("/api/models/evil/sd?blobs=true", Route::json(info.to_string()));
    server.route(
        &format!("/evil/sd/resolve/{sha}/model_index.json"),
        Route::json(index.to_vec()),
    );
    let env = Env::new(&server);
    let err = env.fails(&["add", "hf:evil/sd", "--no-download"]);
    assert!(
        err.contains("vae/diffusion_pytorch_model.bin is a pickle file"),
        "{err}"
    );
    assert!(env.entries().is_empty());
    env.ok(&["add", "hf:evil/sd", "--no-download", "--allow-pickle"]);
    assert_eq!(env.entries().len(), 1);
}

#[test]
fn a_stalled_download_fails_clearly_and_resumes_on_the_next_pull() {
    let server = Server::start();
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let model = serde_json::json!({
        "id": 78, "name": "Stall", "type": "Checkpoint", "nsfw": false,
        "modelVersions": [{
            "id": 7801, "baseModel": "SDXL 1.0",
            "files": [{
                "name": "ckpt.safetensors", "type": "Model", "primary": true,
                "sizeKB": data.len() as f64 / 1024.0, "metadata": {"format": "SafeTensor"},
                "hashes": {"SHA256": sha256(&data)},
                "downloadUrl": format!("{}/api/download/models/7801", server.url)
            }]
        }]
    });
    server.route("/api/v1/models/78", Route::json(model.to_string()));
    let mut stalled = Route::bytes(data.clone());
    stalled.stall_after = Some(1500);
    stalled.stall_for = std::time::Duration::from_secs(4);
    server.route("/api/download/models/7801", stalled);
    let mut env = Env::new(&server);
    env.extra.push(("CATALOG_STALL_TIMEOUT".into(), "1".into()));
    env.ok(&["add", "civitai:78", "--no-download"]);
    let started = std::time::Instant::now();
    let err = env.fails(&["pull", "civitai:78"]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "the stall was not cut short"
    );
    assert!(
        err.contains("sent no byte for 1 s after 1500 bytes")
            && err.contains("run the command again to resume"),
        "{err}"
    );
    let e: ModelEntry = serde_json::from_str(&env.ok(&["show", "civitai:78", "--json"])).unwrap();
    assert_eq!(
        e.status,
        ArtifactStatus::Downloading {
            downloaded_bytes: 1500,
            total_bytes: Some(5000)
        }
    );
    let entry: ModelEntry = serde_json::from_str(&env.ok(&["pull", "civitai:78", "--json"])).unwrap();
    assert!(entry.status.is_available());
    let ranges: Vec<Option<String>> = server
        .requests_to("/api/download/models/7801")
        .iter()
        .map(|s| s.headers.get("range").cloned())
        .collect();
    assert_eq!(ranges, [None, Some("bytes=1500-".to_string())]);
    let file = env.home.path().join("files/civitai/78/7801/ckpt.safetensors");
    assert_eq!(std::fs::read(file).unwrap(), data);
}

#[test]
fn a_split_gguf_is_one_entry_with_every_shard() {
    let server = Server::start();
    let first = tiny_llama_gguf();
    let second = b"second shard".to_vec();
    let third = b"third shard".to_vec();
    let sha = "fedcba9876543210fedcba9876543210fedcba98";
    let names = [
        "big-Q4_K_M-00001-of-00003.gguf",
        "big-Q4_K_M-00002-of-00003.gguf",
        "big-Q4_K_M-00003-of-00003.gguf",
    ];
    let siblings: Vec<serde_json::Value> = names
        .iter()
        .zip([&first, &second, &third])
        .map(|(n, b)| serde_json::json!({"rfilename": n, "size": b.len(), "lfs": {"sha256": sha256(b), "size": b.len()}}))
        .chain([serde_json::json!({"rfilename": "small-Q8_0.gguf", "size": first.len()})])
        .collect();
    let info = serde_json::json!({
        "id": "demo/split-GGUF", "sha": sha, "gated": false, "pipeline_tag": "text-generation",
        "siblings": siblings
    });
    server.route(
        "/api/models/demo/split-GGUF?blobs=true",
        Route::json(info.to_string()),
    );
    for (n, b) in names.iter().zip([&first, &second, &third]) {
        server.route(
            &format!("/demo/split-GGUF/resolve/{sha}/{n}"),
            Route::bytes(b.to_vec()),
        );
    }
    let env = Env::new(&server);
    let entry: ModelEntry =
        serde_json::from_str(&env.ok(&["add", "hf:demo/split-GGUF:Q4_K_M", "--json"])).unwrap();
    let paths: Vec<&str> = entry.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, names);
    assert!(entry.status.is_available());
    assert_eq!(entry.size, (first.len() + second.len() + third.len()) as u64);
    let llm = entry.config.as_llm().unwrap();
    assert_eq!(
        llm.context_length,
        Some(2048),
        "the header is read from the first shard"
    );
    let snapshot = env
        .hf_home
        .path()
        .join("hub/models--demo--split-GGUF/snapshots")
        .join(sha);
    assert_eq!(std::fs::read(snapshot.join(names[2])).unwrap(), third);
}
