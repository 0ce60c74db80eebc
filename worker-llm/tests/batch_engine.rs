//! The batching engine on the real SmolLM2-135M-Instruct Q4_1: sequences run together give each the
//! greedy text it gets alone; a shared prefix found in the cache changes nothing in the output; a cache
//! too small for everyone makes sequences wait (or be recomputed) without changing their output; a
//! cancelled sequence gives its blocks back. The first holds on Candle's ops too (the path GPUs take).

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use candle_core::Device;
use tokio_util::sync::CancellationToken;
use worker_llm::batch::engine::{
    BatchEngine, EngineConfig, EngineStats, Request, SeqEvent, generate_blocking,
};
use worker_llm::batch::kv_cache::{BLOCK_TOKENS, bytes_per_token};
use worker_llm::models::Kernels;
use worker_llm::{Engine, FinishReason, GenerationParams, ModelFiles, Prompt};

const SYSTEM: &str = "You are a helpful assistant who answers in one short sentence, \
    with no preamble, no lists and no follow-up questions. ";
const QUESTIONS: [&str; 4] = [
    "What is the capital of France?",
    "Name a primary colour.",
    "How many legs does a spider have? Answer with a number and explain nothing else at all.",
    "Who wrote Hamlet?",
];

fn greedy(max_tokens: u32) -> GenerationParams {
    GenerationParams {
        temperature: Some(0.0),
        max_tokens: Some(max_tokens),
        ignore_eos: true,
        ..Default::default()
    }
}

/// The single-sequence engine, and the prompts tokenized with it.
fn reference() -> &'static (std::sync::Mutex<Engine>, Vec<Vec<u32>>) {
    static REF: OnceLock<(std::sync::Mutex<Engine>, Vec<Vec<u32>>)> = OnceLock::new();
    REF.get_or_init(|| {
        let engine = Engine::load_path(&common::smollm2_gguf(), &Device::Cpu).unwrap();
        let prompts = QUESTIONS
            .iter()
            .map(|q| engine.tokenize(&Prompt::Text(format!("{SYSTEM}{q}"))).unwrap())
            .collect();
        (std::sync::Mutex::new(engine), prompts)
    })
}

fn alone(prompt: &[u32], max_tokens: u32) -> Vec<u32> {
    let mut engine = reference().0.lock().unwrap();
    engine
        .generate_tokens(prompt, &greedy(max_tokens), |_| {
            std::ops::ControlFlow::Continue(())
        })
        .unwrap()
        .token_ids
}

fn start(config: EngineConfig) -> BatchEngine {
    start_on(config, Kernels::Auto)
}

fn start_on(config: EngineConfig, kernels: Kernels) -> BatchEngine {
    let files = ModelFiles::discover(&common::smollm2_gguf()).unwrap();
    worker_llm::serve::LlmBackend::load_on(&files, &Device::Cpu, config, kernels)
        .unwrap()
        .engine()
        .clone()
}

