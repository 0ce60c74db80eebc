//! `worker-sd serve`: the image routes on top of `worker-runtime` (which brings health, readiness,
//! metrics, the queue, cancellation, the API key and shutdown).
//!
//! - `POST /v1/images/generations`: OpenAI's images API (JSON in, `b64_json` PNGs out), with the usual
//!   Stable Diffusion parameters as extra fields.
//! - `POST /v1/images/stream`: the same body; Server-Sent Events `started`, `progress` (step of total over
//!   the whole batch), `output` (a `preview` every `preview_every` steps when asked, then each `image`),
//!   `metrics` and `end`.
//!
//! A client that disconnects cancels its job within one denoising step.

mod body;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use serde::Serialize;
use worker_runtime::{
    Backend, Counts, Finish, JobContext, JsonBody, MemoryUsage, Runtime, StopReason, WorkerError,
};

use crate::error::SdError;
use crate::pipeline::{ImagePipeline, generate};
use crate::request::GenerationRequest;
pub use body::ImageRequestBody;

/// A loaded pipeline serving jobs.
pub struct SdBackend {
    pipeline: Arc<dyn ImagePipeline>,
    weights_bytes: u64,
}

impl SdBackend {
    /// Wraps a loaded pipeline; `weights_bytes` is reported by `/ready` and `/metrics`.
    pub fn new(pipeline: Box<dyn ImagePipeline>, weights_bytes: u64) -> Self {
        SdBackend {
            pipeline: Arc::from(pipeline),
            weights_bytes,
        }
    }
}

/// One image job: a request already checked against the model, and how often to send previews.
pub struct ImageJob {
    /// The generation request.
    pub request: GenerationRequest,
    /// Send a preview every this many steps (streaming only).
    pub preview_every: Option<u32>,
}

/// What an image job streams.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImageOutput {
    /// A small picture of the latents mid-generation (one pixel per latent), as a base64 PNG.
    Preview {
        /// Which image of the batch.
        image: u32,
        /// Steps done for it.
        step: u32,
        /// Steps it takes.
        steps: u32,
        /// The PNG, base64.
        b64_png: String,
    },
    /// A finished image.
    Image {
        /// Which image of the batch.
        index: u32,
        /// The seed that reproduces it alone.
        seed: u64,
        /// The PNG (with its `parameters` text chunk), base64.
        b64_json: String,
        /// The parameters as written in the PNG.
        parameters: String,
        /// What each LoRA applied (empty without LoRAs).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        loras: Vec<crate::lora::LoraReport>,
        /// LoRAs that applied only part of their tensors, in words.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<String>,
    },
}

