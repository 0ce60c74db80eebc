//! The text worker's routes: OpenAI-compatible chat and text completions (streamed or whole), the model
//! list, the native `/v1/generate` stream of the runtime's events, and `/tokenize`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{StreamExt, stream};
use serde_json::json;
use worker_runtime::{JsonBody, Runtime, WorkerError, sse_response};

use super::backend::{LlmBackend, LlmJob};
use super::errors::to_worker_error;
use super::openai::{ChunkWriter, Endpoint, Header};
use super::request::{GenerateRequest, Input, Parsed};

/// The worker's routes, to merge into the runtime's server.
pub fn routes(runtime: Runtime<LlmBackend>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/v1/generate", post(generate))
        .route("/tokenize", post(tokenize))
        .with_state(runtime)
}

/// 404 when the request names a model other than the one served.
fn check_model(runtime: &Runtime<LlmBackend>, request: &GenerateRequest) -> Result<(), WorkerError> {
    let served = &runtime.info().model_id;
    match &request.model {
        Some(model) if model != served => Err(WorkerError::NotFound(format!(
            "the model `{model}` is not served here; this worker serves `{served}`"
        ))),
        _ => Ok(()),
    }
}

/// Tokenizes the prompt off the async threads and checks it fits the context: a job ready to queue.
async fn prepare(runtime: &Runtime<LlmBackend>, parsed: &Parsed) -> Result<LlmJob, WorkerError> {
    parsed
        .params
        .validate()
        .map_err(|err| to_worker_error(err, parsed.prompt_field))?;
    let backend = runtime.backend()?;
    let (prompt, field, max_tokens) = (
        parsed.prompt.clone(),
        parsed.prompt_field,
        parsed.params.max_tokens,
    );
    let tokens = tokio::task::spawn_blocking(move || {
        let tokens = backend.prompts().encode(&prompt)?;
        backend.prompts().check_context(tokens.len(), max_tokens)?;
        Ok(tokens)
    })
    .await
    .map_err(|err| WorkerError::Internal(format!("tokenizing failed: {err}")))?
    .map_err(|err| to_worker_error(err, field))?;
    Ok(LlmJob {
        tokens,
        params: parsed.params.clone(),
        n: parsed.n,
    })
}

async fn openai(
    runtime: Runtime<LlmBackend>,
    request: GenerateRequest,
    endpoint: Endpoint,
) -> Result<Response, WorkerError> {
    check_model(&runtime, &request)?;
    let input = if endpoint == Endpoint::Chat {
        Input::Chat
    } else {
        Input::Text
    };
    let parsed = request.parse(input)?;
    let job = prepare(&runtime, &parsed).await?;
    let header = Header::new(endpoint, &runtime.info().model_id, parsed.n);
    let events = runtime.submit(job)?;
    if parsed.stream {
        let mut writer = ChunkWriter::new(header, parsed.include_usage);
        let chunks = events.flat_map(move |event| stream::iter(writer.on_event(event)));
        Ok(sse_response(chunks))
    } else {
        let done = events.collect_all().await?;
        Ok(Json(header.response(&done)).into_response())
    }
}

/// `POST /v1/chat/completions`.
async fn chat_completions(
    State(runtime): State<Runtime<LlmBackend>>,
    JsonBody(request): JsonBody<GenerateRequest>,
) -> Result<Response, WorkerError> {
    openai(runtime, request, Endpoint::Chat).await
}

/// `POST /v1/completions`.
async fn completions(
    State(runtime): State<Runtime<LlmBackend>>,
    JsonBody(request): JsonBody<GenerateRequest>,
) -> Result<Response, WorkerError> {
    openai(runtime, request, Endpoint::Completion).await
}

/// `GET /v1/models`: the one model this worker serves.
async fn models(State(runtime): State<Runtime<LlmBackend>>) -> Json<serde_json::Value> {
    let info = runtime.info();
    Json(json!({
        "object": "list",
        "data": [{ "id": info.model_id, "object": "model", "created": 0, "owned_by": "open-model-catalog" }],
    }))
}

/// `POST /v1/generate`: `messages` or `prompt`, streamed as the runtime's native events.
async fn generate(
    State(runtime): State<Runtime<LlmBackend>>,
    JsonBody(request): JsonBody<GenerateRequest>,
) -> Result<Response, WorkerError> {
    check_model(&runtime, &request)?;
    let parsed = request.parse(Input::Either)?;
    let job = prepare(&runtime, &parsed).await?;
    runtime.stream_events(job)
}

/// `POST /tokenize`: the token ids of `messages` or `prompt`, as vLLM answers it.
async fn tokenize(
    State(runtime): State<Runtime<LlmBackend>>,
    JsonBody(request): JsonBody<GenerateRequest>,
) -> Result<Response, WorkerError> {
    check_model(&runtime, &request)?;
    let (prompt, field) = request.prompt_of(Input::Either)?;
    let backend = runtime.backend()?;
    let context_length = backend.prompts().context_length();
    let tokens = tokio::task::spawn_blocking(move || backend.prompts().encode(&prompt))
        .await
        .map_err(|err| WorkerError::Internal(format!("tokenizing failed: {err}")))?
        .map_err(|err| to_worker_error(err, field))?;
    Ok(
        Json(json!({ "count": tokens.len(), "max_model_len": context_length, "tokens": tokens }))
            .into_response(),
    )
}
