//! `worker-llm`: text generation with Candle.

use clap::Parser;

/// Generates text with Candle from a model in the catalog.
#[derive(Parser)]
#[command(name = "worker-llm", version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
