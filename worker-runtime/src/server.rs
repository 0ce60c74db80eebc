//! The HTTP server a worker runs: the shared routes (`/health`, `/ready`, `/metrics`), the worker's own
//! routes, API key, body limit, request metrics, loading the model in the background and draining on
//! SIGTERM.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use artifacts_contract::{DeviceKind, WorkerKind};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::args::ServeArgs;
use crate::backend::{Backend, MemoryUsage};
use crate::error::WorkerError;
use crate::events::sse_response;
use crate::extract::BodyLimit;
use crate::job::{self, JobStream};
use crate::lifecycle;
use crate::metrics::{self, Metrics};

/// Who this worker is, as `/ready`, callbacks and heartbeats report it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerInfo {
    /// Unique per process unless given with `--worker-id`.
    pub worker_id: String,
    /// Text or image worker.
    pub kind: WorkerKind,
    /// The catalog id of the model it serves.
    pub model_id: String,
    /// Where it computes.
    pub device: DeviceKind,
}

impl WorkerInfo {
    /// Describes a worker; the id comes from `--worker-id` or is a fresh UUID.
    pub fn new(kind: WorkerKind, model_id: impl Into<String>, device: DeviceKind, args: &ServeArgs) -> Self {
        WorkerInfo {
            worker_id: args
                .worker_id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            kind,
            model_id: model_id.into(),
            device,
        }
    }
}

/// State shared by the routes, the queue and the jobs.
pub(crate) struct Shared<B> {
    pub(crate) info: WorkerInfo,
    pub(crate) backend: OnceLock<Arc<B>>,
    pub(crate) metrics: Arc<Metrics>,
    /// Permits for running plus waiting jobs: a request that gets none is refused at once.
    pub(crate) admission: Arc<Semaphore>,
    /// Permits for running jobs.
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) shutting_down: AtomicBool,
    /// Cancelled when the shutdown grace is over: every job's token is a child of it.
    pub(crate) stop_jobs: CancellationToken,
    pub(crate) tracker: TaskTracker,
    job_counter: AtomicU64,
    load_seconds: OnceLock<f64>,
    pub(crate) started: Instant,
}

impl<B> Shared<B> {
    pub(crate) fn next_job_id(&self) -> String {
        format!("job-{}", self.job_counter.fetch_add(1, Ordering::Relaxed) + 1)
    }

    pub(crate) fn is_ready(&self) -> bool
    where
        B: Backend,
    {
        !self.shutting_down.load(Ordering::SeqCst)
            && self.backend.get().is_some_and(|backend| backend.ready())
    }
}

/// A worker's handle on the runtime, given to its routes: submit jobs, reach the loaded backend.
pub struct Runtime<B> {
    shared: Arc<Shared<B>>,
}

impl<B> Clone for Runtime<B> {
    fn clone(&self) -> Self {
        Runtime {
            shared: self.shared.clone(),
        }
    }
}

impl<B: Backend> Runtime<B> {
    fn new(info: WorkerInfo, args: &ServeArgs) -> Self {
        let concurrency = args.concurrency.max(1) as usize;
        Runtime {
            shared: Arc::new(Shared {
                info,
                backend: OnceLock::new(),
                metrics: Arc::new(Metrics::new()),
                admission: Arc::new(Semaphore::new(concurrency + args.max_waiting as usize)),
                slots: Arc::new(Semaphore::new(concurrency)),
                shutting_down: AtomicBool::new(false),
                stop_jobs: CancellationToken::new(),
                tracker: TaskTracker::new(),
                job_counter: AtomicU64::new(0),
                load_seconds: OnceLock::new(),
                started: Instant::now(),
            }),
        }
    }

    /// Who this worker is.
    pub fn info(&self) -> &WorkerInfo {
        &self.shared.info
    }

    /// The loaded backend, for work outside the queue (tokenizing); 503 while the model loads.
    pub fn backend(&self) -> Result<Arc<B>, WorkerError> {
        self.shared
            .backend
            .get()
            .cloned()
            .ok_or_else(|| WorkerError::NotReady {
                model: self.shared.info.model_id.clone(),
                retry_after_secs: 5,
            })
    }

    /// Queues a job, or refuses it at once (503) when the model is loading, the worker is shutting
    /// down or the waiting line is full. Dropping the returned stream cancels the job.
    pub fn submit(&self, job: B::Job) -> Result<JobStream<B::Output>, WorkerError> {
        if self.shared.shutting_down.load(Ordering::SeqCst) {
            return Err(WorkerError::ShuttingDown);
        }
        let backend = self.backend()?;
        job::submit(&self.shared, backend, job)
    }

