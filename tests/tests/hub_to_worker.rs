//! Models from the hubs, end to end: the loopback fake hub serves an `hf:` GGUF (the real SmolLM2), an
//! `hf:` safetensors repo and a `civitai:` checkpoint; `catalog` adds, pulls and verifies them into a real
//! catalog home and HF cache; the workers serve them by catalog id to real clients (the official `openai`
//! Python client, and an images request). Also: `catalog rm` while a worker has the entry loaded, and a
//! pull cut off mid-file, resumed, then served.

use std::process::Command;
use std::time::Duration;

use artifacts_contract::ModelEntry;
use e2e_tests::{
    Bin, Home, Route, Server, fixtures, sha256_hex, smollm2_gguf, test_python, word_level_tokenizer,
};
use serde_json::json;

const SMOL_REPO: &str = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF";
const SMOL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const SMOL_ID: &str = "hf:HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:Q4_1";
const SHA: &str = "5b0f1a9e0c3d4e5f60718293a4b5c6d7e8f90a1b";

/// The Hub's model info (`?blobs=true`) for a repo of `files` (name, bytes), at commit [`SHA`].
fn serve_hf_repo(hub: &Server, repo: &str, tags: &[&str], files: &[(&str, Vec<u8>, String)]) {
    let siblings: Vec<serde_json::Value> = files
        .iter()
        .map(|(name, body, sha)| {
            json!({"rfilename": name, "size": body.len(), "lfs": {"sha256": sha, "size": body.len()}})
        })
        .collect();
    let info = json!({
        "id": repo, "author": repo.split('/').next(), "sha": SHA, "gated": false,
        "pipeline_tag": "text-generation", "tags": tags, "siblings": siblings,
    });
    hub.route(
        &format!("/api/models/{repo}?blobs=true"),
        Route::json(info.to_string()),
    );
    hub.route(&format!("/api/models/{repo}"), Route::json(info.to_string()));
    for (name, body, _) in files {
        hub.route(
            &format!("/{repo}/resolve/{SHA}/{name}"),
            Route::bytes(body.clone()),
        );
    }
}

fn smollm2_repo(hub: &Server) {
    let body = std::fs::read(smollm2_gguf()).unwrap();
    let sha = sha256_hex(&body);
    serve_hf_repo(hub, SMOL_REPO, &["gguf", "llama"], &[(SMOL_FILE, body, sha)]);
}

/// The next answer for SmolLM2's file closes the connection after `bytes` (a dropped download).
fn cut_smollm2_after(hub: &Server, bytes: usize) {
    let mut cut = Route::bytes(std::fs::read(smollm2_gguf()).unwrap());
    cut.cut_after = Some(bytes);
    hub.route(&format!("/{SMOL_REPO}/resolve/{SHA}/{SMOL_FILE}"), cut);
}

fn entry(home: &Home, args: &[&str]) -> ModelEntry {
    serde_json::from_value(home.catalog_json(args)).expect("contract JSON")
}

/// The official `openai` client asks the server's model (by the id it serves) a chat question.
fn openai_chat(base: &str, model: &str, question: &str) -> String {
    let script = r#"
import sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key="none")
reply = client.chat.completions.create(
    model=sys.argv[2], max_tokens=16, temperature=0,
    messages=[{"role": "system", "content": "You are a helpful assistant."},
              {"role": "user", "content": sys.argv[3]}])
print(reply.choices[0].message.content)
"#;
    let out = Command::new(test_python())
        .args(["-c", script, base, model, question])
        .output()
        .expect("the test Python");
    assert!(
        out.status.success(),
        "openai client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn an_hf_gguf_is_pulled_verified_and_served_by_id_then_removed_while_loaded() {
    let hub = Server::start();
    smollm2_repo(&hub);
    let home = Home::with_hub(&hub);
    let added = entry(&home, &["add", SMOL_ID]);
    assert!(added.status.is_available(), "{:?}", added.status);
    // The file sits in the HF cache layout, where Python tools find it too.
    let snapshot = home.hf_home.path().join(format!(
        "hub/models--HuggingFaceTB--SmolLM2-135M-Instruct-GGUF/snapshots/{SHA}/{SMOL_FILE}"
    ));
    assert!(snapshot.is_file(), "{}", snapshot.display());
    let verified = entry(&home, &["verify", SMOL_ID]);
    assert!(verified.status.is_available());

    let mut served = home.serve(Bin::WorkerLlm, &["--model", SMOL_ID]);
    let answer = openai_chat(&served.base, SMOL_ID, "What is the capital of France?");
    assert!(answer.contains("Paris"), "{answer}");

    // Removing the entry deletes its files; the running worker keeps its loaded model and answers.
    let removed = entry(&home, &["rm", SMOL_ID]);
    assert_eq!(removed.id.to_string(), SMOL_ID);
    assert!(!snapshot.exists());
    let again = openai_chat(&served.base, SMOL_ID, "What is the capital of France?");
    assert!(again.contains("Paris"), "{again}");
    assert_eq!(
        served.terminate(Duration::from_secs(30)),
        Some(0),
        "{}",
        served.log()
    );
    // A new worker cannot load what is gone, and says how to bring it back.
    let run = home.try_generate(SMOL_ID);
    let err = run.failed();
    assert!(err.contains(&format!("catalog add {SMOL_ID}")), "{err}");
}

