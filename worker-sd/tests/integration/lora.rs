//! LoRAs in each layout against diffusers' `load_lora_weights` (and LyCORIS' differences merged into
//! diffusers' UNet), on the tiny SD 1.5 pipeline; fixtures from `scripts/reference/sd_lora.py` in
//! `tests/fixtures/sd/lora/`.

use std::collections::HashMap;
use std::path::PathBuf;

use artifacts_contract::ImageBase;
use candle_core::{Device, Tensor};
use worker_sd::lora::{ActiveLora, Library};
use worker_sd::noise::Noise;
use worker_sd::pipeline::ImagePipeline;
use worker_sd::request::GenerationRequest;
use worker_sd::rng::RngKind;
use worker_sd::sd::SdPipeline;

use crate::common::{assert_close, pipeline, request};

/// Whole generations, as in `tiny_sd15.rs`.
const GEN_TOL: f32 = 2e-3;

fn dir() -> PathBuf {
    crate::common::dir().join("../lora")
}

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir().join("reference.safetensors"), &Device::Cpu).unwrap()
}

fn file(name: &str) -> String {
    dir().join(name).display().to_string()
}

/// The reference generation (torch CPU noise from seed 0) with `loras` merged.
fn generate(p: &SdPipeline, loras: &[(&str, f64)]) -> Tensor {
    let library = Library::new(None);
    let mut req = request(|r| r.rng = Some("torch-cpu".into()));
    req.loras = loras
        .iter()
        .map(|(name, weight)| ActiveLora {
            file: library.resolve(&file(name), ImageBase::Sd1).unwrap(),
            weight: *weight,
        })
        .collect();
    let mut noise = Noise::new(RngKind::TorchCpu, 0);
    p.generate_one(&req, 0, &mut noise, &mut |_| Ok(()))
        .unwrap()
        .unsqueeze(0)
        .unwrap()
}

#[test]
fn peft_and_kohya_loras_match_diffusers_load_lora_weights() {
    let (r, p) = (reference(), pipeline());
    assert_close("no LoRA", &generate(&p, &[]), &r["plain_image"], GEN_TOL);
    assert_close(
        "PEFT x0.8",
        &generate(&p, &[("peft.safetensors", 0.8)]),
        &r["peft_image"],
        GEN_TOL,
    );
    assert_close(
        "kohya x0.8",
        &generate(&p, &[("kohya.safetensors", 0.8)]),
        &r["peft_image"],
        GEN_TOL,
    );
    assert_close(
        "PEFT x0.8 + LoCon x0.5",
        &generate(&p, &[("peft.safetensors", 0.8), ("locon.safetensors", 0.5)]),
        &r["pair_image"],
        GEN_TOL,
    );
}

#[test]
fn lycoris_loha_and_lokr_match_their_merged_differences() {
    let (r, p) = (reference(), pipeline());
    assert_close(
        "LoHa x1",
        &generate(&p, &[("loha.safetensors", 1.0)]),
        &r["loha_image"],
        GEN_TOL,
    );
    assert_close(
        "LoKr x0.7",
        &generate(&p, &[("lokr.safetensors", 0.7)]),
        &r["lokr_image"],
        GEN_TOL,
    );
}

