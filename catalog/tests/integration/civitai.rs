//! `civitai:` sources: models, versions, pickle refusal and lookup by hash.

use artifacts_contract::{CheckpointType, Distillation, ImageBase, ModelEntry};

use crate::common::{Env, Route, Server, fixture, sha256};

fn list_item(id: u64) -> String {
    let list: serde_json::Value =
        serde_json::from_slice(&fixture("civitai-api/models-list-13-mixed-types.json")).unwrap();
    let item = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .unwrap();
    item.to_string()
}

#[test]
fn a_checkpoint_is_described_from_the_recorded_model() {
    let server = Server::start();
    server.route(
        "/api/v1/models/4201",
        Route::json(fixture(
            "civitai-api/model-4201-checkpoint-sd15-realistic-vision.json",
        )),
    );
    let env = Env::new(&server);
    let entry: ModelEntry =
        serde_json::from_str(&env.ok(&["add", "civitai:4201", "--no-download", "--json"])).unwrap();
    assert_eq!(entry.name, "Realistic Vision V6.0 B1");
    assert_eq!(entry.author.as_deref(), Some("SG_161222"));
    assert_eq!(entry.revision.as_deref(), Some("501240"));
    let image = entry.config.as_image().unwrap();
    assert_eq!(
        (image.base, image.distillation),
        (ImageBase::Sd1, Some(Distillation::Hyper))
    );
    assert_eq!(image.checkpoint_type, CheckpointType::Checkpoint);
    assert_eq!(
        entry.files[0].sha256.as_deref(),
        Some("f47e942ad4c30d863ad7f53cb60145ffcd2118845dfa705ce8bd6b42e90c4a13")
    );
    assert!(!entry.status.is_available());

    let older: ModelEntry =
        serde_json::from_str(&env.ok(&["add", "civitai:4201@130072", "--no-download", "--json"])).unwrap();
    assert_eq!(older.config.as_image().unwrap().distillation, None);
    let err = env.fails(&["add", "civitai:4201@999", "--no-download"]);
    assert!(err.contains("501240, 501286, 130072, 130090"), "{err}");
    assert_eq!(env.entries().len(), 2);
}

#[test]
fn pony_and_flux_bases_are_normalized() {
    let server = Server::start();
    server.route("/api/v1/models/257749", Route::json(list_item(257749)));
    server.route("/api/v1/models/618692", Route::json(list_item(618692)));
    let env = Env::new(&server);
    let pony: ModelEntry =
        serde_json::from_str(&env.ok(&["add", "civitai:257749", "--no-download", "--json"])).unwrap();
    assert_eq!(pony.config.as_image().unwrap().base, ImageBase::Sdxl);
    assert_eq!(pony.files.len(), 2, "the VAE beside the checkpoint is kept");
    let flux: ModelEntry =
        serde_json::from_str(&env.ok(&["add", "civitai:618692", "--no-download", "--json"])).unwrap();
    assert_eq!(flux.config.as_image().unwrap().base, ImageBase::Flux);
    assert_eq!(
        env.ok(&["list", "--base", "sdxl", "--json"])
            .matches("\"id\"")
            .count(),
        1
    );
}

#[test]
fn pickle_checkpoints_need_allow_pickle() {
    let server = Server::start();
    server.route("/api/v1/models/1274", Route::json(list_item(1274)));
    let env = Env::new(&server);
    let err = env.fails(&["add", "civitai:1274", "--no-download"]);
    assert!(
        err.contains("dreamlikeDiffusion10_10.ckpt is a pickle file") && err.contains("--allow-pickle"),
        "{err}"
    );
    assert!(env.entries().is_empty());
    env.ok(&["add", "civitai:1274", "--no-download", "--allow-pickle"]);
    let compat = env.ok(&["compat", "civitai:1274"]);
    assert!(
        compat.contains("worker-sd: no: pickle weights are never loaded"),
        "{compat}"
    );
}

#[test]
fn identify_looks_a_file_up_by_its_hash() {
    let server = Server::start();
    let env = Env::new(&server);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lora.safetensors");
    std::fs::write(&file, b"some weights").unwrap();
    let sha = sha256(b"some weights");
    let err = env.fails(&["identify", file.to_str().unwrap()]);
    assert!(
        err.contains("CivitAI does not know") && err.contains(&sha),
        "{err}"
    );
    server.route(
        &format!("/api/v1/model-versions/by-hash/{sha}"),
        Route::json(fixture("civitai-api/model-version-1255556-lora-flux1d.json")),
    );
    let entry: ModelEntry =
        serde_json::from_str(&env.ok(&["identify", file.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(entry.id.to_string(), "civitai:1117241@1255556");
    let image = entry.config.as_image().unwrap();
    assert_eq!(
        (image.base, image.checkpoint_type),
        (ImageBase::Flux, CheckpointType::Lora)
    );
    assert_eq!(image.trigger_words, vec!["in the style of ppWhimsy".to_string()]);
}
