//! `hf:` sources: model info, config files, GGUF headers by Range, and every failure the Hub can give.

use artifacts_contract::{Gated, ModelEntry, ModelFamily, WeightFormat};
use catalog::ingest::gguf::{GgufValue, write_header};

use crate::common::{Env, Route, Server, fixture, sha256, tiny_llama_gguf};

const LLAMA_INFO: &str = "/api/models/meta-llama/Llama-3.2-3B?blobs=true";
const LLAMA_SHA: &str = "13afe5124825b4f3751f836b40dafda64c1ed062";
pub const GGUF_SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn llama_file(name: &str) -> String {
    format!("/meta-llama/Llama-3.2-3B/resolve/{LLAMA_SHA}/{name}")
}

/// The recorded Llama 3.2 model info, its configs behind a token, as a gated repo serves them.
fn serve_gated_llama(server: &Server, token: &str) {
    server.route(
        LLAMA_INFO,
        Route::json(fixture(
            "hf-api/meta-llama_Llama-3.2-3B.model-info.extracted.json",
        )),
    );
    for (name, file) in [
        ("config.json", "hf-config/llama-3.2-3b-instruct-config.json"),
        (
            "tokenizer_config.json",
            "hf-config/llama-3.1-8b-instruct-tokenizer_config.json",
        ),
        ("generation_config.json", "hf-config/phi-2-generation_config.json"),
    ] {
        let mut route = Route::json(fixture(file));
        route.require_auth = Some(format!("Bearer {token}"));
        server.route(&llama_file(name), route);
    }
}

/// A GGUF repo's model info (shaped like the Hub's `?blobs=true` answer) listing two quantizations.
pub fn serve_gguf_repo(server: &Server, weights: &[u8]) {
    let sha = sha256(weights);
    let info = serde_json::json!({
        "id": "demo/tiny-GGUF", "author": "demo", "sha": GGUF_SHA, "gated": false,
        "pipeline_tag": "text-generation", "library_name": "gguf", "tags": ["gguf", "llama", "license:mit"],
        "siblings": [
            {"rfilename": "README.md", "size": 10},
            {"rfilename": "tiny-Q4_K_M.gguf", "size": weights.len(), "lfs": {"sha256": sha, "size": weights.len()}},
            {"rfilename": "tiny-Q4_0.gguf", "size": weights.len(), "lfs": {"sha256": sha, "size": weights.len()}},
        ]
    });
    server.route(
        "/api/models/demo/tiny-GGUF?blobs=true",
        Route::json(info.to_string()),
    );
    for name in ["tiny-Q4_K_M.gguf", "tiny-Q4_0.gguf"] {
        server.route(
            &format!("/demo/tiny-GGUF/resolve/{GGUF_SHA}/{name}"),
            Route::bytes(weights.to_vec()),
        );
    }
}

#[test]
fn gated_repo_without_a_token_says_to_set_hf_token_and_stores_nothing() {
    let server = Server::start();
    serve_gated_llama(&server, "hf_secret_token_123");
    let env = Env::new(&server);
    let err = env.fails(&["add", "hf:meta-llama/Llama-3.2-3B", "--no-download"]);
    assert!(err.contains("is gated") && err.contains("HF_TOKEN"), "{err}");
    assert!(env.entries().is_empty());
}

