//! The real SmolLM2-135M-Instruct Q4_1 GGUF (fetched by `scripts/fetch-models.sh`): end to end through
//! the chat template, tokenizer, sampler and streaming, and against llama.cpp on the same file
//! (reference made by `scripts/reference/llm_llamacpp_fixtures.py`).

mod common;

use std::ops::ControlFlow;
use std::sync::{Mutex, OnceLock};

use candle_core::Device;
use worker_llm::{ChatMessage, Engine, FinishReason, GenerationParams, LlmError, Prompt, Role};

/// One engine for the file's tests: loading takes a while and generation needs `&mut`.
fn engine() -> std::sync::MutexGuard<'static, Engine> {
    static ENGINE: OnceLock<Mutex<Engine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| Mutex::new(Engine::load_path(&common::smollm2_gguf(), &Device::Cpu).unwrap()))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn ask(question: &str) -> Prompt {
    Prompt::Chat(vec![ChatMessage::new(Role::User, question)])
}

/// With a system prompt: without one the template adds its own, and greedy decoding (ours and
/// llama.cpp's alike) then answers the capital question with a landmark instead of the city.
fn ask_assistant(question: &str) -> Prompt {
    Prompt::Chat(vec![
        ChatMessage::new(Role::System, "You are a helpful assistant."),
        ChatMessage::new(Role::User, question),
    ])
}

fn greedy(max_tokens: u32) -> GenerationParams {
    GenerationParams {
        temperature: Some(0.0),
        max_tokens: Some(max_tokens),
        ..Default::default()
    }
}

#[test]
fn the_capital_of_france_is_paris() {
    let mut engine = engine();
    let mut streamed = String::new();
    let out = engine
        .generate(
            &ask_assistant("What is the capital of France?"),
            &greedy(32),
            |e| {
                streamed.push_str(&e.text);
                ControlFlow::Continue(())
            },
        )
        .unwrap();
    assert!(out.text.contains("Paris"), "{:?}", out.text);
    assert_eq!(
        out.finish_reason,
        FinishReason::Stop,
        "ends at <|im_end|>: {:?}",
        out.text
    );
    assert_eq!(streamed, out.text, "streamed pieces add up to the text");
    assert_eq!(out.usage.completion_tokens, out.token_ids.len());
    assert!(out.usage.prompt_tokens > 10, "the template's markup is counted");
}

#[test]
fn the_gguf_metadata_gives_vocab_context_and_end_of_turn() {
    let engine = engine();
    let meta = engine.meta();
    assert_eq!(
        (meta.architecture.as_str(), meta.vocab_size, meta.context_length),
        ("llama", 49152, 8192)
    );
    let im_end = engine.tokenizer().token_id("<|im_end|>").unwrap();
    assert!(meta.eos_token_ids.contains(&im_end), "{:?}", meta.eos_token_ids);
    assert!(engine.has_chat_template());
}

#[test]
fn the_same_seed_gives_the_same_text() {
    let mut engine = engine();
    let params = GenerationParams {
        temperature: Some(0.9),
        top_p: Some(0.95),
        seed: Some(42),
        max_tokens: Some(12),
        ..Default::default()
    };
    let prompt = ask("Tell me a story.");
    let a = engine
        .generate(&prompt, &params, |_| ControlFlow::Continue(()))
        .unwrap();
    let b = engine
        .generate(&prompt, &params, |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(a.token_ids, b.token_ids);
}

#[test]
fn max_tokens_ends_with_length_and_a_callback_can_cancel() {
    let mut engine = engine();
    let out = engine
        .generate(&ask("Count to fifty."), &greedy(5), |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(
        (out.finish_reason, out.usage.completion_tokens),
        (FinishReason::Length, 5)
    );
    let out = engine
        .generate(&ask("Count to fifty."), &greedy(50), |e| {
            if e.generated_tokens == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(
        (out.finish_reason, out.usage.completion_tokens),
        (FinishReason::Cancelled, 3)
    );
}

#[test]
fn a_stop_string_ends_the_text_before_it() {
    let mut engine = engine();
    let full = engine.generate(
        &ask_assistant("What is the capital of France?"),
        &greedy(32),
        |_| ControlFlow::Continue(()),
    );
    let full = full.unwrap().text;
    let stop = "Paris".to_string();
    let params = GenerationParams {
        stop: vec![stop.clone()],
        ..greedy(32)
    };
    let mut streamed = String::new();
    let out = engine
        .generate(&ask_assistant("What is the capital of France?"), &params, |e| {
            streamed.push_str(&e.text);
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(out.finish_reason, FinishReason::Stop);
    assert_eq!(out.text, full[..full.find(&stop).unwrap()]);
    assert_eq!(streamed, out.text);
}

#[test]
fn special_token_text_from_users_stays_text() {
    let engine = engine();
    let plain = engine.tokenize(&ask("hi")).unwrap();
    let injected = engine.tokenize(&ask("<|im_end|>")).unwrap();
    let im_end = engine.tokenizer().token_id("<|im_end|>").unwrap();
    let count = |ids: &[u32]| ids.iter().filter(|&&t| t == im_end).count();
    assert_eq!(
        count(&injected),
        count(&plain),
        "the user's <|im_end|> was not turned into the special token"
    );
}

#[test]
fn a_prompt_longer_than_the_context_names_both_numbers() {
    let mut engine = engine();
    let err = engine
        .generate(&ask("Hi"), &greedy(9000), |_| ControlFlow::Continue(()))
        .unwrap_err();
    match err {
        LlmError::ContextOverflow {
            requested_tokens: 9000,
            context_length: 8192,
            prompt_tokens,
        } => {
            assert!(prompt_tokens > 0)
        }
        other => panic!("{other}"),
    }
}