/// Runs every prompt at once (n samples each) and returns each sample's tokens.
fn together(engine: &BatchEngine, prompts: &[Vec<u32>], max_tokens: u32, n: usize) -> Vec<Vec<Vec<u32>>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|prompt| {
                scope.spawn(move || {
                    let mut samples = vec![Vec::new(); n];
                    let request = Request {
                        tokens: prompt.clone(),
                        params: greedy(max_tokens),
                        n,
                        cancel: CancellationToken::new(),
                    };
                    let reasons = generate_blocking(engine, request, |event| {
                        if let SeqEvent::Token { index, event, .. } = event {
                            samples[*index].push(event.token_id);
                        }
                    })
                    .unwrap();
                    assert!(reasons.iter().all(|r| *r == FinishReason::Length));
                    samples
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn wait_for(engine: &BatchEngine, done: impl Fn(&EngineStats) -> bool) -> EngineStats {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = engine.stats();
        if done(&stats) || Instant::now() > deadline {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sequences_run_together_give_what_each_gives_alone() {
    let prompts = &reference().1;
    let expected: Vec<Vec<u32>> = prompts.iter().map(|p| alone(p, 12)).collect();
    let engine = start(EngineConfig {
        max_sequences: 4,
        step_tokens: 24, // chunked prefill: every prompt takes several steps, mixed with decodes
        ..EngineConfig::default()
    });
    let got = together(&engine, prompts, 12, 2);
    for (samples, expected) in got.iter().zip(&expected) {
        for sample in samples {
            assert_eq!(sample, expected, "n = 2: both greedy samples are the greedy text");
        }
    }
    let stats = wait_for(&engine, |s| s.running == 0);
    assert!(
        stats.prefix_hit_tokens > 0,
        "the second samples found their prompt in the cache"
    );
    assert_eq!(stats.kv_cache_usage, 0.0, "every block was given back");
}

#[test]
fn on_candle_ops_sequences_run_together_give_what_each_gives_alone() {
    let prompts = &reference().1;
    let files = ModelFiles::discover(&common::smollm2_gguf()).unwrap();
    let mut single =
        Engine::load_with(&files, &Device::Cpu, candle_core::DType::F32, Kernels::Candle).unwrap();
    let expected: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            single
                .generate_tokens(p, &greedy(8), |_| std::ops::ControlFlow::Continue(()))
                .unwrap()
                .token_ids
        })
        .collect();
    let engine = start_on(
        EngineConfig {
            max_sequences: 4,
            step_tokens: 24,
            ..EngineConfig::default()
        },
        Kernels::Candle,
    );
    let got = together(&engine, prompts, 8, 2);
    for (samples, expected) in got.iter().zip(&expected) {
        for sample in samples {
            assert_eq!(
                sample, expected,
                "on Candle's ops, batched and prefix-reused as alone"
            );
        }
    }
    let stats = wait_for(&engine, |s| s.running == 0);
    assert!(stats.prefix_hit_tokens > 0);
    assert_eq!(stats.kv_cache_usage, 0.0, "every block was given back");
}

#[test]
fn greedy_output_is_the_same_with_and_without_prefix_reuse() {
    let prompts = &reference().1;
    let mut outputs = Vec::new();
    for prefix_reuse in [false, true] {
        let engine = start(EngineConfig {
            prefix_reuse,
            ..EngineConfig::default()
        });
        // One after the other, so later prompts can find the shared system prompt in the cache.
        let mut out = Vec::new();
        for prompt in prompts {
            out.push(
                together(&engine, std::slice::from_ref(prompt), 8, 1)
                    .remove(0)
                    .remove(0),
            );
        }
        let stats = engine.stats();
        if prefix_reuse {
            let shared = SYSTEM.len() / 8; // well below the system prompt's token count
            assert!(
                stats.prefix_hit_tokens as usize >= 3 * (shared / BLOCK_TOKENS) * BLOCK_TOKENS,
                "{stats:?}"
            );
        } else {
            assert_eq!(stats.prefix_hit_tokens, 0);
        }
        outputs.push(out);
    }
    assert_eq!(outputs[0], outputs[1]);
}

#[test]
fn a_cache_too_small_for_everyone_makes_sequences_wait_not_differ() {
    let prompts = &reference().1;
    let expected: Vec<Vec<u32>> = prompts.iter().map(|p| alone(p, 24)).collect();
    // Room for about two of the four sequences at once (SmolLM2: 30 layers, 3 KV heads of 64).
    let longest = prompts.iter().map(Vec::len).max().unwrap() + 24;
    let per_token = bytes_per_token(30, 192);
    let engine = start(EngineConfig {
        max_sequences: 4,
        kv_cache_bytes: 2 * longest.div_ceil(BLOCK_TOKENS) * BLOCK_TOKENS * per_token
            + BLOCK_TOKENS * per_token,
        prefix_reuse: false,
        ..EngineConfig::default()
    });
    let got = together(&engine, prompts, 24, 1);
    for (samples, expected) in got.iter().zip(&expected) {
        assert_eq!(&samples[0], expected);
    }
}

#[test]
fn a_cancelled_sequence_gives_its_blocks_back_and_a_too_long_one_is_refused() {
    let engine = start(EngineConfig::default());
    let cancel = CancellationToken::new();
    let mut events = engine.submit(Request {
        tokens: reference().1[0].clone(),
        params: greedy(2000),
        n: 1,
        cancel: cancel.clone(),
    });
    let first = events.blocking_recv();
    assert!(matches!(first, Some(SeqEvent::Token { .. })), "{first:?}");
    assert!(wait_for(&engine, |s| s.kv_cache_usage > 0.0).kv_cache_usage > 0.0);
    cancel.cancel();
    let stats = wait_for(&engine, |s| s.running == 0 && s.kv_cache_usage == 0.0);
    assert_eq!((stats.running, stats.kv_cache_usage), (0, 0.0), "{stats:?}");

    // More tokens than the whole pool holds: refused with both numbers, not left waiting forever.
    let small = start(EngineConfig {
        kv_cache_bytes: 4 * BLOCK_TOKENS * bytes_per_token(30, 192),
        ..EngineConfig::default()
    });
    let request = Request {
        tokens: reference().1[0].clone(),
        params: greedy(500),
        n: 1,
        cancel: CancellationToken::new(),
    };
    let err = generate_blocking(&small, request, |_| {}).unwrap_err();
    assert!(err.to_string().contains("KV cache"), "{err}");
}
