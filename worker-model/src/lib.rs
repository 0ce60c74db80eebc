//! The model and device flags every worker shares, kept apart from `worker-runtime` so that the HTTP
//! runtime builds without SQLite and Candle.
//!
//! - [`ModelArgs`]: `--model ID` (a catalog id, normalized as the `catalog` command does it, so
//!   `file:` ids written relative or absolute are one entry), `--model-path`, `--catalog-home`,
//!   `--device`.
//! - [`parse_device`] and [`device_kind`]: `--device cpu|cuda:N|metal` to a Candle device and the
//!   contract's name for its kind.
//! - [`gpu_memory`]: whether a model fits the GPU's free memory, checked before loading (the driver is
//!   asked only with the `cuda` feature).
//!
//! What a worker then does with a resolved entry (which files are its weights, tokenizer, VAE...) is
//! the worker's own: the catalog's [`catalog::resolve`] hands it every file with its role.

pub mod device;
pub mod gpu_memory;
pub mod model_args;

pub use device::{DeviceError, device_kind, parse_device};
pub use gpu_memory::MemoryError;
pub use model_args::{ModelArgs, ModelArgsError, ModelOrigin};
