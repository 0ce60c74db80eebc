//! Downloads: verification, resume, hash mismatch, path traversal, the HF cache layout, verify and rm.

use artifacts_contract::{ArtifactStatus, CatalogId, ModelEntry, WorkerCapabilities, WorkerKind};

use crate::common::{Env, Route, Server, sha256, tiny_llama_gguf_declaring};
use crate::hf::{GGUF_SHA, serve_gguf_repo};

/// A CivitAI model whose one file is served by the loopback server.
fn serve_civitai_file(server: &Server, name: &str, body: &[u8], published_sha: &str) {
    let model = serde_json::json!({
        "id": 77, "name": "Test Checkpoint", "type": "Checkpoint", "nsfw": false,
        "modelVersions": [{
            "id": 7001, "baseModel": "SDXL 1.0",
            "files": [{
                "name": name, "type": "Model", "primary": true, "sizeKB": body.len() as f64 / 1024.0,
                "metadata": {"format": "SafeTensor"}, "hashes": {"SHA256": published_sha.to_uppercase()},
                "downloadUrl": format!("{}/api/download/models/7001", server.url)
            }]
        }]
    });
    server.route("/api/v1/models/77", Route::json(model.to_string()));
    server.route("/api/download/models/7001", Route::bytes(body.to_vec()));
}

fn body() -> Vec<u8> {
    (0..5000u32).map(|i| (i % 251) as u8).collect()
}

fn status_of(env: &Env, id: &str) -> ArtifactStatus {
    let e: ModelEntry = serde_json::from_str(&env.ok(&["show", id, "--json"])).unwrap();
    e.status
}

#[test]
fn a_download_is_verified_then_available_and_rm_deletes_it() {
    let server = Server::start();
    let data = body();
    serve_civitai_file(&server, "ckpt.safetensors", &data, &sha256(&data));
    let env = Env::new(&server);
    let entry: ModelEntry = serde_json::from_str(&env.ok(&["add", "civitai:77", "--json"])).unwrap();
    assert!(entry.status.is_available());
    let file = std::path::Path::new(entry.path.as_deref().unwrap()).join("ckpt.safetensors");
    assert!(file.starts_with(env.home.path()));
    assert_eq!(std::fs::read(&file).unwrap(), data);
    assert!(env.ok(&["verify", "civitai:77"]).contains("every file verified"));

    std::fs::write(&file, b"tampered").unwrap();
    let err = env.fails(&["verify", "civitai:77"]);
    assert!(err.contains("ckpt.safetensors has 8 bytes"), "{err}");
    assert!(matches!(
        status_of(&env, "civitai:77"),
        ArtifactStatus::Failed { .. }
    ));

    env.ok(&["rm", "civitai:77"]);
    assert!(!file.exists());
    assert!(env.entries().is_empty());
}

#[test]
fn an_interrupted_download_resumes_with_a_range_request() {
    let server = Server::start();
    let data = body();
    serve_civitai_file(&server, "ckpt.safetensors", &data, &sha256(&data));
    let mut cut = Route::bytes(data.clone());
    cut.cut_after = Some(1200);
    server.route("/api/download/models/7001", cut);
    let env = Env::new(&server);
    env.ok(&["add", "civitai:77", "--no-download"]);
    let err = env.fails(&["pull", "civitai:77"]);
    assert!(
        err.contains("run the command again to resume") || err.contains("cannot reach"),
        "{err}"
    );
    match status_of(&env, "civitai:77") {
        ArtifactStatus::Downloading {
            downloaded_bytes,
            total_bytes,
        } => {
            assert_eq!((downloaded_bytes, total_bytes), (1200, Some(5000)))
        }
        other => panic!("{other:?}"),
    }
    let partial = env
        .home
        .path()
        .join("files/civitai/77/7001/ckpt.safetensors.partial");
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), 1200);

    let entry: ModelEntry = serde_json::from_str(&env.ok(&["pull", "civitai:77", "--json"])).unwrap();
    assert!(entry.status.is_available());
    let ranges: Vec<Option<String>> = server
        .requests_to("/api/download/models/7001")
        .iter()
        .map(|s| s.headers.get("range").cloned())
        .collect();
    assert_eq!(ranges, vec![None, Some("bytes=1200-".to_string())]);
    assert!(!partial.exists());
    assert_eq!(std::fs::read(partial.with_extension("")).unwrap(), data);
}

