//! Textual-inversion embeddings on the tiny SD 1.5 pipeline against diffusers' `load_textual_inversion`:
//! an `emb_params` file named in the prompt and a `string_to_param.*` file as the negative prompt,
//! recorded by `scripts/reference/sd_embeddings.py` in `tests/fixtures/sd/embeddings/`.

use std::collections::HashMap;
use std::path::PathBuf;

use artifacts_contract::ImageBase;
use candle_core::{Device, Tensor};
use worker_sd::lora::Library;
use worker_sd::pipeline::{ImagePipeline, LoadOptions};
use worker_sd::request::GenerationRequest;
use worker_sd::sd::{Parts, SdPipeline};

use crate::common::assert_close;

/// Text encodings (activations of order 1).
const TOL: f32 = 1e-4;
/// Whole generations, as in `tiny_sd15.rs`.
const GEN_TOL: f32 = 2e-3;

fn dir() -> PathBuf {
    crate::common::dir().join("../embeddings")
}

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir().join("reference.safetensors"), &Device::Cpu).unwrap()
}

/// The tiny pipeline with `folder` as its embeddings folder.
fn pipeline(folder: PathBuf) -> SdPipeline {
    let options = LoadOptions {
        loras: Library::new(None).with_embeddings_dir(Some(folder)),
        ..LoadOptions::cpu("tiny-sd15")
    };
    SdPipeline::new(
        Parts::from_diffusers(&crate::common::dir(), &Device::Cpu).unwrap(),
        &options,
    )
    .unwrap()
}

fn request(prompt: &str, negative: &str) -> GenerationRequest {
    GenerationRequest {
        negative_prompt: negative.into(),
        ..crate::lora::bare(prompt)
    }
}

#[test]
fn embeddings_in_the_prompt_and_negative_prompt_match_diffusers() {
    let (r, p) = (reference(), pipeline(dir()));
    let library = Library::new(None).with_embeddings_dir(Some(dir()));
    let found = library
        .embeddings_in(&["a mystyle red cat", "easyneg"], ImageBase::Sd1)
        .unwrap();
    let mut words: Vec<_> = found.iter().map(|e| e.word.as_str()).collect();
    words.sort();
    assert_eq!(words, ["easyneg", "mystyle"]);
    let cond = p.encode_prompt("a mystyle red cat", &found, 1).unwrap();
    assert_close("prompt with mystyle", &cond, &r["sd15_cond"], TOL);
    let uncond = p.encode_prompt("easyneg", &found, 1).unwrap();
    assert_close("negative prompt easyneg", &uncond, &r["sd15_uncond"], TOL);

    let images =
        worker_sd::pipeline::generate(&p, request("a mystyle red cat", "easyneg"), None, &mut |_, _| {
            Ok(())
        })
        .unwrap();
    crate::common::assert_same_picture(&images[0].image, &r["sd15_image"]);
    // The tensor itself, through the same request.
    let mut valid = request("a mystyle red cat", "easyneg")
        .validate(&p.info().defaults, 2)
        .unwrap();
    valid.embeddings = found;
    let mut noise = worker_sd::noise::Noise::new(worker_sd::rng::RngKind::TorchCpu, 0);
    let image = p.generate_one(&valid, 0, &mut noise, &mut |_| Ok(())).unwrap();
    assert_close("image", &image.unsqueeze(0).unwrap(), &r["sd15_image"], GEN_TOL);

    let params = &images[0].parameters;
    let hash = worker_sd::lora::file_sha256(&dir().join("mystyle.safetensors")).unwrap();
    assert!(params.contains("TI hashes: \""), "{params}");
    assert!(params.contains(&format!("mystyle: {}", &hash[..12])), "{params}");
}

#[test]
fn a_prompt_without_embeddings_is_encoded_as_before_and_unknown_words_pass() {
    let p = pipeline(dir());
    let plain = crate::common::pipeline();
    let library = Library::new(None).with_embeddings_dir(Some(dir()));
    let found = library
        .embeddings_in(&["a red cat, mystylex"], ImageBase::Sd1)
        .unwrap();
    assert!(found.is_empty());
    let a = p.encode_prompt("a red cat", &[], 1).unwrap();
    let b = plain.encode_prompt("a red cat", &found, 1).unwrap();
    assert_eq!(crate::common::max_diff(&a, &b), 0.0);
}

#[test]
fn explicit_names_must_resolve_and_pickles_and_wrong_bases_are_refused() {
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("bad.pt"), b"not read").unwrap();
    let wide = HashMap::from([(
        "emb_params".to_string(),
        Tensor::zeros((2, 768), candle_core::DType::F32, &Device::Cpu).unwrap(),
    )]);
    candle_core::safetensors::save(&wide, folder.path().join("sd15wide.safetensors")).unwrap();
    let p = pipeline(folder.path().to_path_buf());
    let err = |prompt: &str, negative: &str| {
        worker_sd::pipeline::generate(&p, request(prompt, negative), None, &mut |_, _| Ok(()))
            .err()
            .expect("refused")
    };
    let e = err("a cat embedding:nothing", "");
    assert!(
        e.is_bad_request() && e.to_string().contains("no embedding nothing"),
        "{e}"
    );
    let e = err("a cat", "bad");
    assert!(e.to_string().contains("pickle"), "{e}");
    // A 768-wide embedding is SD 1.x's: the tiny 16-wide encoder refuses it by shape.
    let e = err("a sd15wide cat", "");
    assert!(
        e.is_bad_request() && e.to_string().contains("[2, 768]") && e.to_string().contains("16 wide"),
        "{e}"
    );
    let library = Library::new(None).with_embeddings_dir(Some(dir()));
    let e = library.embeddings_in(&["xlstyle"], ImageBase::Sd1).unwrap_err();
    assert!(
        e.to_string().contains("sdxl") && e.to_string().contains("sd1"),
        "{e}"
    );
}

