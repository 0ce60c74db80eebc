//! Servers on loopback ports (tiny model or SmolLM2), the engines to compare them with, the test
//! Python, an SSE parser and a metrics reader.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use artifacts_contract::DeviceKind;
use candle_core::Device;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use worker_llm::serve::LlmBackend;
use worker_llm::{Engine, GenerationParams, ModelFiles, Prompt, Usage};
use worker_runtime::ServeArgs;

/// Which model a test server serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// Random 2-layer llama, vocabulary of 256 words, context of 128 tokens.
    Tiny,
    /// SmolLM2-135M-Instruct Q4_1.
    SmolLm2,
}

impl Model {
    /// The catalog id the server reports.
    pub fn id(self) -> &'static str {
        match self {
            Model::Tiny => "file:tiny-llama",
            Model::SmolLm2 => "hf:HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:Q4_1",
        }
    }

    /// Where its files are.
    pub fn path(self) -> PathBuf {
        match self {
            Model::Tiny => tiny_model().to_path_buf(),
            Model::SmolLm2 => crate::smollm2::smollm2_gguf(),
        }
    }

    /// An engine of the same model in this process, shared by the tests.
    pub fn engine(self) -> MutexGuard<'static, Engine> {
        static TINY: OnceLock<Mutex<Engine>> = OnceLock::new();
        static SMOLLM2: OnceLock<Mutex<Engine>> = OnceLock::new();
        let cell = match self {
            Model::Tiny => &TINY,
            Model::SmolLm2 => &SMOLLM2,
        };
        cell.get_or_init(|| Mutex::new(Engine::load_path(&self.path(), &Device::Cpu).unwrap()))
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Greedy text and counts of the engine in this process, as the server should answer them.
    pub fn greedy(self, prompt: &Prompt, max_tokens: u32) -> (String, Usage) {
        let params = GenerationParams {
            temperature: Some(0.0),
            max_tokens: Some(max_tokens),
            ..Default::default()
        };
        let completion = self
            .engine()
            .generate(prompt, &params, |_| std::ops::ControlFlow::Continue(()))
            .unwrap();
        (completion.text, completion.usage)
    }
}

/// The tiny random llama of `tests/fixtures/llm/tiny/llama` in a temporary folder, with a word-level
/// tokenizer of 256 words (`<unk>`, `<s>`, `</s>`, then `w3`...`w255`: every output decodes to plain
/// words, so stop strings can be picked from it) and a chat template.
fn tiny_model() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llm/tiny/llama");
        for file in ["config.json", "model.safetensors"] {
            std::fs::copy(fixture.join(file), dir.path().join(file)).unwrap();
        }
        let mut vocab = serde_json::Map::new();
        for id in 0..256u32 {
            let word = match id {
                0 => "<unk>".to_owned(),
                1 => "<s>".to_owned(),
                2 => "</s>".to_owned(),
                _ => format!("w{id}"),
            };
            vocab.insert(word, json!(id));
        }
        let tokenizer = json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
            "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
        });
        let config = json!({
            "bos_token": "<s>", "eos_token": "</s>",
            "chat_template": "{% for m in messages %}{{ m.role }} w3 {{ m.content }} w4 {% endfor %}\
                              {% if add_generation_prompt %}assistant w3{% endif %}",
        });
        std::fs::write(dir.path().join("tokenizer.json"), tokenizer.to_string()).unwrap();
        std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
        dir
    })
    .path()
}

/// The Python with `openai` and `prometheus_client`; panics with the command that makes it.
pub fn python() -> PathBuf {
    let path = std::env::var_os("OMC_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache")
                });
            cache.join("open-model-catalog/venv-test/bin/python")
        });
    assert!(
        path.is_file(),
        "{} is missing: run `bash scripts/test-python.sh`",
        path.display()
    );
    path
}

/// A running server, stopped when dropped.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    stop: CancellationToken,
}

impl TestServer {
    /// Serves `model` with `args` on a port the OS picks, and waits until it is ready.
    pub async fn start(model: Model, mut args: ServeArgs) -> TestServer {
        args.port = 0;
        let key = args.api_key.clone();
        let stop = CancellationToken::new();
        let server = worker_llm::serve::server(args, model.id(), DeviceKind::Cpu)
            .shutdown_on(stop.clone().cancelled_owned());
        let listener = server.bind().await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let files = ModelFiles::discover(&model.path()).unwrap();
        let load = move || {
            LlmBackend::load(&files, &Device::Cpu)
                .map_err(|err| worker_runtime::WorkerError::Internal(err.to_string()))
        };
        tokio::spawn(server.serve(listener, load));
        let client = reqwest::Client::new();
        for _ in 0..1200 {
            let mut ready = client.get(format!("{base}/ready"));
            if let Some(key) = &key {
                ready = ready.bearer_auth(key);
            }
            if ready.send().await.is_ok_and(|r| r.status() == 200) {
                return TestServer { base, stop };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server did not become ready within 60 s");
    }

    /// A URL on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Posts a JSON body (given as text, so malformed bodies can be sent); the status and the JSON
    /// answer (`null` when it is not JSON).
    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Posts and returns the status and the whole body as text (for streams).
    pub async fn post_text(&self, path: &str, body: &Value) -> (u16, String) {
        let response = reqwest::Client::new()
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// The samples of `/metrics`, read by a Prometheus text parser.
    pub async fn metrics(&self) -> Vec<prometheus_parse::Sample> {
        let text = reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_owned())))
            .expect("/metrics parses")
            .samples
    }

    /// One sample's value (a histogram's count), if present.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.metrics().await.iter().find_map(|sample| {
            let matches = sample.metric == name
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(key) == Some(*value));
            matches.then(|| match &sample.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
                prometheus_parse::Value::Summary(_) => f64::NAN,
            })
        })
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The `(event name, data)` pairs of a whole SSE body (the name is empty when the block has none).
pub fn sse_events(body: &str) -> Vec<(String, String)> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut event = String::new();
            let mut data = None;
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    event = value.trim().to_owned();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data = Some(value.trim_start().to_owned());
                }
            }
            data.map(|data| (event, data))
        })
        .collect()
}
