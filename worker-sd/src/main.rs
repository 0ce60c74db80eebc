//! `worker-sd`: image generation with Candle, from the command line or over HTTP.

mod cli;

use std::process::ExitCode;

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

/// Runs the command; an error is one line on stderr (its causes after colons, never a backtrace) and exit
/// status 2 when the input was at fault (a bad field, a LoRA that does not fit), 1 otherwise.
fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            let bad_input = err.chain().any(|e| {
                e.downcast_ref::<worker_sd::SdError>()
                    .is_some_and(|e| e.is_bad_request())
            });
            ExitCode::from(if bad_input { 2 } else { 1 })
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
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