    /// Queues a job and streams its native events as Server-Sent Events: the body of a native
    /// streaming route.
    pub fn stream_events(&self, job: B::Job) -> Result<Response, WorkerError> {
        use futures_util::StreamExt;
        let events = self.submit(job)?;
        Ok(sse_response(events.map(|event| event.to_sse())))
    }

    fn set_backend(&self, backend: B, load_seconds: f64) {
        let memory = backend.memory();
        let metrics = &self.shared.metrics;
        metrics.model_load_seconds.set(load_seconds);
        metrics
            .model_memory_bytes
            .set(i64::try_from(memory.weights_bytes + memory.other_bytes).unwrap_or(i64::MAX));
        let _ = self.shared.load_seconds.set(load_seconds);
        let backend = Arc::new(backend);
        let source = backend.clone();
        metrics.set_load_source(move || source.scheduler_load());
        let _ = self.shared.backend.set(backend);
        metrics.ready.set(1);
    }

    pub(crate) fn shared(&self) -> &Arc<Shared<B>> {
        &self.shared
    }
}

/// Builds and runs a worker's HTTP server; see the crate documentation for an example.
pub struct Server<B: Backend> {
    args: ServeArgs,
    runtime: Runtime<B>,
    routes: Router,
    shutdown: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

/// Why a server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The model could not be loaded; the worker can serve nothing.
    #[error("loading the model failed: {0}")]
    Load(WorkerError),
    /// The listening socket failed.
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
}

impl<B: Backend> Server<B> {
    /// A server for one worker, configured by the shared flags.
    pub fn new(info: WorkerInfo, args: ServeArgs) -> Self {
        let runtime = Runtime::new(info, &args);
        Server {
            args,
            runtime,
            routes: Router::new(),
            shutdown: None,
        }
    }

    /// Adds the worker's own routes, built with the runtime handle they need.
    pub fn routes(mut self, build: impl FnOnce(Runtime<B>) -> Router) -> Self {
        self.routes = self.routes.merge(build(self.runtime.clone()));
        self
    }

    /// Replaces SIGTERM / Ctrl-C as the signal to drain and stop (for embedding and tests).
    pub fn shutdown_on(mut self, signal: impl Future<Output = ()> + Send + 'static) -> Self {
        self.shutdown = Some(Box::pin(signal));
        self
    }

    /// Binds the address and port of the flags.
    pub async fn bind(&self) -> std::io::Result<TcpListener> {
        TcpListener::bind((self.args.host, self.args.port)).await
    }

