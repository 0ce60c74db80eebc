//! Flux LoRAs in kohya's, the original (BFL/ComfyUI) and diffusers/ai-toolkit layouts against diffusers'
//! `load_lora_weights` path on the tiny FLUX.1-dev transformer: one transformer call on `sd_flux.py`'s
//! `dev_*` inputs, recorded by `scripts/reference/sd_lora_flux.py`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use artifacts_contract::ImageBase;
use candle_core::{Device, Tensor};
use worker_sd::flux::{FluxImagePipeline, FluxTransformer};
use worker_sd::lora::{ActiveLora, Library};
use worker_sd::pipeline::{ImagePipeline, LoadOptions, ModelSource};

use super::{fixtures, reference};
use crate::max_diff;

/// Outputs reach 17 here (8 without the LoRA); diffusers' own second run of the plain transformer differs
/// from `sd_flux.py`'s recording by 1e-4, so the bound is relative to that scale: 3e-5 of the largest value.
const TOL: f32 = 5e-4;

fn lora_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sd/lora")
}

fn forward(model: &FluxTransformer, r: &HashMap<String, Tensor>) -> Tensor {
    super::transformer_out(model, "dev", r)
}

#[test]
fn flux_loras_in_every_layout_match_diffusers() {
    let (inputs, pipe) = (reference(), dev());
    let expected =
        candle_core::safetensors::load(lora_dir().join("flux-reference.safetensors"), &Device::Cpu).unwrap();
    let library = Library::new(None);
    let (plain, reports) = pipe.transformer_for(&[]).unwrap();
    assert!(reports.is_empty());
    let diff = max_diff(&forward(&plain, &inputs), &expected["plain_out"]);
    println!("Flux without LoRA: max |diff| = {diff:e}");
    assert!(diff < TOL);
    for name in ["flux-kohya", "flux-bfl", "flux-diffusers"] {
        let file = library
            .resolve(
                &lora_dir()
                    .join(format!("{name}.safetensors"))
                    .display()
                    .to_string(),
                ImageBase::Flux,
            )
            .unwrap();
        assert_eq!(file.base, ImageBase::Flux, "{name}");
        let loras = [ActiveLora { file, weight: 0.8 }];
        assert_eq!(
            pipe.check_loras(&loras).unwrap(),
            pipe.prepare_loras(&loras).unwrap()
        );
        let (adapted, reports) = pipe.transformer_for(&loras).unwrap();
        assert_eq!(reports[0].applied, reports[0].total, "{name}: {reports:?}");
        let diff = max_diff(&forward(&adapted, &inputs), &expected["lora_out"]);
        println!("Flux LoRA {name} x0.8: max |diff| = {diff:e}");
        assert!(diff < TOL, "{name} differs from diffusers by {diff}");
    }
    // The plain transformer is never touched: a request without LoRAs gets it back.
    let (again, _) = pipe.transformer_for(&[]).unwrap();
    assert!(Arc::ptr_eq(&plain, &again));
    assert_eq!(
        max_diff(&forward(&again, &inputs), &forward(&plain, &inputs)),
        0.0
    );
}

fn dev() -> FluxImagePipeline {
    FluxImagePipeline::load(
        &ModelSource::Diffusers(fixtures().join("dev")),
        &LoadOptions::cpu("tiny-flux"),
    )
    .unwrap()
}