#[test]
fn a_hash_mismatch_fails_and_leaves_no_file() {
    let server = Server::start();
    let data = body();
    serve_civitai_file(&server, "ckpt.safetensors", &data, &sha256(b"something else"));
    let env = Env::new(&server);
    let err = env.fails(&["add", "civitai:77"]);
    assert!(err.contains("ckpt.safetensors is corrupt"), "{err}");
    assert!(matches!(
        status_of(&env, "civitai:77"),
        ArtifactStatus::Failed { .. }
    ));
    let folder = env.home.path().join("files/civitai/77/7001");
    assert!(!folder.join("ckpt.safetensors").exists() && !folder.join("ckpt.safetensors.partial").exists());
}

#[test]
fn remote_names_that_escape_the_folder_are_refused() {
    let server = Server::start();
    let data = body();
    serve_civitai_file(&server, "../../escape.safetensors", &data, &sha256(&data));
    let env = Env::new(&server);
    let err = env.fails(&["add", "civitai:77"]);
    assert!(
        err.contains("refusing the file name \"../../escape.safetensors\""),
        "{err}"
    );
    assert!(env.entries().is_empty());
    assert!(!env.home.path().join("escape.safetensors").exists());
}

#[test]
fn hf_files_land_in_the_hf_cache_and_blobs_are_reused() {
    let server = Server::start();
    let weights = tiny_llama_gguf_declaring(1);
    serve_gguf_repo(&server, &weights);
    let env = Env::new(&server);
    let entry: ModelEntry =
        serde_json::from_str(&env.ok(&["add", "hf:demo/tiny-GGUF:Q4_K_M", "--json"])).unwrap();
    assert!(entry.status.is_available());
    let repo = env.hf_home.path().join("hub/models--demo--tiny-GGUF");
    let link = repo.join(format!("snapshots/{GGUF_SHA}/tiny-Q4_K_M.gguf"));
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        std::path::PathBuf::from(format!("../../blobs/{}", sha256(&weights)))
    );
    assert_eq!(std::fs::read(&link).unwrap(), weights);

    // The Q4_0 file has the same content: its blob is reused, not fetched again.
    env.ok(&["add", "hf:demo/tiny-GGUF:Q4_0"]);
    let full_gets = server
        .seen()
        .into_iter()
        .filter(|s| s.path.ends_with(".gguf") && !s.headers.contains_key("range"))
        .count();
    assert_eq!(full_gets, 1);

    // What a worker asks: absolute paths of an available, compatible entry.
    let catalog = catalog::Catalog::open(env.home.path()).unwrap();
    let id: CatalogId = "hf:demo/tiny-GGUF:Q4_K_M".parse().unwrap();
    let resolved =
        catalog::resolve::resolve(&catalog, &id, &WorkerCapabilities::builtin(WorkerKind::Llm), None)
            .unwrap();
    assert_eq!(resolved.files[0].1, link);
}

