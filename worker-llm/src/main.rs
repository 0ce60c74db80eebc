//! `worker-llm`: text generation with Candle. `generate` runs one prompt in the terminal; each
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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Generate(args) => cli::generate::run(args),
    }
}
