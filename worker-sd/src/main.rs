//! `worker-sd`: image generation with Candle.

use clap::Parser;

/// Generates images with Candle from a model in the catalog.
#[derive(Parser)]
#[command(name = "worker-sd", version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
