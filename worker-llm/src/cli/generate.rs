//! `worker-llm generate`: one prompt, the answer streamed to stdout, the figures to stderr.

use std::io::Write;
use std::ops::ControlFlow;

use worker_llm::{ChatMessage, GenerationParams, Prompt, Role};

use worker_model::ModelArgs;

/// Flags of `generate`; sampling flags carry the OpenAI field names.
#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The text to continue, or the user's message with `--chat`.
    #[arg(long)]
    prompt: String,
    /// Send the prompt as a user message through the model's chat template.
    #[arg(long)]
    chat: bool,
    /// A system message (with `--chat`).
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// Softmax temperature; 0 is greedy.
    #[arg(long)]
    temperature: Option<f64>,
    /// Nucleus sampling mass.
    #[arg(long)]
    top_p: Option<f64>,
    /// Keep only the k most likely tokens.
    #[arg(long)]
    top_k: Option<usize>,
    /// Drop tokens below this fraction of the top probability.
    #[arg(long)]
    min_p: Option<f64>,
    /// Tokens to generate at most.
    #[arg(long, default_value_t = 256)]
    max_tokens: u32,
    /// Sampler seed: the same seed gives the same text.
    #[arg(long)]
    seed: Option<u64>,
    /// A string that ends the generation (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// HF-style repetition penalty (1 is off).
    #[arg(long)]
    repetition_penalty: Option<f32>,
    /// OpenAI frequency penalty.
    #[arg(long, default_value_t = 0.0)]
    frequency_penalty: f32,
    /// OpenAI presence penalty.
    #[arg(long, default_value_t = 0.0)]
    presence_penalty: f32,
    /// Generate past end-of-sequence tokens, up to --max-tokens (for benchmarks).
    #[arg(long)]
    ignore_eos: bool,
}

/// Loads the model, generates, and reports.
pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let mut engine = super::model::load(&args.model)?;
    let prompt = if args.chat {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage::new(Role::System, system.clone()));
        }
        messages.push(ChatMessage::new(Role::User, args.prompt.clone()));
        Prompt::Chat(messages)
    } else {
        Prompt::Text(args.prompt.clone())
    };
    let params = GenerationParams {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        min_p: args.min_p,
        max_tokens: Some(args.max_tokens),
        seed: args.seed,
        stop: args.stop,
        stop_token_ids: Vec::new(),
        repetition_penalty: args.repetition_penalty,
        frequency_penalty: args.frequency_penalty,
        presence_penalty: args.presence_penalty,
        ignore_eos: args.ignore_eos,
    };
    let mut stdout = std::io::stdout().lock();
    let completion = engine.generate(&prompt, &params, |event| {
        // A closed stdout (`| head`) ends the generation instead of failing it.
        match stdout
            .write_all(event.text.as_bytes())
            .and_then(|_| stdout.flush())
        {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    })?;
    let _ = writeln!(stdout);
    let (u, t) = (&completion.usage, &completion.timings);
    eprintln!(
        "prompt tokens: {}, generated tokens: {}, finish: {}\n\
         prefill: {:.1} tok/s, time to first token: {:.0} ms, generation: {:.1} tok/s",
        u.prompt_tokens,
        u.completion_tokens,
        completion.finish_reason.as_str(),
        t.prefill_tokens_per_s(u),
        t.time_to_first_token_s * 1000.0,
        t.decode_tokens_per_s(u),
    );
    Ok(())
}
