//! Local files, the demo fixture, usage errors and concurrent writers.

use artifacts_contract::{ImageBase, ImageVariant, ModelEntry, ModelFamily};
use catalog::ingest::safetensors::write_header;

use crate::common::{CHATML, Env, Server, fixtures, tiny_llama_gguf};

#[test]
fn committed_demo_gguf_matches_its_generator() {
    let path = fixtures().join("models/tiny-llama-chat.gguf");
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        std::fs::write(&path, tiny_llama_gguf()).unwrap();
    }
    let committed = std::fs::read(&path).expect("run UPDATE_FIXTURES=1 cargo test -p catalog to create it");
    assert_eq!(
        committed,
        tiny_llama_gguf(),
        "stale fixture: UPDATE_FIXTURES=1 cargo test -p catalog"
    );
    assert!(committed.len() < 8192);
}

#[test]
fn adding_a_local_gguf_reads_its_metadata() {
    let server = Server::start();
    let env = Env::new(&server);
    let path = fixtures().join("models/tiny-llama-chat.gguf");
    let out = env.ok(&["add", path.to_str().unwrap(), "--json"]);
    let entry: ModelEntry = serde_json::from_str(&out).unwrap();
    let llm = entry.config.as_llm().unwrap();
    assert_eq!(llm.model_family, ModelFamily::Llama);
    assert_eq!(llm.tokenizer.chat_template.as_deref(), Some(CHATML));
    assert_eq!(llm.tokenizer.eos, vec!["<|im_end|>".to_string()]);
    assert_eq!(llm.quantization.as_deref(), Some("Q4_K_M"));
    assert!(entry.status.is_available());
    assert!(entry.id.to_string().starts_with("file:/"));
    // Human output, show by path, and compat all find it.
    assert!(
        env.ok(&["show", path.to_str().unwrap()])
            .contains("chat template: yes")
    );
    // It holds no tensors: no worker is promised it, and the reason says why.
    let compat = env.ok(&["compat", &entry.id.to_string()]);
    assert!(
        compat.contains("worker-llm: no: the file holds no weights"),
        "{compat}"
    );
    assert!(
        compat.contains("worker-sd: no: worker-sd runs image models"),
        "{compat}"
    );
    // `list --json` prints exactly the stored contract JSON.
    assert_eq!(env.entries(), vec![entry]);
}

#[test]
fn local_safetensors_are_recognised_by_their_tensors() {
    let server = Server::start();
    let env = Env::new(&server);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("inpaint.safetensors");
    std::fs::write(
        &file,
        write_header(
            &[
                (
                    "model.diffusion_model.input_blocks.0.0.weight",
                    "F16",
                    &[320, 9, 3, 3],
                ),
                (
                    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
                    "F16",
                    &[320, 768],
                ),
            ],
            &[],
        ),
    )
    .unwrap();
    let entry: ModelEntry =
        serde_json::from_str(&env.ok(&["add", file.to_str().unwrap(), "--json"])).unwrap();
    let image = entry.config.as_image().unwrap();
    assert_eq!(
        (image.base, image.variant),
        (ImageBase::Sd1, ImageVariant::Inpaint)
    );

    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    let err = env.fails(&["add", text.to_str().unwrap()]);
    assert!(err.contains("cannot tell what"), "{err}");

    let truncated = dir.path().join("cut.safetensors");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.truncate(bytes.len() - 5);
    std::fs::write(&truncated, bytes).unwrap();
    assert!(
        env.fails(&["add", truncated.to_str().unwrap()])
            .contains("truncated")
    );
    assert_eq!(env.entries().len(), 1, "failed adds store nothing");
}