#[test]
fn a_safetensors_repo_at_a_tag_is_cached_with_its_configs_and_ref() {
    let server = Server::start();
    let config =
        br#"{"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "max_position_embeddings": 4096}"#;
    let tokenizer = br#"{"version": "1.0", "model": {"type": "BPE"}}"#;
    let weights =
        catalog::ingest::safetensors::write_header(&[("model.embed_tokens.weight", "BF16", &[8, 4])], &[]);
    let sha = "89abcdef0123456789abcdef0123456789abcdef";
    let info = serde_json::json!({
        "id": "demo/tiny-llm", "sha": sha, "gated": false, "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "siblings": [
            {"rfilename": "config.json", "size": config.len()},
            {"rfilename": "tokenizer.json", "size": tokenizer.len()},
            {"rfilename": "model.safetensors", "size": weights.len(),
             "lfs": {"sha256": sha256(&weights), "size": weights.len()}},
            {"rfilename": "pytorch_model.bin", "size": 3},
        ]
    });
    server.route(
        "/api/models/demo/tiny-llm/revision/v1.0?blobs=true",
        Route::json(info.to_string()),
    );
    for (name, body) in [
        ("config.json", &config[..]),
        ("tokenizer.json", &tokenizer[..]),
        ("model.safetensors", &weights),
    ] {
        server.route(
            &format!("/demo/tiny-llm/resolve/{sha}/{name}"),
            Route::bytes(body.to_vec()),
        );
    }
    let env = Env::new(&server);
    let entry: ModelEntry =
        serde_json::from_str(&env.ok(&["add", "hf:demo/tiny-llm@v1.0", "--json"])).unwrap();
    assert!(entry.status.is_available());
    let llm = entry.config.as_llm().unwrap();
    assert_eq!(
        (llm.model_family, llm.context_length),
        (artifacts_contract::ModelFamily::Qwen2, Some(4096))
    );
    let names: Vec<&str> = entry.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        names,
        ["model.safetensors", "config.json", "tokenizer.json"],
        "no pickle beside safetensors"
    );
    let repo = env.hf_home.path().join("hub/models--demo--tiny-llm");
    assert_eq!(std::fs::read_to_string(repo.join("refs/v1.0")).unwrap(), sha);
    let snapshot = repo.join("snapshots").join(sha);
    assert_eq!(std::fs::read(snapshot.join("config.json")).unwrap(), config);
    assert!(
        repo.join("blobs").join(sha256(config)).is_file(),
        "small files are blobs named by their hash"
    );

    let catalog = catalog::Catalog::open(env.home.path()).unwrap();
    let id: CatalogId = "hf:demo/tiny-llm@v1.0".parse().unwrap();
    let resolved =
        catalog::resolve::resolve(&catalog, &id, &WorkerCapabilities::builtin(WorkerKind::Llm), None)
            .unwrap();
    assert_eq!(
        resolved.paths_with_role(artifacts_contract::FileRole::Tokenizer),
        [snapshot.join("tokenizer.json")]
    );
}

#[test]
fn a_second_pull_of_the_same_entry_waits_its_turn() {
    let server = Server::start();
    let data = body();
    serve_civitai_file(&server, "ckpt.safetensors", &data, &sha256(&data));
    let env = Env::new(&server);
    env.ok(&["add", "civitai:77", "--no-download"]);
    let id: CatalogId = "civitai:77".parse().unwrap();
    let locks = env.home.path().join("locks");
    // This test process stands for another catalog process holding the lock.
    let held = catalog::download::lock_entry(&locks, &id).unwrap();
    let err = env.fails(&["pull", "civitai:77"]);
    assert!(
        err.contains("another catalog process") && err.contains(&std::process::id().to_string()),
        "{err}"
    );
    assert_eq!(status_of(&env, "civitai:77"), ArtifactStatus::NotDownloaded);
    drop(held);
    // A lock left by a process that no longer runs is taken over.
    let stale = catalog::download::lock_entry(&locks, &id).unwrap();
    std::mem::forget(stale);
    let lock_file = std::fs::read_dir(&locks).unwrap().next().unwrap().unwrap().path();
    std::fs::write(&lock_file, "4194303").unwrap();
    assert!(
        env.ok(&["pull", "civitai:77", "--json"])
            .contains("\"state\":\"available\"")
    );
    assert!(!lock_file.exists());
}
