//! `worker-llm`: text generation with Candle. `generate` runs one prompt in the terminal, `serve`
//! serves the model over HTTP, `bench-serve` measures that server; each
//! subcommand lives in its own module under `cli/`.

use clap::{Parser, Subcommand};

mod cli;

/// Generates text with Candle from a model in the catalog.
#[derive(Parser)]
#[command(name = "worker-llm", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What to do.
#[derive(Subcommand)]
enum Command {
    /// Generate text for one prompt, streamed to stdout; figures go to stderr.
    Generate(cli::generate::GenerateArgs),
    /// Serve the model over HTTP: OpenAI-compatible API, native token stream, health, readiness, metrics.
    Serve(cli::serve::ServeCommand),
    /// Time to first token and tokens/s through a loopback server against the same generation in process.
    BenchServe(cli::serve::BenchCommand),
}

fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        Command::Generate(args) => cli::generate::run(args),
        Command::Serve(args) => cli::serve::run(args),
        Command::BenchServe(args) => cli::serve::bench(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            std::process::ExitCode::FAILURE
        }
    }
}

/// Prints the error and its causes on one line; the backtrace only when `RUST_BACKTRACE` (or
/// `RUST_LIB_BACKTRACE`) asked for one, which is when anyhow captures it.
fn report(e: &anyhow::Error) {
    eprintln!("error: {e:#}");
    let backtrace = e.backtrace();
    if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
        eprintln!("\nbacktrace:\n{backtrace}");
    }
}
