//! Benchmark of the catalog's two hot paths, printed side by side with what they are measured against:
//!
//! - `list --json` over 10,000 entries: the stored-JSON stream (what the command does) against
//!   parsing every entry and serializing it again; and the whole `catalog list --json` process when the
//!   binary is built next to this example. Goal: under 50 ms.
//! - `add --no-download` of a GGUF repo against a loopback server: the whole add (model info, header by
//!   Range, ingestion, store) against the same HTTP requests alone. Goal: under 100 ms beyond the server.
//!
//! Run: `cargo run --release -p catalog --example bench` (add `--bin catalog` builds to time the process).

#[path = "../tests/integration/common/server.rs"]
#[allow(dead_code)]
mod server;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use artifacts_contract::{
    ArtifactStatus, CatalogId, FileRole, ImageConfig, LlmConfig, ModelEntry, ModelFamily, ModelFile,
    ModelSource, TypedConfig, WeightFormat,
};
use catalog::ingest::gguf::{GgufValue, write_header};
use catalog::ops::{self, AddOptions, Settings, Sources};
use catalog::sources::hf::HfClient;
use catalog::{Catalog, Filter};
use server::{Route, Server};

const ENTRIES: usize = 10_000;
const RUNS: usize = 15;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed()
            })
            .collect(),
    )
}

fn ms(d: Duration) -> String {
    format!("{:8.2} ms", d.as_secs_f64() * 1e3)
}

/// Entries shaped like real ones: LLMs with a chat template of Llama 3's length, SDXL checkpoints with
/// previews and tags.
fn entries() -> Vec<ModelEntry> {
    let template = "{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] }}<|eot_id|>{% endfor %}".repeat(8);
    let now = catalog::ops::now();
    (0..ENTRIES)
        .map(|i| {
            let (id, config) = if i % 2 == 0 {
                let mut c = LlmConfig::new(ModelFamily::Llama, WeightFormat::Gguf);
                c.quantization = Some("Q4_K_M".into());
                c.context_length = Some(131072);
                c.tokenizer.chat_template = Some(template.clone());
                c.tokenizer.eos = vec!["<|eot_id|>".into()];
                c.tags = vec!["gguf".into(), "llama".into(), "text-generation".into()];
                (format!("hf:org-{i}/model-{i}-GGUF:Q4_K_M"), TypedConfig::Llm(c))
            } else {
                let mut c = ImageConfig::from_base_model("Pony");
                c.tags = vec!["anime".into(), "base model".into()];
                c.trigger_words = vec!["score_9".into()];
                (format!("civitai:{i}"), TypedConfig::Image(c))
            };
            ModelEntry {
                id: id.parse().expect("valid id"),
                name: format!("Model {i}"),
                author: Some("someone".into()),
                source: if i % 2 == 0 {
                    ModelSource::HuggingFace
                } else {
                    ModelSource::CivitAi
                },
                source_url: Some(format!("https://example.org/{i}")),
                revision: Some("0123456789abcdef0123456789abcdef01234567".into()),
                path: None,
                size: 4_000_000_000,
                files: vec![ModelFile {
                    path: format!("model-{i}.gguf"),
                    size: Some(4_000_000_000),
                    sha256: Some("ab".repeat(32)),
                    role: FileRole::Weights,
                    url: None,
                }],
                status: ArtifactStatus::NotDownloaded,
                added_at: now,
                updated_at: now,
                config,
            }
        })
        .collect()
}