#[test]
fn removing_a_lora_gives_the_plain_model_back_exactly() {
    let p = pipeline();
    let before = generate(&p, &[]);
    let with = generate(&p, &[("kohya.safetensors", 0.8)]);
    let after = generate(&p, &[]);
    assert_eq!(
        before.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        after.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
    assert!(crate::common::max_diff(&before, &with) > 0.05);
}

/// The reference generation's settings (4 Euler steps, CFG 7.5, 64x64, torch CPU noise from seed 0).
pub fn bare(prompt: &str) -> GenerationRequest {
    GenerationRequest {
        prompt: prompt.into(),
        seed: Some(0),
        steps: Some(4),
        cfg_scale: Some(7.5),
        width: Some(64),
        height: Some(64),
        rng: Some("torch-cpu".into()),
        ..Default::default()
    }
}

#[test]
fn prompt_tags_apply_loras_and_the_png_names_them_with_hashes() {
    let (r, p) = (reference(), pipeline());
    let prompt = format!("a red cat <lora:{}:0.8>", file("peft.safetensors"));
    let images = worker_sd::pipeline::generate(&p, bare(&prompt), None, &mut |_, _| Ok(())).unwrap();
    crate::common::assert_same_picture(&images[0].image, &r["peft_image"]);
    let report = &images[0].loras[0];
    assert_eq!((report.applied, report.total), (88, 88), "{report:?}");
    let params = &images[0].parameters;
    let hash = worker_sd::lora::addnet_hash(&dir().join("peft.safetensors")).unwrap();
    assert!(params.starts_with("a red cat <lora:"), "{params}");
    assert!(params.contains(&format!(": {}\"", &hash[..12])), "{params}");
    assert!(params.contains("Lora hashes: \""), "{params}");
}

fn write(name: &str, keys: &[&str]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = HashMap::new();
    for key in keys {
        let t = if key.ends_with("alpha") {
            Tensor::new(2f32, &Device::Cpu).unwrap()
        } else if key.ends_with("lora_down.weight") {
            Tensor::ones((4, 32), candle_core::DType::F32, &Device::Cpu).unwrap()
        } else {
            Tensor::ones((32, 4), candle_core::DType::F32, &Device::Cpu).unwrap()
        };
        tensors.insert(key.to_string(), t);
    }
    let path = dir.path().join(name);
    candle_core::safetensors::save(&tensors, &path).unwrap();
    (dir, path.display().to_string())
}

#[test]
fn a_lora_that_matches_nothing_is_an_error_naming_its_keys() {
    let p = pipeline();
    let (_dir, path) = write(
        "nothing.safetensors",
        &[
            "lora_unet_no_such_block_to_q.lora_down.weight",
            "lora_unet_no_such_block_to_q.lora_up.weight",
        ],
    );
    let err = worker_sd::pipeline::generate(&p, bare(&format!("<lora:{path}:1>")), None, &mut |_, _| Ok(()))
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(
        text.contains("matches nothing") && text.contains("lora_unet_no_such_block_to_q"),
        "{text}"
    );
}

#[test]
fn a_partial_match_is_a_warning_with_counts() {
    let p = pipeline();
    let module = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
    let (_dir, path) = write(
        "partial.safetensors",
        &[
            &format!("{module}.lora_down.weight"),
            &format!("{module}.lora_up.weight"),
            &format!("{module}.alpha"),
            "lora_unet_elsewhere_to_q.lora_down.weight",
            "lora_unet_elsewhere_to_q.lora_up.weight",
        ],
    );
    let mut req = bare("a red cat");
    req.loras = vec![worker_sd::lora::LoraSpec {
        model: path,
        weight: 0.5,
    }];
    let images = worker_sd::pipeline::generate(&p, req, None, &mut |_, _| Ok(())).unwrap();
    let report = &images[0].loras[0];
    assert_eq!((report.applied, report.total), (3, 5));
    let warning = report.warning().unwrap();
    assert!(
        warning.contains("3 of its 5") && warning.contains("lora_unet_elsewhere_to_q"),
        "{warning}"
    );
}

#[test]
fn an_sdxl_lora_is_refused_on_sd15_and_pickles_are_refused() {
    let (_dir, path) = write(
        "xl.safetensors",
        &[
            "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight",
            "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight",
        ],
    );
    let library = Library::new(None);
    let err = library.resolve(&path, ImageBase::Sd1).unwrap_err().to_string();
    assert!(err.contains("sdxl") && err.contains("sd1"), "{err}");
    let err = library
        .resolve("/tmp/some.ckpt", ImageBase::Sd1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("pickle"), "{err}");
}

/// A LoRA whose `lora_down` has rank 8 but whose `lora_up` has rank 4, on a 32x32 projection.
pub fn misshapen() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let module = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
    let f32 = candle_core::DType::F32;
    let tensors = HashMap::from([
        (
            format!("{module}.lora_down.weight"),
            Tensor::ones((8, 32), f32, &Device::Cpu).unwrap(),
        ),
        (
            format!("{module}.lora_up.weight"),
            Tensor::ones((32, 4), f32, &Device::Cpu).unwrap(),
        ),
    ]);
    let path = dir.path().join("misshapen.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    (dir, path.display().to_string())
}

#[test]
fn a_lora_of_the_wrong_shape_is_a_client_error_naming_the_key_and_shapes() {
    let p = pipeline();
    let (_dir, path) = misshapen();
    let err = worker_sd::pipeline::generate(&p, bare(&format!("<lora:{path}:1>")), None, &mut |_, _| Ok(()))
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(err.is_bad_request(), "{text}");
    for part in ["attn1_to_q", "down [8, 32]", "up [32, 4]", "[32, 32]"] {
        assert!(text.contains(part), "{part} missing from: {text}");
    }
    // Checked before anything runs, from the shapes alone.
    let mut req = bare("a red cat");
    req.loras = vec![worker_sd::lora::LoraSpec {
        model: path.clone(),
        weight: 1.0,
    }];
    let err = worker_sd::pipeline::prepare(&p, req).unwrap_err();
    assert!(
        err.is_bad_request() && err.to_string().contains("attn1_to_q"),
        "{err}"
    );
    // The command line says the same and exits with an error, without a panic or a backtrace.
    let out = tempfile::tempdir().unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_worker-sd"))
        .args(["generate", "--model-path"])
        .arg(crate::common::dir())
        .args([
            "--prompt",
            "a red cat",
            "--width",
            "64",
            "--height",
            "64",
            "--steps",
            "1",
        ])
        .args(["--lora", &path, "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("error: invalid loras") && stderr.contains("down [8, 32]"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line, no backtrace: {stderr}");
}

/// Resident memory of this process, from `/proc/self/status` (0 where there is none).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// What applying and removing a LoRA costs at full size, on the random SD 1.5-sized pipeline and rank-16
/// LoRA of `scripts/reference/sd_lora_cost_model.py` (folder in `OMC_LORA_COST_MODEL`):
/// `OMC_LORA_COST_MODEL=/tmp/sd15-random cargo test -p worker-sd --test integration lora_cost -- --ignored --nocapture`
#[test]
#[ignore = "needs the 2 GB model of scripts/reference/sd_lora_cost_model.py"]
fn lora_cost() {
    let folder = PathBuf::from(std::env::var("OMC_LORA_COST_MODEL").expect("OMC_LORA_COST_MODEL"));
    let before = rss_bytes();
    let p = SdPipeline::new(
        worker_sd::sd::Parts::from_diffusers(&folder, &Device::Cpu).unwrap(),
        &worker_sd::pipeline::LoadOptions::cpu("sd15-random"),
    )
    .unwrap();
    let loaded = rss_bytes();
    let library = Library::new(None);
    let file = library
        .resolve(
            &folder.join("lora-rank16.safetensors").display().to_string(),
            ImageBase::Sd1,
        )
        .unwrap();
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    println!(
        "pipeline loaded: {:.2} GiB resident (+{:.2} GiB)",
        gib(loaded),
        gib(loaded.saturating_sub(before))
    );
    let (plain, _) = p.models_for(&[]).unwrap();
    for round in 0..3 {
        for weight in [0.8, 0.5] {
            let loras = [ActiveLora {
                file: file.clone(),
                weight,
            }];
            let rss = rss_bytes();
            let t = std::time::Instant::now();
            let (_, reports) = p.models_for(&loras).unwrap();
            let merge = t.elapsed();
            let after = rss_bytes();
            assert_eq!(reports[0].applied, reports[0].total);
            let t = std::time::Instant::now();
            p.models_for(&loras).unwrap();
            let cached = t.elapsed();
            let t = std::time::Instant::now();
            let (back, _) = p.models_for(&[]).unwrap();
            let removed = t.elapsed();
            assert!(std::sync::Arc::ptr_eq(&plain, &back));
            assert!(cached < merge, "a repeated set is not merged again");
            println!(
                "round {round} x{weight}: apply {:.0} ms ({} tensors), again {:.1} ms, remove {:.3} ms; \
                 resident {:.2} GiB ({:+.2} GiB across the apply)",
                merge.as_secs_f64() * 1e3,
                reports[0].total,
                cached.as_secs_f64() * 1e3,
                removed.as_secs_f64() * 1e3,
                gib(after),
                (after as f64 - rss as f64) / (1u64 << 30) as f64
            );
        }
    }
}
