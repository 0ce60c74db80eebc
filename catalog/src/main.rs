//! `catalog`: the command line over the catalog library.

use clap::Parser;

/// Brings AI models into a local catalog and answers which worker can run them.
#[derive(Parser)]
#[command(name = "catalog", version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
