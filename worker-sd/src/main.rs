//! `worker-sd`: image generation with Candle.

use clap::{Parser, Subcommand};

/// Generates images with Candle from a model in the catalog.
#[derive(Parser)]
#[command(name = "worker-sd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

/// What the worker can do so far; `generate` and `serve` come with model loading.
#[derive(Subcommand)]
enum Command {
    /// Lists the schedulers (samplers) a request or catalog entry can name, as the popular UIs write them.
    Schedulers,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Schedulers) => {
            for spec in worker_sd::schedulers::specs() {
                println!("{}\t(also: {})", spec.name, spec.aliases.join(", "));
            }
        }
        None => {
            use clap::CommandFactory;
            Cli::command().print_help()?;
        }
    }
    Ok(())
}
