//! Shared helpers of the catalog's integration tests: the loopback server, running the `catalog`
//! command against it, and the fixtures.
#![allow(dead_code)]

pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use catalog::ingest::gguf::{GgufValue, write_header};
use sha2::{Digest, Sha256};

pub use server::{Route, Server};

/// `tests/fixtures` of the workspace.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

pub fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The ChatML template the demo GGUF carries (the one Qwen2.5 ships).
pub const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// The committed demo model `tests/fixtures/models/tiny-llama-chat.gguf`: llama metadata, a small
/// vocabulary and a chat template, no tensors. Regenerate with `UPDATE_FIXTURES=1 cargo test -p catalog`.
pub fn tiny_llama_gguf() -> Vec<u8> {
    tiny_llama_gguf_declaring(0)
}

/// The same header declaring `tensor_count` tensors (their table is left out: the catalog reads only
/// the metadata), for tests of what happens to a file a worker would be promised.
pub fn tiny_llama_gguf_declaring(tensor_count: u64) -> Vec<u8> {
    let mut tokens: Vec<GgufValue> = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
        .iter()
        .map(|t| GgufValue::String(t.to_string()))
        .collect();
    tokens.extend((b'a'..=b'z').map(|c| GgufValue::String((c as char).to_string())));
    write_header(
        &[
            ("general.architecture", GgufValue::String("llama".into())),
            ("general.name", GgufValue::String("Tiny Llama Chat (demo)".into())),
            ("general.file_type", GgufValue::Uint(15)),
            ("general.license", GgufValue::String("mit".into())),
            ("llama.context_length", GgufValue::Uint(2048)),
            ("llama.embedding_length", GgufValue::Uint(64)),
            ("llama.block_count", GgufValue::Uint(2)),
            ("llama.attention.head_count", GgufValue::Uint(4)),
            ("llama.attention.head_count_kv", GgufValue::Uint(2)),
            ("tokenizer.ggml.model", GgufValue::String("llama".into())),
            ("tokenizer.ggml.tokens", GgufValue::Array(tokens)),
            ("tokenizer.ggml.bos_token_id", GgufValue::Uint(1)),
            ("tokenizer.ggml.eos_token_id", GgufValue::Uint(4)),
            ("tokenizer.ggml.add_bos_token", GgufValue::Bool(true)),
            ("tokenizer.chat_template", GgufValue::String(CHATML.into())),
        ],
        tensor_count,
    )
}

/// A catalog home, an HF cache and the environment pointing the command at a loopback server.
pub struct Env {
    pub home: tempfile::TempDir,
    pub hf_home: tempfile::TempDir,
    pub endpoint: String,
    pub extra: Vec<(String, String)>,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Env {
    pub fn new(server: &Server) -> Env {
        Env {
            home: tempfile::tempdir().unwrap(),
            hf_home: tempfile::tempdir().unwrap(),
            endpoint: server.url.clone(),
            extra: Vec::new(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_catalog"));
        cmd.arg("--catalog-home")
            .arg(self.home.path())
            .args(args)
            .env("HF_ENDPOINT", &self.endpoint)
            .env("CIVITAI_ENDPOINT", &self.endpoint)
            .env("HF_HOME", self.hf_home.path())
            .env_remove("HF_TOKEN")
            .env_remove("CIVITAI_TOKEN")
            .env_remove("CATALOG_HOME");
        for (k, v) in &self.extra {
            cmd.env(k, v);
        }
        let out: Output = cmd.output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }

    /// Runs and expects success, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(r.code, 0, "{args:?} failed: {}", r.stderr);
        r.stdout
    }

    /// Runs and expects exit 1 with one line on stderr, returning it.
    pub fn fails(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(
            r.code, 1,
            "{args:?}: expected failure, got {} / {} / {}",
            r.code, r.stdout, r.stderr
        );
        assert_eq!(r.stderr.trim().lines().count(), 1, "one line: {}", r.stderr);
        r.stderr
    }

    /// The entries stored, by `list --json`.
    pub fn entries(&self) -> Vec<artifacts_contract::ModelEntry> {
        serde_json::from_str(&self.ok(&["list", "--json"])).unwrap()
    }
}
