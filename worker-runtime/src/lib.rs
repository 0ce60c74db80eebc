//! The runtime both workers share: HTTP serving, streaming events, errors, health, metrics, the job queue.
//!
//! `worker-llm` and `worker-sd` each implement [`Backend`] for their own job and output types (text
//! tokens, images) and add their own routes (OpenAI-compatible text, image generation); everything a
//! scheduler, a load balancer or a person relies on is here, once: a bounded queue that refuses at once
//! when full, cancellation when a client leaves, one error type with one mapping to HTTP, `/health`,
//! `/ready`, Prometheus `/metrics`, an optional API key, a body limit, graceful SIGTERM, and the
//! orchestrator's ready callback and heartbeat. It depends on `artifacts-contract` (for
//! [`WorkerKind`](artifacts_contract::WorkerKind) and [`DeviceKind`](artifacts_contract::DeviceKind)) and
//! knows nothing of models, text or images: choosing a model and a device is `worker-model`'s.
//!
//! A worker's `serve` command, in outline:
//!
//! ```text
//! let info = WorkerInfo::new(WorkerKind::Llm, model_id, DeviceKind::Cpu, &args.serve);
//! let server = Server::<MyBackend>::new(info, args.serve.clone())
//!     .routes(|runtime| Router::new().route("/v1/generate", post(generate)).with_state(runtime));
//! let listener = server.bind().await?;
//! server.serve(listener, move || MyBackend::load(&model_id)).await?;
//! ```

pub mod args;
pub mod backend;
pub mod error;
pub mod events;
pub mod extract;
mod job;
mod lifecycle;
mod metrics;
pub mod server;

pub use args::ServeArgs;
pub use backend::{Backend, BackendLoad, Finish, JobContext, JobFuture, MemoryUsage};
pub use error::WorkerError;
pub use events::{Counts, Event, JobMetrics, StopReason, sse_response};
pub use extract::{JsonBody, parse_json};
pub use job::{Completed, JobStream};
pub use lifecycle::{block_on, init_tracing, terminate_signal};
pub use server::{Runtime, ServeError, Server, WorkerInfo};
