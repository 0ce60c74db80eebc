//! Every model fixture in the repository, and the real SmolLM2: `catalog add`, then `catalog compat`,
//! then the worker by catalog id. What `compat` promises and what the worker does must agree: "yes" and
//! it runs, or "no" and the worker refuses with the same reasons.

use std::path::{Path, PathBuf};
use std::time::Duration;

use artifacts_contract::{Compatibility, ModelEntry, WorkerKind};
use e2e_tests::{Bin, Home, fixtures, relative_to, smollm2_gguf, word_level_tokenizer};

const RUN_LIMIT: Duration = Duration::from_secs(240);

/// A model to try, how its worker is asked to run it, and what a run must show.
struct Case {
    /// What is added: a path.
    path: PathBuf,
    worker: WorkerKind,
    /// Extra worker flags (a single-file checkpoint's `--config-folder`).
    extra: Vec<String>,
}

fn add(home: &Home, path: &Path) -> ModelEntry {
    let value = home.catalog_json(&["add", path.to_str().unwrap()]);
    serde_json::from_value(value).expect("contract JSON")
}

fn compat(home: &Home, id: &str, worker: WorkerKind) -> Compatibility {
    let answers: Vec<Compatibility> =
        serde_json::from_value(home.catalog_json(&["compat", id])).expect("compat JSON");
    answers
        .into_iter()
        .find(|a| a.worker == worker)
        .expect("an answer per worker")
}

/// Runs the worker on `id` (a `file:` id written as given) and checks the outcome agrees with `answer`.
fn run_and_agree(home: &Home, case: &Case, id: &str, answer: &Compatibility) -> String {
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().to_str().unwrap().to_string();
    let mut args: Vec<String> = match case.worker {
        WorkerKind::Llm => [
            "generate",
            "--model",
            id,
            "--prompt",
            "hello",
            "--max-tokens",
            "4",
            "--temperature",
            "0",
            "--ignore-eos",
        ]
        .map(String::from)
        .to_vec(),
        WorkerKind::Sd => [
            "generate",
            "--model",
            id,
            "--prompt",
            "a red cube",
            "--steps",
            "2",
            "--width",
            "64",
            "--height",
            "64",
            "--seed",
            "7",
            "--out",
            &out_dir,
        ]
        .map(String::from)
        .to_vec(),
    };
    args.extend(case.extra.iter().cloned());
    let bin = match case.worker {
        WorkerKind::Llm => Bin::WorkerLlm,
        WorkerKind::Sd => Bin::WorkerSd,
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = home.run(bin, &args, RUN_LIMIT);
    if answer.compatible {
        let stdout = run.ok().to_string();
        if case.worker == WorkerKind::Sd {
            let pngs = std::fs::read_dir(out.path()).unwrap().count();
            assert_eq!(pngs, 1, "{}: one image written", run.what);
        } else {
            assert!(
                run.stderr.contains("generated tokens: 4"),
                "{}: {}",
                run.what,
                run.stderr
            );
        }
        stdout
    } else {
        let stderr = run.failed();
        assert!(!answer.reasons.is_empty());
        for reason in &answer.reasons {
            assert!(
                stderr.contains(reason.as_str()),
                "{}: compat said `{reason}`, the worker said:\n{stderr}",
                run.what
            );
        }
        assert!(!stderr.contains("stack backtrace"), "{stderr}");
        stderr.to_string()
    }
}

fn check(home: &Home, case: &Case) -> (Compatibility, String) {
    let entry = add(home, &case.path);
    let id = entry.id.to_string();
    let answer = compat(home, &id, case.worker);
    let said = run_and_agree(home, case, &id, &answer);
    (answer, said)
}

/// `tests/fixtures/llm/tiny/ARCH` copied, with a word-level tokenizer of its 256-word vocabulary when
/// `tokenizer`; without one, it is a repo of weights alone.
fn tiny_llm(dir: &Path, arch: &str, tokenizer: bool) -> PathBuf {
    let src = fixtures().join("llm/tiny").join(arch);
    let dst = dir.join(format!("{arch}-{}", if tokenizer { "tok" } else { "bare" }));
    std::fs::create_dir_all(&dst).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(file), dst.join(file)).unwrap();
    }
    if tokenizer {
        let (tokenizer, config) = word_level_tokenizer();
        std::fs::write(dst.join("tokenizer.json"), tokenizer.to_string()).unwrap();
        std::fs::write(dst.join("tokenizer_config.json"), config.to_string()).unwrap();
    }
    dst
}

