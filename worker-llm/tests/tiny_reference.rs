//! Every safetensors architecture against transformers: tiny random models made by
//! `scripts/reference/llm_fixtures.py`, their float32 reference logits for a prompt and greedy decode
//! steps committed beside them, run on both backends of the decoder (the CPU blocks, and Candle's ops
//! that GPUs run). The weights are float32 on both sides, but the decoder's KV cache is f16 (as
//! llama.cpp's): that costs up to about 6e-3 on the Gemmas (their embedding is scaled by sqrt(width)),
//! 3e-4 elsewhere (measured). Tolerance, absolute on every logit: 1e-2 for the Gemmas, 2e-3 for the
//! rest, tight enough that YaRN without its attention factor (9.5e-3 off) or LongRoPE with the short
//! factors (1.9e-2) fails.

use std::path::PathBuf;

use candle_core::{DType, Device};
use worker_llm::models::Kernels;
use worker_llm::{ModelFiles, ModelMeta, models};

/// The largest |ours - transformers| allowed on any logit of `name`'s fixture.
fn tolerance(name: &str) -> f32 {
    match name.starts_with("gemma") {
        true => 1e-2,
        false => 2e-3,
    }
}

#[derive(serde::Deserialize)]
struct Reference {
    prompt: Vec<u32>,
    greedy_tokens: Vec<u32>,
    logits: Vec<Vec<f32>>,
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/llm/tiny")
        .join(name)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "vocab sizes differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn check(name: &str) {
    check_on(name, Kernels::Auto);
    check_on(name, Kernels::Candle);
}

fn check_on(name: &str, kernels: Kernels) {
    let dir = fixture(name);
    let reference: Reference =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    let files = ModelFiles::discover(&dir).unwrap();
    let meta = ModelMeta::from_configs(&files).unwrap();
    assert_eq!(meta.vocab_size, reference.logits[0].len());
    let mut model = models::load_with(&files, meta, &Device::Cpu, DType::F32, kernels)
        .unwrap()
        .into_serial();

    for round in 0..2 {
        // The second round runs after a reset: it must see an empty cache, not the first round's.
        let mut logits = model.forward(&reference.prompt, 0).unwrap();
        let mut position = reference.prompt.len();
        for (step, expected) in reference.logits.iter().enumerate() {
            let diff = max_diff(&logits, expected);
            assert!(
                diff <= tolerance(name),
                "{name} on {kernels:?}, round {round} step {step}: max |diff| {diff}"
            );
            if let Some(&token) = reference.greedy_tokens.get(step) {
                assert_eq!(
                    worker_llm::sampler::argmax(&logits),
                    token,
                    "{name} step {step}: greedy token"
                );
                logits = model.forward(&[token], position).unwrap();
                position += 1;
            }
        }
        model.reset().unwrap();
    }
}

#[test]
fn llama_matches_transformers() {
    check("llama");
}

#[test]
fn mistral_matches_transformers() {
    check("mistral");
}

#[test]
fn phi_matches_transformers() {
    check("phi");
}

#[test]
fn phi3_matches_transformers() {
    check("phi3");
}

#[test]
fn qwen2_matches_transformers() {
    check("qwen2");
}

#[test]
fn qwen3_matches_transformers() {
    check("qwen3");
}

#[test]
fn gemma_matches_transformers() {
    check("gemma");
}

#[test]
fn gemma2_matches_transformers() {
    check("gemma2");
}

#[test]
fn gemma3_matches_transformers() {
    check("gemma3");
}

#[test]
fn phi3_with_longrope_matches_transformers() {
    check("phi3_longrope");
}

#[test]
fn qwen2_with_yarn_matches_transformers() {
    check("qwen2_yarn");
}