#[test]
fn usage_errors_exit_2_and_failures_exit_1() {
    let server = Server::start();
    let env = Env::new(&server);
    assert_eq!(env.run(&["list", "--type", "banana"]).code, 2);
    assert_eq!(env.run(&["frobnicate"]).code, 2);
    let r = env.run(&["show", "ollama:llama3"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("unknown catalog id scheme"), "{}", r.stderr);
    let err = env.fails(&["show", "hf:org/missing"]);
    assert!(
        err.contains("no model hf:org/missing in the catalog") && err.contains("catalog add hf:org/missing")
    );
    assert_eq!(env.ok(&["list", "--json"]).trim(), "[]");
}

#[test]
fn two_processes_adding_at_once_lose_nothing() {
    let server = Server::start();
    let env = Env::new(&server);
    let dir = tempfile::tempdir().unwrap();
    let per_process = 12;
    let mut paths = Vec::new();
    for p in 0..2 {
        let mut batch = Vec::new();
        for i in 0..per_process {
            let path = dir.path().join(format!("m-{p}-{i}.gguf"));
            std::fs::write(&path, tiny_llama_gguf()).unwrap();
            batch.push(path);
        }
        paths.push(batch);
    }
    // Two shells, each adding its files one process after another, running at the same time.
    let children: Vec<_> = paths
        .iter()
        .map(|batch| {
            let script: String = batch
                .iter()
                .map(|p| {
                    format!(
                        "\"$CATALOG\" --home \"$HOMEDIR\" add \"{}\" >/dev/null || exit 1\n",
                        p.display()
                    )
                })
                .collect();
            std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .env("CATALOG", env!("CARGO_BIN_EXE_catalog"))
                .env("HOMEDIR", env.home.path())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let entries = env.entries();
    assert_eq!(entries.len(), 2 * per_process);
    let conn = rusqlite::Connection::open(env.home.path().join("catalog.db")).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[test]
fn diffusers_and_hf_style_folders_are_catalogued_in_place() {
    use artifacts_contract::{CatalogId, FileRole, WorkerCapabilities, WorkerKind};
    let server = Server::start();
    let env = Env::new(&server);
    let dir = tempfile::tempdir().unwrap();

    let sd = dir.path().join("sd15");
    std::fs::create_dir_all(sd.join("unet")).unwrap();
    std::fs::create_dir_all(sd.join("vae")).unwrap();
    std::fs::write(
        sd.join("model_index.json"),
        crate::common::fixture("diffusers-config/sd15-model_index.json"),
    )
    .unwrap();
    std::fs::write(
        sd.join("unet/config.json"),
        crate::common::fixture("diffusers-config/sd15-unet_config.json"),
    )
    .unwrap();
    let tiny = write_header(&[("conv_in.weight", "F16", &[320, 4, 3, 3])], &[]);
    std::fs::write(sd.join("unet/diffusion_pytorch_model.safetensors"), &tiny).unwrap();
    std::fs::write(sd.join("unet/diffusion_pytorch_model.bin"), b"pickle").unwrap();
    std::fs::write(sd.join("vae/diffusion_pytorch_model.safetensors"), &tiny).unwrap();
    let entry: ModelEntry = serde_json::from_str(&env.ok(&["add", sd.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(entry.config.as_image().unwrap().base, ImageBase::Sd1);
    let files: Vec<(&str, FileRole)> = entry.files.iter().map(|f| (f.path.as_str(), f.role)).collect();
    assert_eq!(
        files,
        [
            ("model_index.json", FileRole::Config),
            ("unet/config.json", FileRole::Config),
            ("unet/diffusion_pytorch_model.safetensors", FileRole::Weights),
            ("vae/diffusion_pytorch_model.safetensors", FileRole::Vae),
        ]
    );
    let catalog = catalog::Catalog::open(env.home.path()).unwrap();
    let resolved = catalog::resolve::resolve(
        &catalog,
        &entry.id,
        &WorkerCapabilities::builtin(WorkerKind::Sd),
        None,
    )
    .unwrap();
    assert_eq!(resolved.root, std::fs::canonicalize(&sd).unwrap());

    let llm = dir.path().join("qwen");
    std::fs::create_dir_all(&llm).unwrap();
    std::fs::write(
        llm.join("config.json"),
        crate::common::fixture("hf-config/qwen2.5-7b-instruct-config.json"),
    )
    .unwrap();
    std::fs::write(llm.join("tokenizer.json"), b"{}").unwrap();
    std::fs::write(
        llm.join("model.safetensors"),
        write_header(&[("model.embed_tokens.weight", "BF16", &[8, 4])], &[]),
    )
    .unwrap();
    let entry: ModelEntry = serde_json::from_str(&env.ok(&["add", llm.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(entry.config.as_llm().unwrap().model_family, ModelFamily::Qwen2);
    assert!(matches!(entry.id, CatalogId::File { .. }));
    // Removing a local entry never deletes the user's files.
    env.ok(&["rm", llm.to_str().unwrap()]);
    assert!(llm.join("model.safetensors").is_file());
}

#[test]
fn a_local_file_is_hashed_so_verify_notices_a_changed_byte_and_a_moved_file() {
    let server = Server::start();
    let env = Env::new(&server);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    let bytes = tiny_llama_gguf();
    std::fs::write(&path, &bytes).unwrap();
    let entry: ModelEntry =
        serde_json::from_str(&env.ok(&["add", path.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(
        entry.files[0].sha256.as_deref(),
        Some(crate::common::sha256(&bytes).as_str())
    );
    let id = entry.id.to_string();
    let verified: ModelEntry = serde_json::from_str(&env.ok(&["verify", &id, "--json"])).unwrap();
    assert!(verified.status.is_available());

    // One byte changed, same size: only the hash can tell.
    let mut changed = bytes.clone();
    let last = changed.len() - 1;
    changed[last] ^= 1;
    std::fs::write(&path, &changed).unwrap();
    let err = env.fails(&["verify", &id]);
    assert!(
        err.contains("changed since it was added")
            && err.contains(&format!("catalog add {}", path.display())),
        "{err}"
    );

    // Moved away: named at its real path, with the commands that fix it (not `catalog pull`).
    std::fs::rename(&path, dir.path().join("elsewhere.gguf")).unwrap();
    let err = env.fails(&["verify", &id]);
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(
        err.contains(&format!("catalog rm {id}")) && err.contains("catalog add NEW_PATH"),
        "{err}"
    );
    assert!(!err.contains("catalog pull"), "{err}");
}

#[test]
fn search_takes_several_words_and_empty_answers_say_so() {
    let server = Server::start();
    let env = Env::new(&server);
    let empty = env.run(&["list"]);
    assert_eq!(empty.code, 0);
    assert!(
        empty.stderr.contains("is empty; add a model with `catalog add"),
        "{}",
        empty.stderr
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny-chat.gguf");
    std::fs::write(&path, tiny_llama_gguf()).unwrap();
    env.ok(&["add", path.to_str().unwrap()]);
    let found = env.ok(&["search", "tiny", "chat"]);
    assert!(found.contains("tiny-chat.gguf"), "{found}");
    let none = env.run(&["search", "tiny", "zebra"]);
    assert_eq!((none.code, none.stdout.as_str()), (0, ""));
    assert!(
        none.stderr
            .contains("no entry in the catalog matches \"tiny zebra\""),
        "{}",
        none.stderr
    );
    let removed: ModelEntry =
        serde_json::from_str(&env.ok(&["rm", path.to_str().unwrap(), "--json"])).unwrap();
    assert!(removed.id.to_string().ends_with("tiny-chat.gguf"));
    assert!(env.entries().is_empty());
    assert!(path.is_file(), "a local entry's file is the user's: rm keeps it");
}

#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    use std::process::{Command, Stdio};
    let server = Server::start();
    let env = Env::new(&server);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    std::fs::write(&path, tiny_llama_gguf()).unwrap();
    env.ok(&["add", path.to_str().unwrap()]);
    // `catalog list | true`: the reader is gone before the command writes its first line.
    let mut child = Command::new(env!("CARGO_BIN_EXE_catalog"))
        .args(["--catalog-home", env.home.path().to_str().unwrap(), "list"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
