//! The flags that choose a model and a device, shared by every subcommand that loads one.

use std::path::PathBuf;

use anyhow::Context;
use worker_llm::{Engine, parse_device};

/// Which model to load, and where to run it.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// A `.gguf` file, a `.safetensors` file or a model folder, loaded directly (for development).
    #[arg(long)]
    pub model_path: PathBuf,
    /// `cpu`, `cuda:N` (feature `cuda`) or `metal` (feature `metal`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl ModelArgs {
    /// Opens the device and loads the model.
    pub fn load(&self) -> anyhow::Result<Engine> {
        let device = parse_device(&self.device)?;
        Engine::load_path(&self.model_path, &device)
            .with_context(|| format!("loading {}", self.model_path.display()))
    }
}