#[test]
fn a_pull_cut_off_mid_file_resumes_and_is_then_served() {
    let hub = Server::start();
    smollm2_repo(&hub);
    let home = Home::with_hub(&hub);
    // Describing it reads only the GGUF header, by a Range request; the download is cut at 20 MiB.
    entry(&home, &["add", SMOL_ID, "--no-download"]);
    cut_smollm2_after(&hub, 20 << 20);
    let first = home.catalog(&["pull", SMOL_ID]);
    first.failed();
    let pending = entry(&home, &["show", SMOL_ID]);
    assert!(!pending.status.is_available());
    // Not available: a worker refuses it and names the command that finishes it.
    let refused = home.try_generate(SMOL_ID);
    assert!(
        refused.failed().contains(&format!("catalog pull {SMOL_ID}")),
        "{}",
        refused.stderr
    );

    let pulled = entry(&home, &["pull", SMOL_ID]);
    assert!(pulled.status.is_available());
    let ranges: Vec<Option<String>> = hub
        .requests_to(&format!("/{SMOL_REPO}/resolve/{SHA}/{SMOL_FILE}"))
        .iter()
        .filter_map(|s| s.headers.get("range").cloned().map(Some))
        .collect();
    assert!(
        ranges
            .iter()
            .any(|r| r.as_deref() == Some(&format!("bytes={}-", 20 << 20))),
        "the second pull resumes where the first stopped: {ranges:?}"
    );
    let served = home.serve(Bin::WorkerLlm, &["--model", SMOL_ID]);
    let (status, body) = served.post_json(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "system", "content": "You are a helpful assistant."},
                             {"role": "user", "content": "What is the capital of France?"}],
                "max_tokens": 12, "temperature": 0}),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Paris"), "{body}");
}

/// `tests/fixtures/llm/tiny/llama` as an HF repo with a word-level tokenizer of its 256 words.
fn tiny_llama_repo_files() -> Vec<(&'static str, Vec<u8>, String)> {
    let dir = fixtures().join("llm/tiny/llama");
    let (tokenizer, tokenizer_config) = word_level_tokenizer();
    let files = vec![
        ("config.json", std::fs::read(dir.join("config.json")).unwrap()),
        (
            "model.safetensors",
            std::fs::read(dir.join("model.safetensors")).unwrap(),
        ),
        ("tokenizer.json", tokenizer.to_string().into_bytes()),
        ("tokenizer_config.json", tokenizer_config.to_string().into_bytes()),
    ];
    files
        .into_iter()
        .map(|(name, body)| {
            let sha = sha256_hex(&body);
            (name, body, sha)
        })
        .collect()
}

#[test]
fn an_hf_safetensors_repo_is_pulled_and_served_by_id() {
    let hub = Server::start();
    serve_hf_repo(
        &hub,
        "demo/tiny-llama",
        &["safetensors", "llama"],
        &tiny_llama_repo_files(),
    );
    let home = Home::with_hub(&hub);
    let added = entry(&home, &["add", "hf:demo/tiny-llama"]);
    assert!(added.status.is_available(), "{:?}", added.status);
    let compat: Vec<artifacts_contract::Compatibility> =
        serde_json::from_value(home.catalog_json(&["compat", "hf:demo/tiny-llama"])).unwrap();
    assert!(compat[0].compatible, "{:?}", compat[0].reasons);
    let served = home.serve(Bin::WorkerLlm, &["--model", "hf:demo/tiny-llama"]);
    let (status, body) = served.post_json(
        "/v1/completions",
        &json!({"prompt": "w5 w6 w7", "max_tokens": 5, "temperature": 0}),
    );
    assert_eq!(status, 200, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        reply["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{body}"
    );
}

#[test]
fn a_civitai_checkpoint_is_pulled_verified_and_served_by_id() {
    let hub = Server::start();
    let file = fixtures().join("sd/tiny-sd15.safetensors");
    let body = std::fs::read(&file).unwrap();
    let model = json!({
        "id": 4201, "name": "Tiny Realistic", "type": "Checkpoint", "nsfw": false,
        "modelVersions": [{
            "id": 130072, "baseModel": "SD 1.5", "trainedWords": [],
            "files": [{
                "name": "tinyRealistic_v1.safetensors", "type": "Model", "primary": true,
                "sizeKB": body.len() as f64 / 1024.0,
                "metadata": {"format": "SafeTensor", "fp": "fp32"},
                "hashes": {"SHA256": sha256_hex(&body).to_uppercase()},
                "downloadUrl": format!("{}/api/download/models/130072", hub.url)
            }]
        }]
    });
    hub.route("/api/v1/models/4201", Route::json(model.to_string()));
    hub.route("/api/download/models/130072", Route::bytes(body.clone()));
    let home = Home::with_hub(&hub);
    let added = entry(&home, &["add", "civitai:4201"]);
    assert!(added.status.is_available(), "{:?}", added.status);
    assert!(entry(&home, &["verify", "civitai:4201"]).status.is_available());
    let config = fixtures().join("sd/tiny-sd15");
    let served = home.serve(
        Bin::WorkerSd,
        &[
            "--model",
            "civitai:4201",
            "--config-folder",
            config.to_str().unwrap(),
        ],
    );
    let (status, reply) = served.post_json(
        "/v1/images/generations",
        &json!({"prompt": "a red cube", "width": 64, "height": 64, "steps": 2, "seed": 3}),
    );
    assert_eq!(status, 200, "{reply}");
    let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
    let image = reply["data"][0]["b64_json"].as_str().expect("an image");
    assert!(image.len() > 100, "a PNG in base64");
    let parameters = reply["data"][0]["parameters"].as_str().unwrap_or_default();
    assert!(parameters.contains("Seed: 3"), "{parameters}");
}
