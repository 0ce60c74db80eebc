//! Every GGUF architecture the CPU decoder reads, against llama.cpp on the same file: the tiny random
//! GGUFs of tests/fixtures/llm/gguf/ (llama untied, qwen2 with attention biases, qwen3 and gemma3 with
//! QK-norm and tied embeddings, phi3 with fused qkv and gate/up (and again with LongRoPE factors and an
//! original context shorter than the file's), gemma3 with post-norms and a sliding
//! window shorter than the prompt; Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K, F16 and F32 tensors), written by
//! `cargo run -p worker-llm --example tiny_gguf`. Reference: tests/fixtures/llm/gguf/llamacpp.json, made by
//! scripts/reference/llm_tiny_gguf_llamacpp.py: the whole logit row of an 8-token prompt's last position
//! and of three greedy decode steps.
//!
//! Tolerance: both sides quantize activations to 8 bits for the quantized products and round queries and
//! attention weights to f16 against the f16 cache, so llama, qwen2, qwen3 and phi3 agree to 1e-4 of the
//! row's largest logit (measured); gemma3's GELU is a table of f16 values in ggml (7e-4 measured). We
//! allow 2e-3 (TOLERANCE), and require the same greedy token at every step.
//!
//! The same files also run on Candle's ops (`Kernels::Candle`, the path GPUs take), whose quantized
//! products round the activations' block sums twice and whose attention stays in f32: 1.7-8.4% of the
//! largest logit from llama.cpp measured on these random weights (phi3's logits are small), so
//! CANDLE_TOLERANCE is 0.1; where llama.cpp's two best tokens are closer than that, ours must be one of
//! them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::{DType, Device};
use sha2::Digest;
use worker_llm::models::Kernels;
use worker_llm::{Engine, ModelFiles};

const TOLERANCE: f32 = 2e-3;
const CANDLE_TOLERANCE: f32 = 0.1;

#[derive(serde::Deserialize)]
struct Model {
    sha256: String,
    greedy_tokens: Vec<u32>,
    logits: Vec<Vec<f32>>,
}

#[derive(serde::Deserialize)]
struct Reference {
    prompt: Vec<u32>,
    models: BTreeMap<String, Model>,
}

fn dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/llm/gguf"))
}

fn reference() -> Reference {
    let text = std::fs::read_to_string(dir().join("llamacpp.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn argmax(row: &[f32]) -> u32 {
    (0..row.len()).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap() as u32
}

/// The largest |ours - llama.cpp| over the row, as a fraction of the row's largest |logit|.
fn relative_error(ours: &[f32], theirs: &[f32]) -> f32 {
    assert_eq!(ours.len(), theirs.len(), "vocabulary sizes differ");
    let worst = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    let size = theirs.iter().map(|x| x.abs()).fold(0.0, f32::max);
    assert!(size > 0.1, "llama.cpp's logits are all near zero");
    worst / size
}

fn check(arch: &str, r: &Reference) {
    let expected = &r.models[arch];
    let path = dir().join(format!("{arch}.gguf"));
    let sha = format!("{:x}", sha2::Sha256::digest(std::fs::read(&path).unwrap()));
    assert_eq!(
        sha, expected.sha256,
        "{arch}.gguf is not the file llama.cpp ran: rerun scripts/reference/llm_tiny_gguf_llamacpp.py"
    );
    for (kernels, tolerance) in [(Kernels::Auto, TOLERANCE), (Kernels::Candle, CANDLE_TOLERANCE)] {
        let files = ModelFiles::discover(&path).unwrap();
        let mut engine = Engine::load_with(&files, &Device::Cpu, DType::F32, kernels).unwrap();
        steps(arch, expected, r, engine.model_mut(), kernels, tolerance);
    }
}

fn steps(
    arch: &str,
    expected: &Model,
    r: &Reference,
    model: &mut dyn worker_llm::CausalLm,
    kernels: Kernels,
    tolerance: f32,
) {
    let mut logits = model.forward(&r.prompt, 0).unwrap();
    for (step, theirs) in expected.logits.iter().enumerate() {
        let error = relative_error(&logits, theirs);
        eprintln!("{arch} {kernels:?} step {step}: {error}");
        assert!(
            error <= tolerance,
            "{arch} on {kernels:?}, step {step}: differs from llama.cpp by {error} of the largest logit"
        );
        let Some(&token) = expected.greedy_tokens.get(step) else {
            break;
        };
        let size = theirs.iter().map(|x| x.abs()).fold(0.0, f32::max);
        let mut sorted = theirs.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        if sorted[0] - sorted[1] > 2.0 * tolerance * size {
            assert_eq!(
                argmax(&logits),
                token,
                "{arch} on {kernels:?}, step {step}: greedy token"
            );
        } else {
            let ours = logits[argmax(&logits) as usize];
            assert!(
                ours >= sorted[1] - tolerance * size,
                "{arch} on {kernels:?}, step {step}: our greedy token is not one of llama.cpp's closest two"
            );
            assert!(
                (ours - logits[token as usize]).abs() <= 2.0 * tolerance * size,
                "{arch} on {kernels:?}, step {step}: llama.cpp's greedy token is far below ours"
            );
        }
        logits = model.forward(&[token], r.prompt.len() + step).unwrap();
    }
}

#[test]
fn llama_untied_with_mixed_ggml_types_matches_llama_cpp() {
    check("llama", &reference());
}

#[test]
fn qwen2_with_attention_biases_matches_llama_cpp() {
    check("qwen2", &reference());
}

#[test]
fn qwen3_with_qk_norm_matches_llama_cpp() {
    check("qwen3", &reference());
}

#[test]
fn phi3_with_fused_projections_matches_llama_cpp() {
    check("phi3", &reference());
}

#[test]
fn phi3_with_longrope_factors_matches_llama_cpp() {
    check("phi3_longrope", &reference());
}

#[test]
fn gemma3_with_post_norms_and_a_sliding_window_matches_llama_cpp() {
    check("gemma3", &reference());
}

#[test]
fn the_reference_covers_every_fixture_file() {
    let r = reference();
    let files: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".gguf").map(str::to_string)
        })
        .collect();
    for arch in &files {
        assert!(
            r.models.contains_key(arch),
            "{arch}.gguf has no llama.cpp reference"
        );
    }
    assert_eq!(files.len(), r.models.len());
}