#[test]
fn gated_repo_with_a_token_is_described_and_the_token_never_shows() {
    let token = "hf_secret_token_123";
    let server = Server::start();
    serve_gated_llama(&server, token);
    let mut env = Env::new(&server);
    env.extra.push(("HF_TOKEN".into(), token.into()));
    let run = env.run(&["add", "hf:meta-llama/Llama-3.2-3B", "--no-download", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stdout.contains(token) && !run.stderr.contains(token));
    let entry: ModelEntry = serde_json::from_str(&run.stdout).unwrap();
    let llm = entry.config.as_llm().unwrap();
    assert_eq!(
        (llm.model_family, llm.format, llm.gated),
        (ModelFamily::Llama, WeightFormat::Safetensors, Gated::Manual)
    );
    assert_eq!(llm.context_length, Some(131072));
    assert!(
        llm.tokenizer
            .chat_template
            .as_deref()
            .unwrap()
            .contains("<|start_header_id|>")
    );
    assert_eq!(llm.license.as_deref(), Some("llama3.2"));
    assert_eq!(entry.revision.as_deref(), Some(LLAMA_SHA));
    let names: Vec<&str> = entry.files.iter().map(|f| f.path.as_str()).collect();
    assert!(
        names.contains(&"model-00001-of-00002.safetensors") && !names.iter().any(|n| n.ends_with(".pth"))
    );
    let db = std::fs::read(env.home.path().join("catalog.db")).unwrap();
    assert!(
        !String::from_utf8_lossy(&db).contains(token),
        "the token reached the database"
    );
    // A wrong token is refused with the same hint, and is not echoed either.
    env.extra = vec![("HF_TOKEN".into(), "hf_wrong_token".into())];
    let err = env.fails(&["add", "hf:meta-llama/Llama-3.2-3B", "--no-download"]);
    assert!(
        err.contains("HF_TOKEN") && !err.contains("hf_wrong_token"),
        "{err}"
    );
}

#[test]
fn gguf_repo_reads_the_header_by_range_and_picks_the_quant() {
    let server = Server::start();
    // A header followed by 3 MB of "weights": only the first MiB may be asked for.
    let mut weights = tiny_llama_gguf();
    weights.resize(3 << 20, 0);
    serve_gguf_repo(&server, &weights);
    let env = Env::new(&server);
    let entry: ModelEntry =
        serde_json::from_str(&env.ok(&["add", "hf:demo/tiny-GGUF:Q4_K_M", "--no-download", "--json"]))
            .unwrap();
    let llm = entry.config.as_llm().unwrap();
    assert_eq!(
        (llm.format, llm.quantization.as_deref()),
        (WeightFormat::Gguf, Some("Q4_K_M"))
    );
    assert_eq!(llm.context_length, Some(2048));
    assert_eq!(entry.files.len(), 1);
    assert_eq!(entry.files[0].path, "tiny-Q4_K_M.gguf");
    let reads = server.requests_to(&format!("/demo/tiny-GGUF/resolve/{GGUF_SHA}/tiny-Q4_K_M.gguf"));
    assert_eq!(reads.len(), 1);
    assert_eq!(
        reads[0].headers.get("range").map(String::as_str),
        Some("bytes=0-1048575")
    );

    let err = env.fails(&["add", "hf:demo/tiny-GGUF:Q4", "--no-download"]);
    assert!(err.contains("tiny-Q4_K_M.gguf, tiny-Q4_0.gguf"), "{err}");
    let err = env.fails(&["add", "hf:demo/tiny-GGUF:Q2_K", "--no-download"]);
    assert!(err.contains("no file or quantization \"Q2_K\""), "{err}");
}

#[test]
fn a_header_larger_than_the_first_read_is_read_in_growing_ranges() {
    let server = Server::start();
    let vocab: Vec<GgufValue> = (0..80_000)
        .map(|i| GgufValue::String(format!("token-{i:06}")))
        .collect();
    let weights = write_header(
        &[
            ("general.architecture", GgufValue::String("qwen2".into())),
            ("tokenizer.ggml.tokens", GgufValue::Array(vocab)),
            ("tokenizer.chat_template", GgufValue::String("{{ x }}".into())),
        ],
        0,
    );
    assert!(weights.len() > 1 << 20);
    serve_gguf_repo(&server, &weights);
    let env = Env::new(&server);
    let entry: ModelEntry =
        serde_json::from_str(&env.ok(&["add", "hf:demo/tiny-GGUF:Q4_0", "--no-download", "--json"])).unwrap();
    let llm = entry.config.as_llm().unwrap();
    assert_eq!(
        (llm.model_family, llm.vocab_size),
        (ModelFamily::Qwen2, Some(80_000))
    );
    let ranges: Vec<String> = server
        .requests_to(&format!("/demo/tiny-GGUF/resolve/{GGUF_SHA}/tiny-Q4_0.gguf"))
        .iter()
        .filter_map(|s| s.headers.get("range").cloned())
        .collect();
    assert_eq!(ranges, ["bytes=0-1048575", "bytes=0-2097151"]);
}

#[test]
fn broken_gguf_headers_are_refused_with_their_reason() {
    let server = Server::start();
    let env = Env::new(&server);
    serve_gguf_repo(&server, &tiny_llama_gguf()[..60]);
    let err = env.fails(&["add", "hf:demo/tiny-GGUF:Q4_K_M", "--no-download"]);
    assert!(err.contains("GGUF header is truncated"), "{err}");
    let mut absurd = b"GGUF".to_vec();
    absurd.extend_from_slice(&3u32.to_le_bytes());
    absurd.extend_from_slice(&0u64.to_le_bytes());
    absurd.extend_from_slice(&1u64.to_le_bytes());
    absurd.extend_from_slice(&(12u64 << 30).to_le_bytes());
    serve_gguf_repo(&server, &absurd);
    let err = env.fails(&["add", "hf:demo/tiny-GGUF:Q4_K_M", "--no-download"]);
    assert!(err.contains("claims 12.0 GB of metadata"), "{err}");
    assert!(env.entries().is_empty());
}

#[test]
fn hub_failures_get_one_clear_sentence() {
    let server = Server::start();
    let env = Env::new(&server);
    let err = env.fails(&["add", "hf:nobody/nothing", "--no-download"]);
    assert!(err.contains("no model hf:nobody/nothing on the Hub"), "{err}");

    let info = fixture("hf-api/InvokeAI-test_textual_inversion_tests.model-info.extracted.json");
    let path = "/api/models/InvokeAI-test/textual_inversion_tests?blobs=true";
    server.route(path, Route::json(info[..200].to_vec()));
    let err = env.fails(&["add", "hf:InvokeAI-test/textual_inversion_tests", "--no-download"]);
    assert!(err.contains("malformed HuggingFace model info"), "{err}");

    let mut html = Route::json(b"<html>login</html>".to_vec());
    html.content_type = "text/html".into();
    server.route(path, html);
    let err = env.fails(&["add", "hf:InvokeAI-test/textual_inversion_tests", "--no-download"]);
    assert!(err.contains("content type \"text/html\""), "{err}");

    let mut limited = Route::json(info.clone());
    limited.rate_limited = 100;
    server.route(path, limited);
    let err = env.fails(&["add", "hf:InvokeAI-test/textual_inversion_tests", "--no-download"]);
    assert!(
        err.contains("rate limited") && err.contains("after 4 attempts"),
        "{err}"
    );
    assert!(env.entries().is_empty());

    let mut twice = Route::json(info);
    twice.rate_limited = 2;
    server.route(path, twice);
    let entry: ModelEntry = serde_json::from_str(&env.ok(&[
        "add",
        "hf:InvokeAI-test/textual_inversion_tests",
        "--no-download",
        "--json",
    ]))
    .unwrap();
    let image = entry.config.as_image().unwrap();
    assert_eq!(image.base, artifacts_contract::ImageBase::Sdxl);
    assert_eq!(
        image.checkpoint_type,
        artifacts_contract::CheckpointType::Embedding
    );
    assert_eq!(
        entry.files[0].sha256.as_deref(),
        Some("f368050465cd473785298808c37abd17b98e5f532c144cc1be1f5e897092e67f")
    );
}