/// The command line end to end: a single-file checkpoint, `--embeddings`, `--lora`, `--rng torch-cpu`; the
/// PNG names every resource as AUTOMATIC1111 writes it (`Model hash` before `Model`, `RNG`, `TI hashes`,
/// `Lora hashes`), so CivitAI recognizes them.
#[test]
fn the_cli_png_names_the_model_rng_embeddings_and_loras_with_their_hashes() {
    let out = tempfile::tempdir().unwrap();
    let checkpoint = crate::common::dir().join("../tiny-sd15.safetensors");
    let lora = crate::common::dir().join("../lora/kohya.safetensors");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_worker-sd"))
        .args(["generate", "--model-path"])
        .arg(&checkpoint)
        .arg("--config-folder")
        .arg(crate::common::dir())
        .arg("--embeddings")
        .arg(dir())
        .args(["--prompt", "a mystyle red cat", "--negative-prompt", "easyneg"])
        .args(["--width", "64", "--height", "64", "--steps", "2", "--seed", "7"])
        .args(["--rng", "torch-cpu", "--lora"])
        .arg(format!("{}:0.5", lora.display()))
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let png = std::fs::read(out.path().join("7.png")).unwrap();
    let params = worker_sd::output::read_parameters(&png).unwrap();
    let model_hash = worker_sd::lora::file_sha256(&checkpoint).unwrap();
    let lora_hash = worker_sd::lora::addnet_hash(&lora).unwrap();
    let ti_hash = worker_sd::lora::file_sha256(&dir().join("easyneg.safetensors")).unwrap();
    for part in [
        format!("Model hash: {}, Model: tiny-sd15", &model_hash[..10]),
        "RNG: CPU".to_string(),
        format!("easyneg: {}", &ti_hash[..12]),
        format!("Lora hashes: \"kohya: {}\"", &lora_hash[..12]),
        " <lora:kohya:0.5>\n".to_string(),
        "\nNegative prompt: easyneg\n".to_string(),
    ] {
        assert!(params.contains(&part), "{part} missing from: {params}");
    }
}

/// A catalog entry of the given type and base holding `file` (copied into its folder).
fn entry(
    id: &str,
    name: &str,
    kind: artifacts_contract::CheckpointType,
    status: artifacts_contract::ArtifactStatus,
    folder: &std::path::Path,
) -> artifacts_contract::ModelEntry {
    use artifacts_contract::{FileRole, ImageConfig, ModelEntry, ModelFile, ModelSource, TypedConfig};
    std::fs::create_dir_all(folder).unwrap();
    std::fs::copy(dir().join("easyneg.safetensors"), folder.join("emb.safetensors")).unwrap();
    let now = "2026-01-01T00:00:00Z".parse().unwrap();
    ModelEntry {
        id: id.parse().unwrap(),
        name: name.into(),
        author: None,
        source: ModelSource::CivitAi,
        source_url: None,
        revision: None,
        path: Some(folder.display().to_string()),
        size: 280,
        files: vec![ModelFile {
            path: "emb.safetensors".into(),
            size: None,
            sha256: None,
            role: FileRole::Weights,
            url: None,
        }],
        status,
        added_at: now,
        updated_at: now,
        config: TypedConfig::Image(ImageConfig {
            checkpoint_type: kind,
            ..ImageConfig::new(ImageBase::Sd1)
        }),
    }
}

#[test]
fn catalog_embeddings_are_found_by_name_or_id_and_other_entries_are_left_alone() {
    use artifacts_contract::{ArtifactStatus, CheckpointType};
    let home = tempfile::tempdir().unwrap();
    let catalog = catalog::Catalog::open(home.path()).unwrap();
    let files = home.path().join("files");
    for e in [
        entry(
            "civitai:7808",
            "EasyNegative",
            CheckpointType::Embedding,
            ArtifactStatus::Available,
            &files.join("a"),
        ),
        entry(
            "civitai:9",
            "red",
            CheckpointType::Lora,
            ArtifactStatus::Available,
            &files.join("b"),
        ),
        entry(
            "civitai:10",
            "later",
            CheckpointType::Embedding,
            ArtifactStatus::NotDownloaded,
            &files.join("c"),
        ),
    ] {
        catalog.upsert(&e).unwrap();
    }
    let library = Library::new(Some(home.path().to_path_buf()));
    let found = library
        .embeddings_in(&["a red cat", "easynegative, civitai:7808"], ImageBase::Sd1)
        .unwrap();
    let mut words: Vec<_> = found.iter().map(|e| e.word.as_str()).collect();
    words.sort();
    // "red" names a LoRA entry: a word of the prompt, not an embedding.
    assert_eq!(words, ["civitai:7808", "easynegative"]);
    let e = library
        .embeddings_in(&["embedding:later"], ImageBase::Sd1)
        .unwrap_err();
    assert!(e.to_string().contains("catalog pull civitai:10"), "{e}");
    let e = library
        .embeddings_in(&["embedding:red"], ImageBase::Sd1)
        .unwrap_err();
    assert!(e.to_string().contains("red is a lora, not a embedding"), "{e}");
    let e = library
        .embeddings_in(&["easynegative"], ImageBase::Sdxl)
        .unwrap_err();
    assert!(
        e.to_string().contains("sd1") && e.to_string().contains("sdxl"),
        "{e}"
    );
}