fn internal(err: SdError) -> WorkerError {
    match err {
        SdError::Cancelled => WorkerError::Cancelled,
        SdError::Invalid { field, message } => WorkerError::invalid(field, format!("{field}: {message}")),
        // A pickle LoRA or embedding the request named, an image it sent: the caller's fault.
        other if other.is_bad_request() => WorkerError::InvalidRequest {
            param: None,
            message: other.to_string(),
        },
        other => WorkerError::Internal(other.to_string()),
    }
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Backend for SdBackend {
    type Job = ImageJob;
    type Output = ImageOutput;

    fn run(&self, job: ImageJob, ctx: &mut JobContext<ImageOutput>) -> Result<Finish, WorkerError> {
        let images = generate(
            self.pipeline.as_ref(),
            job.request,
            job.preview_every,
            &mut |p, preview| {
                let done = u64::from(p.image) * u64::from(p.steps) + u64::from(p.step);
                let total = u64::from(p.images) * u64::from(p.steps);
                ctx.progress(done, total).map_err(|_| SdError::Cancelled)?;
                if let Some(preview) = preview {
                    let png = crate::output::png_bytes(&preview, "")?;
                    ctx.emit(ImageOutput::Preview {
                        image: p.image,
                        step: p.step,
                        steps: p.steps,
                        b64_png: base64(&png),
                    })
                    .map_err(|_| SdError::Cancelled)?;
                }
                Ok(())
            },
        )
        .map_err(internal)?;
        let count = images.len() as u64;
        for (index, image) in images.into_iter().enumerate() {
            let png = crate::output::png_bytes(&image.image, &image.parameters).map_err(internal)?;
            ctx.emit(ImageOutput::Image {
                index: index as u32,
                seed: image.seed,
                b64_json: base64(&png),
                parameters: image.parameters,
                warnings: image.loras.iter().filter_map(|r| r.warning()).collect(),
                loras: image.loras,
            })?;
        }
        Ok(Finish {
            stop_reason: StopReason::Complete,
            counts: Counts {
                input: 0,
                output: count,
            },
        })
    }

    fn memory(&self) -> MemoryUsage {
        MemoryUsage {
            weights_bytes: self.weights_bytes,
            other_bytes: 0,
        }
    }
}

/// The image routes, for `Server::routes`.
pub fn routes(runtime: Runtime<SdBackend>) -> Router {
    Router::new()
        .route("/v1/images/generations", post(generations))
        .route("/v1/images/stream", post(stream))
        .with_state(runtime)
}

/// Parses and checks a body against the loaded model, so bad input is a 400 before it queues; the
/// uploaded images are decoded on a blocking thread, never on the async executor.
async fn job(runtime: &Runtime<SdBackend>, body: ImageRequestBody) -> Result<ImageJob, WorkerError> {
    // Not ready: say so before decoding anything.
    runtime.backend()?;
    let preview_every = body.preview_every;
    let names = body.field_names();
    let request = tokio::task::spawn_blocking(move || body.into_request())
        .await
        .map_err(|e| WorkerError::Internal(format!("decoding the uploaded images stopped: {e}")))??;
    let pipeline = runtime.backend()?.pipeline.clone();
    // Resolving LoRAs and embeddings reads files: on a blocking thread, before the request queues, so a
    // missing, incompatible or misshapen LoRA is a 400 on both routes (the stream's too).
    let checked = request.clone();
    tokio::task::spawn_blocking(move || crate::pipeline::prepare(pipeline.as_ref(), checked))
        .await
        .map_err(|e| WorkerError::Internal(format!("checking the request stopped: {e}")))?
        .map_err(|err| match err {
            SdError::Invalid { field, message } => {
                let field = names.json_name(field);
                WorkerError::invalid(field, format!("{field}: {message}"))
            }
            other => internal(other),
        })?;
    Ok(ImageJob {
        request,
        preview_every,
    })
}

async fn generations(
    State(runtime): State<Runtime<SdBackend>>,
    JsonBody(body): JsonBody<ImageRequestBody>,
) -> Result<Response, WorkerError> {
    let job = job(&runtime, body).await?;
    let done = runtime.submit(job)?.collect_all().await?;
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let data: Vec<serde_json::Value> = done
        .outputs
        .into_iter()
        .filter_map(|output| match output {
            ImageOutput::Image {
                seed,
                b64_json,
                parameters,
                loras,
                warnings,
                ..
            } => {
                let mut item =
                    serde_json::json!({ "b64_json": b64_json, "seed": seed, "parameters": parameters });
                if !loras.is_empty() {
                    item["loras"] = serde_json::json!(loras);
                    item["warnings"] = serde_json::json!(warnings);
                }
                Some(item)
            }
            ImageOutput::Preview { .. } => None,
        })
        .collect();
    Ok(axum::Json(serde_json::json!({ "created": created, "data": data })).into_response())
}

async fn stream(
    State(runtime): State<Runtime<SdBackend>>,
    JsonBody(body): JsonBody<ImageRequestBody>,
) -> Result<Response, WorkerError> {
    let job = job(&runtime, body).await?;
    runtime.stream_events(job)
}