    /// Serves on `listener` while `load` loads the model on a blocking thread; returns once a
    /// shutdown signal has drained the jobs, or with an error if the model cannot load.
    pub async fn serve<L>(self, listener: TcpListener, load: L) -> Result<(), ServeError>
    where
        L: FnOnce() -> Result<B, WorkerError> + Send + 'static,
    {
        let Server {
            args,
            runtime,
            routes,
            shutdown,
        } = self;
        let mut shutdown = shutdown.unwrap_or_else(|| Box::pin(lifecycle::terminate_signal()));
        let address = listener.local_addr()?;
        let app = app(&args, &runtime, routes);
        let stop_http = CancellationToken::new();
        let server = axum::serve(listener, app).with_graceful_shutdown(stop_http.clone().cancelled_owned());
        let mut server = tokio::spawn(async move { server.await });
        let info = runtime.info().clone();
        tracing::info!(%address, model = %info.model_id, device = %info.device, "listening; loading the model");

        let loading = Instant::now();
        let load = tokio::task::spawn_blocking(load);
        let loaded = tokio::select! {
            loaded = load => loaded,
            () = &mut shutdown => {
                tracing::info!("shutdown requested while the model was loading");
                stop_http.cancel();
                let _ = tokio::time::timeout(Duration::from_secs(2), &mut server).await;
                return Ok(());
            }
            finished = &mut server => {
                return Err(ServeError::Io(finished.map_err(std::io::Error::other)?.err().unwrap_or_else(|| std::io::Error::other("the server stopped"))));
            }
        };
        match loaded {
            Ok(Ok(backend)) => {
                let seconds = loading.elapsed().as_secs_f64();
                let memory: MemoryUsage = backend.memory();
                runtime.set_backend(backend, seconds);
                tracing::info!(
                    load_seconds = seconds,
                    weights_bytes = memory.weights_bytes,
                    "model loaded; ready"
                );
            }
            Ok(Err(err)) => {
                stop_http.cancel();
                return Err(ServeError::Load(err));
            }
            Err(join) => {
                stop_http.cancel();
                return Err(ServeError::Load(WorkerError::Internal(format!(
                    "the loader panicked: {join}"
                ))));
            }
        }

        let hooks = CancellationToken::new();
        lifecycle::spawn_hooks(&args, runtime.shared().clone(), address, hooks.clone());

        tokio::select! {
            () = &mut shutdown => {}
            finished = &mut server => {
                hooks.cancel();
                return Err(ServeError::Io(finished.map_err(std::io::Error::other)?.err().unwrap_or_else(|| std::io::Error::other("the server stopped"))));
            }
        }
        hooks.cancel();
        drain(runtime.shared(), args.shutdown_grace(), &stop_http).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut server).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Stops taking jobs, lets the running ones finish within `grace`, then cancels them.
async fn drain<B: Backend>(shared: &Shared<B>, grace: Duration, stop_http: &CancellationToken) {
    shared.shutting_down.store(true, Ordering::SeqCst);
    shared.metrics.ready.set(0);
    stop_http.cancel();
    shared.tracker.close();
    let jobs = shared.metrics.jobs_running.get() + shared.metrics.queue_depth.get();
    tracing::info!(
        jobs,
        grace_secs = grace.as_secs_f64(),
        "shutting down: no new jobs"
    );
    if tokio::time::timeout(grace, shared.tracker.wait()).await.is_err() {
        tracing::warn!("shutdown grace over: cancelling the running jobs");
        shared.stop_jobs.cancel();
        // A cancelled job stops within one step; a step that never ends must not hold the exit forever.
        if tokio::time::timeout(Duration::from_secs(10), shared.tracker.wait())
            .await
            .is_err()
        {
            tracing::error!("a job did not stop within 10 s of being cancelled; exiting anyway");
        }
    }
}

/// The whole router: the worker's routes and `/ready`, `/metrics` behind the API key, `/health`
/// open, JSON errors for unknown routes and methods, the body limit and request metrics around all.
fn app<B: Backend>(args: &ServeArgs, runtime: &Runtime<B>, routes: Router) -> Router {
    let metrics = runtime.shared().metrics.clone();
    let mut protected = routes
        .route("/ready", get(ready::<B>).with_state(runtime.clone()))
        .route(
            "/metrics",
            get(metrics::metrics_route).with_state(metrics.clone()),
        );
    if let Some(key) = args.api_key.clone().filter(|key| !key.is_empty()) {
        protected = protected.layer(middleware::from_fn_with_state(
            Arc::<str>::from(key),
            require_api_key,
        ));
    }
    protected
        .route("/health", get(health))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(Extension(BodyLimit(args.max_body_bytes)))
        .layer(DefaultBodyLimit::max(args.max_body_bytes))
        .layer(middleware::from_fn_with_state(metrics, metrics::count_requests))
}

/// `GET /health`: the process is up and answering.
async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// What `/ready` says.
#[derive(Serialize)]
struct Readiness<'a> {
    status: &'static str,
    #[serde(flatten)]
    info: &'a WorkerInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    load_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<MemoryUsage>,
}

/// `GET /ready`: 200 with the model id once the model is loaded, 503 before, and while draining.
async fn ready<B: Backend>(State(runtime): State<Runtime<B>>) -> Response {
    let shared = runtime.shared();
    let backend = shared.backend.get();
    let status = if shared.shutting_down.load(Ordering::SeqCst) {
        "shutting_down"
    } else if backend.is_none() {
        "loading"
    } else if !shared.is_ready() {
        "unavailable"
    } else {
        "ready"
    };
    let body = Readiness {
        status,
        info: &shared.info,
        load_seconds: shared.load_seconds.get().copied(),
        memory: backend.map(|backend| backend.memory()),
    };
    if status == "ready" {
        Json(body).into_response()
    } else {
        let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(5));
        response
    }
}

async fn not_found(uri: Uri) -> WorkerError {
    WorkerError::NotFound(format!("no route {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> WorkerError {
    WorkerError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

/// Refuses a request without `Authorization: Bearer <key>`, comparing in constant time.
async fn require_api_key(State(key): State<Arc<str>>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), key.as_bytes()) => next.run(request).await,
        _ => WorkerError::Unauthorized.into_response(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
