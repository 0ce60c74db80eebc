//! `worker-llm serve`: the engine over HTTP, on the shared `worker-runtime` server.
//!
//! The runtime brings the queue, cancellation, errors, `/health`, `/ready`, `/metrics`, the API key and
//! graceful shutdown; this module adds what is particular to text: the [`LlmBackend`] that hands jobs
//! to the batching engine ([`crate::batch::engine`]), OpenAI-compatible routes, the native `/v1/generate`
//! stream and `/tokenize`. [`bench`] measures what the server adds to the engine's own figures.

mod backend;
pub mod bench;
mod errors;
mod openai;
mod request;
mod routes;

use artifacts_contract::{DeviceKind, WorkerKind};
use worker_runtime::{ServeArgs, ServeError, Server, WorkerError, WorkerInfo};

pub use backend::{LlmBackend, LlmJob, PromptEncoder, TokenOutput};
pub use request::{GenerateRequest, Input, MAX_CHOICES};
pub use routes::routes;

use crate::error::LlmError;

/// The server for one text model, its routes added; `serve` it on a listener with a loader.
pub fn server(args: ServeArgs, model_id: &str, device: DeviceKind) -> Server<LlmBackend> {
    let info = WorkerInfo::new(WorkerKind::Llm, model_id, device, &args);
    Server::new(info, args).routes(routes)
}

/// Serves until SIGTERM: listens at once, answers `/ready` with 503 while `load` runs, then serves.
pub async fn serve(
    args: ServeArgs,
    model_id: &str,
    device: DeviceKind,
    load: impl FnOnce() -> Result<LlmBackend, LlmError> + Send + 'static,
) -> Result<(), ServeError> {
    let server = server(args, model_id, device);
    let listener = server.bind().await?;
    server
        .serve(listener, move || {
            load().map_err(|err| WorkerError::Internal(err.to_string()))
        })
        .await
}
