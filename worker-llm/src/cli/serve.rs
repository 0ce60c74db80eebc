//! `worker-llm serve`: the model over HTTP (OpenAI-compatible routes, the native token stream, health,
//! readiness, metrics); and `worker-llm bench-serve`: what that server adds to the engine's own figures.

use anyhow::Context;
use worker_llm::batch::engine::EngineConfig;
use worker_llm::serve::LlmBackend;
use worker_llm::serve::bench::{self, BenchOptions};
use worker_runtime::ServeArgs;

use worker_model::ModelArgs;

/// Flags of `serve`: the model, the engine's sizes, then the flags every worker shares (there
/// `--concurrency` is the number of sequences in the running batch).
#[derive(clap::Args, Debug)]
pub struct ServeCommand {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    serve: ServeArgs,
}

/// How the batching engine is sized.
#[derive(clap::Args, Debug)]
struct EngineArgs {
    /// MiB of the KV cache pool shared by all sequences (f16); new sequences wait when it is full.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    kv_cache_mib: u64,
    /// Tokens one engine step runs at most (decode tokens plus chunks of prompts being prefilled).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    step_tokens: u64,
    /// Do not keep and reuse the cache blocks of shared prompt prefixes.
    #[arg(long)]
    no_prefix_cache: bool,
}

/// Resolves the model, listens at once (`/ready` answers 503 while it loads), serves until SIGTERM.
pub fn run(args: ServeCommand) -> anyhow::Result<()> {
    worker_runtime::init_tracing();
    let (model_id, files, device) = super::model::resolve(&args.model)?;
    let kind = worker_model::device_kind(&device);
    let config = EngineConfig {
        max_sequences: args.serve.concurrency as usize,
        kv_cache_bytes: usize::try_from(args.engine.kv_cache_mib << 20).unwrap_or(usize::MAX),
        step_tokens: args.engine.step_tokens as usize,
        prefix_reuse: !args.engine.no_prefix_cache,
    };
    let load = move || LlmBackend::load_with(&files, &device, config);
    worker_runtime::block_on(worker_llm::serve::serve(args.serve, &model_id, kind, load))
        .with_context(|| format!("serving {model_id}"))
}

/// Flags of `bench-serve`.
#[derive(clap::Args, Debug)]
pub struct BenchCommand {
    #[command(flatten)]
    model: ModelArgs,
    /// Measured runs on each side (after one warm-up each); medians are reported.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Tokens generated per run (end-of-sequence ignored, so every run generates exactly this many).
    #[arg(long, default_value_t = 64)]
    max_tokens: u32,
    /// The prompt, continued as plain text.
    #[arg(long, default_value = "The history of the printing press begins")]
    prompt: String,
}

/// Times the same greedy generation in process and through a loopback server, and prints both.
pub fn bench(args: BenchCommand) -> anyhow::Result<()> {
    let (model_id, files, device) = super::model::resolve(&args.model)?;
    let kind = worker_model::device_kind(&device);
    let backend = LlmBackend::load(&files, &device).with_context(|| format!("loading {model_id}"))?;
    let options = BenchOptions {
        prompt: args.prompt,
        max_tokens: args.max_tokens,
        runs: args.runs.max(1),
    };
    let report = worker_runtime::block_on(bench::run(backend, &model_id, kind, &options))?;
    println!(
        "{model_id}: {} runs of {} tokens, medians",
        options.runs, options.max_tokens
    );
    println!("{report}");
    Ok(())
}