#[test]
fn every_tiny_llm_architecture_runs_by_id_exactly_when_compat_says_so() {
    let home = Home::new();
    let dir = tempfile::tempdir().unwrap();
    let arches = [
        "llama", "mistral", "phi", "phi3", "qwen2", "qwen3", "gemma", "gemma2", "gemma3",
    ];
    for arch in arches {
        for tokenizer in [true, false] {
            let case = Case {
                path: tiny_llm(dir.path(), arch, tokenizer),
                worker: WorkerKind::Llm,
                extra: Vec::new(),
            };
            let (answer, _) = check(&home, &case);
            assert_eq!(
                answer.compatible, tokenizer,
                "{arch} (tokenizer: {tokenizer}): {:?}",
                answer.reasons
            );
        }
    }
}

#[test]
fn the_header_only_demo_gguf_is_refused_by_compat_and_worker_alike() {
    let home = Home::new();
    let case = Case {
        path: fixtures().join("models/tiny-llama-chat.gguf"),
        worker: WorkerKind::Llm,
        extra: Vec::new(),
    };
    let (answer, stderr) = check(&home, &case);
    assert!(!answer.compatible);
    assert!(stderr.contains("holds no weights"), "{stderr}");
}

#[test]
fn smollm2_answers_by_a_relative_file_id_as_by_the_absolute_one() {
    let home = Home::new();
    let gguf = smollm2_gguf();
    let entry = add(&home, &gguf);
    let answer = compat(&home, &entry.id.to_string(), WorkerKind::Llm);
    assert!(answer.compatible, "{:?}", answer.reasons);
    // The worker runs in this crate's folder; name the file relative to it, as a user at a prompt would.
    let cwd = std::env::current_dir().unwrap();
    let relative = relative_to(&gguf, &cwd);
    let case = Case {
        path: gguf.clone(),
        worker: WorkerKind::Llm,
        extra: Vec::new(),
    };
    for id in [entry.id.to_string(), format!("file:{relative}")] {
        run_and_agree(&home, &case, &id, &answer);
    }
    let run = home.run(
        Bin::WorkerLlm,
        &[
            "generate",
            "--model",
            &format!("file:{relative}"),
            "--chat",
            // As scripts/demo.sh: without a system message SmolLM2's template adds its own, and the small
            // model then drifts to landmarks of Paris.
            "--system",
            "You are a helpful assistant.",
            "--prompt",
            "What is the capital of France?",
            "--max-tokens",
            "12",
            "--temperature",
            "0",
        ],
        RUN_LIMIT,
    );
    assert!(run.ok().contains("Paris"), "{}", run.stdout);
    // `catalog` reads the relative id as the same entry too.
    let shown = home.catalog_json(&["show", &format!("file:{relative}")]);
    assert_eq!(shown["id"], entry.id.to_string());
}

#[test]
fn every_image_fixture_runs_by_id_exactly_when_compat_says_so() {
    let home = Home::new();
    let sd = fixtures().join("sd");
    let config = |folder: &str| {
        vec![
            "--config-folder".to_string(),
            sd.join(folder).display().to_string(),
        ]
    };
    let cases = [
        (sd.join("tiny-sd15"), Vec::new(), "sd1"),
        (sd.join("tiny-sdxl"), Vec::new(), "sdxl"),
        (sd.join("tiny-flux/dev"), Vec::new(), "flux"),
        // Single files carry no tokenizer: the diffusers folder of the same pipeline describes them.
        (sd.join("tiny-sd15.safetensors"), config("tiny-sd15"), "sd1"),
        (
            sd.join("tiny-flux/schnell.safetensors"),
            config("tiny-flux/dev"),
            "flux",
        ),
    ];
    for (path, extra, base) in cases {
        let case = Case {
            path: path.clone(),
            worker: WorkerKind::Sd,
            extra,
        };
        let (answer, _) = check(&home, &case);
        assert!(answer.compatible, "{}: {:?}", path.display(), answer.reasons);
        let shown = home.catalog_json(&["show", path.to_str().unwrap()]);
        assert_eq!(shown["config"]["base"], base, "{}", path.display());
    }
    // The 9-channel SDXL inpainting single file reads as SDXL inpainting from its tensor names.
    let inpaint = add(&home, &sd.join("tiny-sdxl.safetensors"));
    let value = serde_json::to_value(&inpaint).unwrap();
    assert_eq!(value["config"]["base"], "sdxl");
    assert_eq!(value["config"]["variant"], "inpaint");
}
