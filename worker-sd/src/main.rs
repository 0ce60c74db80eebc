//! `worker-sd`: image generation with Candle, from the command line or over HTTP.

mod cli;

use clap::{Parser, Subcommand};

/// Generates images with Candle from a model in the catalog.
#[derive(Parser)]
#[command(name = "worker-sd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What the worker does.
#[derive(Subcommand)]
enum Command {
    /// Lists the schedulers (samplers) a request or catalog entry can name, as the popular UIs write them.
    Schedulers,
    /// Makes images and writes them as PNGs with their parameters.
    Generate(cli::generate::GenerateArgs),
    /// Serves the model over HTTP (OpenAI-style images API and a streaming endpoint).
    Serve(cli::serve::ServeCommand),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Schedulers => {
            for spec in worker_sd::schedulers::specs() {
                println!("{}\t(also: {})", spec.name, spec.aliases.join(", "));
            }
        }
        Command::Generate(args) => cli::generate::run(args)?,
        Command::Serve(args) => cli::serve::run(args)?,
    }
    Ok(())
}
