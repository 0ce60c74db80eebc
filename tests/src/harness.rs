//! Running the workspace's binaries as a user does: one catalog home and HF cache per test, every
//! process bounded in time, servers on free loopback ports that are stopped when the test ends.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::Server;

/// `tests/fixtures` of the workspace.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache"))
        .join("open-model-catalog")
}

/// The real SmolLM2-135M-Instruct Q4_1 GGUF that `scripts/fetch-models.sh` caches.
pub fn smollm2_gguf() -> PathBuf {
    let cache = std::env::var_os("OMC_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("models"));
    let path = cache.join("smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "{} is missing: run `bash scripts/fetch-models.sh` first",
        path.display()
    );
    path
}

/// The Python with the `openai` client that `scripts/test-python.sh` makes.
pub fn test_python() -> PathBuf {
    let path = std::env::var_os("OMC_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("venv-test/bin/python"));
    assert!(
        path.is_file(),
        "{} is missing: run `bash scripts/test-python.sh`",
        path.display()
    );
    path
}

/// `path` written relative to the folder `base` (by `..` steps), as a user at a prompt would name it.
pub fn relative_to(path: &Path, base: &Path) -> String {
    let path = std::fs::canonicalize(path).expect("an existing path");
    let base = std::fs::canonicalize(base).expect("an existing folder");
    let common = base
        .components()
        .zip(path.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut parts = vec!["..".to_string(); base.components().count() - common];
    parts.extend(
        path.components()
            .skip(common)
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

/// The lower-case hex SHA-256 of `bytes`, as hubs publish it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A word-level `tokenizer.json` for the tiny LLM fixtures' 256-word vocabulary (`<unk>`, `<s>`, `</s>`,
/// then `w3`...`w255`), and a `tokenizer_config.json` naming its special tokens and a chat template.
pub fn word_level_tokenizer() -> (serde_json::Value, serde_json::Value) {
    use serde_json::json;
    let vocab: serde_json::Map<String, serde_json::Value> = (0..256u32)
        .map(|id| {
            let word = match id {
                0 => "<unk>".to_string(),
                1 => "<s>".to_string(),
                2 => "</s>".to_string(),
                _ => format!("w{id}"),
            };
            (word, json!(id))
        })
        .collect();
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    });
    let config = json!({
        "bos_token": "<s>", "eos_token": "</s>",
        "chat_template": "{% for m in messages %}{{ m.role }} w3 {{ m.content }} w4 {% endfor %}{% if add_generation_prompt %}assistant w3{% endif %}",
    });
    (tokenizer, config)
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The workspace's binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bin {
    /// `catalog`.
    Catalog,
    /// `worker-llm`.
    WorkerLlm,
    /// `worker-sd`.
    WorkerSd,
}

impl Bin {
    /// The binary's file name.
    pub fn name(self) -> &'static str {
        match self {
            Bin::Catalog => "catalog",
            Bin::WorkerLlm => "worker-llm",
            Bin::WorkerSd => "worker-sd",
        }
    }

    /// Its path in the target folder this test was built into.
    pub fn path(self) -> PathBuf {
        let exe = std::env::current_exe().expect("the test executable's path");
        // target/debug/deps/e2e-HASH -> target/debug/NAME
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test runs from target/PROFILE/deps");
        let path = dir.join(format!("{}{}", self.name(), std::env::consts::EXE_SUFFIX));
        assert!(
            path.is_file(),
            "{} is not built: run `cargo build --workspace --bins` (or `cargo test --workspace`)",
            path.display()
        );
        path
    }
}

/// What a finished command said.
#[derive(Debug)]
pub struct Run {
    /// The command, for messages.
    pub what: String,
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Expects success; returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "{} failed ({}):\n{}\n{}",
            self.what, self.code, self.stdout, self.stderr
        );
        &self.stdout
    }

    /// Expects failure; returns stderr.
    pub fn failed(&self) -> &str {
        assert_ne!(self.code, 0, "{} succeeded:\n{}", self.what, self.stdout);
        &self.stderr
    }
}

/// Waits for `child` at most `limit`, killing it past that; collects its output.
fn finish(mut child: Child, what: String, limit: Duration) -> Run {
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let stdout = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let stderr = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} ran longer than {limit:?}; stderr:\n{}",
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        what,
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// A catalog home and an HF cache of one test, and the hub endpoints its commands talk to.
pub struct Home {
    /// The catalog home (`--catalog-home`).
    pub home: tempfile::TempDir,
    /// `HF_HOME`, where `hf:` files are downloaded.
    pub hf_home: tempfile::TempDir,
    endpoint: Option<String>,
}

impl Default for Home {
    fn default() -> Self {
        Self::new()
    }
}

