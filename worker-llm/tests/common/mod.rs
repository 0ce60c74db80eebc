//! Where the tests find the real GGUF files that `scripts/fetch-models.sh` caches.

#![allow(dead_code)] // each test binary uses the models it needs

use std::path::PathBuf;

/// The cached SmolLM2-135M-Instruct Q4_1 file; panics with the command to run when it is missing.
pub fn smollm2_gguf() -> PathBuf {
    cached("smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The cached Gemma 3 270M Q4_K_M file (SentencePiece vocabulary); panics with the command to run when
/// it is missing.
pub fn gemma3_gguf() -> PathBuf {
    cached("gemma3-270m/gemma-3-270m-q4_k_m.gguf")
}

fn cached(relative: &str) -> PathBuf {
    let cache = std::env::var_os("OMC_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache")
                });
            base.join("open-model-catalog/models")
        });
    let path = cache.join(relative);
    assert!(
        path.is_file(),
        "{} is missing: run `bash scripts/fetch-models.sh` first",
        path.display()
    );
    path
}

/// llama.cpp's view of one position: its highest logits, best first.
#[derive(serde::Deserialize)]
pub struct Step {
    pub top_ids: Vec<u32>,
    pub top_logits: Vec<f32>,
}

/// Feeds `prompt`, then llama.cpp's `greedy` tokens one by one, and checks at every step that our top-5
/// tokens lie in llama.cpp's top-20 (and, with `same_greedy`, that our top token is its greedy token);
/// asserts the largest |logit difference| on llama.cpp's top-10 is at most `tolerance`.
pub fn compare_steps(
    model: &mut dyn worker_llm::CausalLm,
    prompt: &[u32],
    greedy: &[u32],
    steps: &[Step],
    same_greedy: bool,
    tolerance: f32,
) {
    model.reset().unwrap();
    let mut logits = model.forward(prompt, 0).unwrap();
    let mut worst = (0.0f32, 0, 0);
    for (i, step) in steps.iter().enumerate() {
        for (&id, &expected) in step.top_ids.iter().zip(&step.top_logits).take(10) {
            let diff = (logits[id as usize] - expected).abs();
            if diff > worst.0 {
                worst = (diff, i, id);
            }
        }
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        for id in &order[..5] {
            assert!(
                step.top_ids.contains(id),
                "step {i}: our top-5 token {id} is not in llama.cpp's top-20"
            );
        }
        let Some(&token) = greedy.get(i) else {
            break;
        };
        if same_greedy {
            assert_eq!(order[0], token, "step {i}: greedy token");
        }
        logits = model.forward(&[token], prompt.len() + i).unwrap();
    }
    let (diff, step, id) = worst;
    assert!(
        diff <= tolerance,
        "largest |logit diff| {diff} at step {step}, token {id}"
    );
}
