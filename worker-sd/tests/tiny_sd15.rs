//! candle-transformers' CLIP text encoder and VAE against diffusers on the tiny random SD 1.5-shaped pipeline
//! of `tests/fixtures/sd/tiny-sd15/` (built and recorded by `scripts/reference/sd_tiny_pipeline.py`).
//!
//! Tolerance: 1e-4 absolute on activations of order 1 (float32 on CPU on both sides; the observed
//! difference is printed by each test).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::clip::text_model::{Activation, ClipTextConfig, ClipTextTransformer};
use candle_transformers::models::stable_diffusion::vae::{AutoEncoderKL, AutoEncoderKLConfig};
use std::collections::HashMap;
use std::path::PathBuf;

const TOL: f32 = 1e-4;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sd/tiny-sd15")
}

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir().join("reference.safetensors"), &Device::Cpu).unwrap()
}

fn weights(file: &str) -> VarBuilder<'static> {
    // SAFETY: the fixture files are not modified while the test runs.
    unsafe { VarBuilder::from_mmaped_safetensors(&[dir().join(file)], DType::F32, &Device::Cpu).unwrap() }
}

/// The largest absolute difference, after checking the shapes agree.
fn max_diff(actual: &Tensor, expected: &Tensor) -> f32 {
    assert_eq!(actual.dims(), expected.dims());
    (actual - expected)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn text_encoder() -> ClipTextTransformer {
    let config = ClipTextConfig {
        vocab_size: 100,
        embed_dim: 16,
        activation: Activation::QuickGelu,
        intermediate_size: 24,
        max_position_embeddings: 16,
        pad_with: None,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        projection_dim: 16,
    };
    // transformers 5 saves CLIPTextModel without the `text_model.` prefix.
    ClipTextTransformer::new(weights("text_encoder/model.safetensors"), &config).unwrap()
}

fn vae() -> AutoEncoderKL {
    let config = AutoEncoderKLConfig {
        block_out_channels: vec![8, 16],
        layers_per_block: 1,
        latent_channels: 4,
        norm_num_groups: 4,
        use_quant_conv: true,
        use_post_quant_conv: true,
    };
    AutoEncoderKL::new(weights("vae/diffusion_pytorch_model.safetensors"), 3, 3, config).unwrap()
}

#[test]
fn text_encoder_matches_diffusers() {
    let r = reference();
    let hidden = text_encoder()
        .forward_with_mask(&r["tokens"], usize::MAX)
        .unwrap();
    let diff = max_diff(&hidden, &r["text_hidden"]);
    println!("text encoder max |diff| = {diff:e}");
    assert!(diff < TOL, "text encoder differs by {diff}");
}

#[test]
fn vae_decode_matches_diffusers() {
    let r = reference();
    let image = vae().decode(&r["vae_latents"]).unwrap();
    let diff = max_diff(&image, &r["vae_decoded"]);
    println!("VAE decode max |diff| = {diff:e}");
    assert!(diff < TOL, "VAE decode differs by {diff}");
}
