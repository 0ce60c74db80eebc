//! Prints a prompt's next-token logits as JSON, on a device: `scripts/gpu/check.sh` runs it on `cpu` and
//! on `cuda:0` and compares the two (no subcommand of the worker exposes raw logits).
//!
//! `cargo run --release -p worker-llm --example logits -- MODEL DEVICE PROMPT`

use std::path::Path;

use worker_llm::{Engine, Prompt};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, device, prompt] = args.as_slice() else {
        anyhow::bail!("usage: logits MODEL DEVICE PROMPT");
    };
    let device = worker_model::parse_device(device)?;
    let mut engine = Engine::load_path(Path::new(model), &device)?;
    let tokens = engine.tokenize(&Prompt::Text(prompt.clone()))?;
    let logits = engine.model_mut().forward(&tokens, 0)?;
    println!("{}", serde_json::json!({ "tokens": tokens, "logits": logits }));
    Ok(())
}