impl Home {
    /// A new empty home that reaches no hub.
    pub fn new() -> Home {
        Home {
            home: tempfile::tempdir().expect("a temporary catalog home"),
            hf_home: tempfile::tempdir().expect("a temporary HF cache"),
            endpoint: None,
        }
    }

    /// A new home whose `hf:` and `civitai:` requests go to `hub`.
    pub fn with_hub(hub: &Server) -> Home {
        Home {
            endpoint: Some(hub.url.clone()),
            ..Home::new()
        }
    }

    /// `bin` with this home's environment; the catalog home is passed as the flag every binary takes.
    pub fn command(&self, bin: Bin) -> Command {
        let mut cmd = Command::new(bin.path());
        cmd.env("HF_HOME", self.hf_home.path())
            .env_remove("CATALOG_HOME")
            .env_remove("HF_TOKEN")
            .env_remove("CIVITAI_TOKEN")
            .env_remove("RUST_BACKTRACE")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Nothing here may reach a real hub: without a loopback hub, point the sources at a closed port.
        let endpoint = self
            .endpoint
            .clone()
            .unwrap_or_else(|| "http://127.0.0.1:9".to_string());
        cmd.env("HF_ENDPOINT", &endpoint)
            .env("CIVITAI_ENDPOINT", &endpoint);
        cmd
    }

    /// Runs `bin SUBCOMMAND --catalog-home HOME REST...` for at most `limit`.
    pub fn run(&self, bin: Bin, args: &[&str], limit: Duration) -> Run {
        let (sub, rest) = args.split_first().expect("a subcommand");
        let mut cmd = self.command(bin);
        cmd.arg(sub)
            .arg("--catalog-home")
            .arg(self.home.path())
            .args(rest);
        let what = format!("{} {}", bin.name(), args.join(" "));
        finish(cmd.spawn().expect("starting the binary"), what, limit)
    }

    /// `worker-llm generate --model ID` of two tokens, within a minute: what a user tries first.
    pub fn try_generate(&self, id: &str) -> Run {
        self.run(
            Bin::WorkerLlm,
            &["generate", "--model", id, "--prompt", "hi", "--max-tokens", "2"],
            Duration::from_secs(60),
        )
    }

    /// `catalog ARGS...`, within a minute.
    pub fn catalog(&self, args: &[&str]) -> Run {
        self.run(Bin::Catalog, args, Duration::from_secs(60))
    }

    /// `catalog ARGS... --json`, parsed.
    pub fn catalog_json(&self, args: &[&str]) -> serde_json::Value {
        let mut with = args.to_vec();
        with.push("--json");
        let run = self.catalog(&with);
        serde_json::from_str(run.ok())
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", run.what, run.stdout))
    }

    /// `BIN serve --catalog-home HOME --port FREE ARGS...`, waited for until `/ready` answers 200.
    pub fn serve(&self, bin: Bin, args: &[&str]) -> Served {
        let port = free_port();
        let mut cmd = self.command(bin);
        cmd.arg("serve")
            .arg("--catalog-home")
            .arg(self.home.path())
            .args(["--port", &port.to_string()])
            .args(args)
            .stdout(Stdio::null());
        // The log goes to a file: a pipe nobody reads would stop a chatty server.
        let log = tempfile::NamedTempFile::new().expect("a log file");
        cmd.stderr(Stdio::from(log.reopen().expect("the log file")));
        let child = cmd.spawn().expect("starting the server");
        let mut served = Served {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            what: format!("{} serve {}", bin.name(), args.join(" ")),
            log: log.into_temp_path(),
        };
        served.wait_ready(Duration::from_secs(180));
        served
    }
}

/// A worker serving on loopback; stopped (SIGTERM, then killed) when dropped.
pub struct Served {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    what: String,
    log: tempfile::TempPath,
}

impl Served {
    fn wait_ready(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "{} exited ({status}) before it was ready:\n{}",
                    self.what,
                    self.log()
                );
            }
            if self.get("/ready").0 == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready after {limit:?}",
                self.what
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .new_agent()
    }

    /// GET `path`: status and body (status 0 when nothing answers).
    pub fn get(&self, path: &str) -> (u16, String) {
        match Self::agent().get(format!("{}{path}", self.base)).call() {
            Ok(mut r) => (
                r.status().as_u16(),
                r.body_mut().read_to_string().unwrap_or_default(),
            ),
            Err(_) => (0, String::new()),
        }
    }

    /// POST a JSON body to `path`: status and body.
    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> (u16, String) {
        let mut r = Self::agent()
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .unwrap_or_else(|e| panic!("POST {path} to {}: {e}", self.what));
        (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        )
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits up to `limit` for the exit (killing it past that); returns the exit code.
    pub fn terminate(&mut self, limit: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.terminate(Duration::from_secs(15));
    }
}