fn bench_list() {
    let home = tempfile::tempdir().expect("temp dir");
    let catalog = Catalog::open(home.path()).expect("open");
    catalog.upsert_many(&entries()).expect("insert");
    let mut bytes = 0;
    let stream = time(RUNS, || {
        let c = Catalog::open(home.path()).expect("open");
        let mut out = Vec::with_capacity(32 << 20);
        c.write_json(&Filter::default(), None, &mut out).expect("list");
        bytes = out.len();
    });
    let reparse = time(RUNS, || {
        let c = Catalog::open(home.path()).expect("open");
        serde_json::to_vec(&c.list(&Filter::default()).expect("list")).expect("json")
    });
    println!(
        "list --json, {ENTRIES} entries ({:.1} MB of JSON), median of {RUNS}:",
        bytes as f64 / 1e6
    );
    println!(
        "  open + stream stored JSON (what the command does) {}",
        ms(stream)
    );
    println!(
        "  open + parse + re-serialize (the naive way)       {}   ({:.1}x slower)",
        ms(reparse),
        reparse.as_secs_f64() / stream.as_secs_f64()
    );
    let bin: Option<PathBuf> = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.join("catalog")))
        .filter(|p| p.is_file());
    match bin {
        Some(bin) => {
            let process = time(RUNS, || {
                std::process::Command::new(&bin)
                    .args(["--home", home.path().to_str().expect("utf-8"), "list", "--json"])
                    .stdout(std::process::Stdio::null())
                    .status()
                    .expect("run catalog")
            });
            println!(
                "  `catalog list --json > /dev/null`, whole process  {}",
                ms(process)
            );
        }
        None => println!("  (build the binary too, `--bin catalog`, to time the whole process)"),
    }
}

fn bench_add() {
    let server = Server::start();
    let mut weights = write_header(
        &[
            ("general.architecture", GgufValue::String("llama".into())),
            ("general.file_type", GgufValue::Uint(15)),
            ("llama.context_length", GgufValue::Uint(8192)),
            (
                "tokenizer.ggml.tokens",
                GgufValue::Array(
                    (0..32_000)
                        .map(|i| GgufValue::String(format!("tok{i}")))
                        .collect(),
                ),
            ),
            (
                "tokenizer.chat_template",
                GgufValue::String("{{ messages }}".into()),
            ),
        ],
        0,
    );
    weights.resize(4 << 20, 0);
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let info = serde_json::json!({
        "id": "bench/tiny-GGUF", "sha": sha, "gated": false, "pipeline_tag": "text-generation",
        "siblings": [{"rfilename": "tiny-Q4_K_M.gguf", "size": weights.len()}]
    });
    let info_path = "/api/models/bench/tiny-GGUF?blobs=true";
    let file_path = format!("/bench/tiny-GGUF/resolve/{sha}/tiny-Q4_K_M.gguf");
    server.route(info_path, Route::json(info.to_string()));
    server.route(&file_path, Route::bytes(weights));
    let hf = HfClient::builder().endpoint(Some(server.url.clone())).build();
    let sources = Sources::new(
        &Settings::default()
            .with("HF_ENDPOINT", server.url.clone())
            .with("CIVITAI_ENDPOINT", server.url.clone())
            .with("HF_HOME", "/nonexistent"),
    );
    let home = tempfile::tempdir().expect("temp dir");
    let catalog = Catalog::open(home.path()).expect("open");
    let opts = AddOptions {
        download: false,
        allow_pickle: false,
    };
    let runs = 40;
    let add = time(runs, || {
        ops::add(&catalog, &sources, "hf:bench/tiny-GGUF:Q4_K_M", opts).expect("add")
    });
    let http = time(runs, || {
        let a = hf
            .http()
            .get_json(&format!("{}{info_path}", server.url))
            .expect("info");
        let b = hf
            .http()
            .get_prefix(
                &format!("{}{file_path}", server.url),
                catalog::ingest::gguf::FIRST_READ_BYTES,
            )
            .expect("range");
        (a, b)
    });
    let id: CatalogId = "hf:bench/tiny-GGUF:Q4_K_M".parse().expect("id");
    assert!(catalog.get(&id).expect("get").is_some());
    println!("add --no-download of a GGUF repo (32k-token vocabulary) on loopback, median of {runs}:");
    println!("  whole add (info, header by Range, ingest, store)  {}", ms(add));
    println!("  the same two HTTP requests alone                  {}", ms(http));
    println!(
        "  catalog's own time beyond the server              {}",
        ms(add.saturating_sub(http))
    );
}

fn main() {
    bench_list();
    bench_add();
}
