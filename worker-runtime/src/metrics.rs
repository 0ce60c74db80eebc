//! The worker's Prometheus metrics, kept in one registry per server and exposed at `GET /metrics`.
//!
//! Names carry the `worker_` prefix; the text is OpenMetrics 1.0 as encoded by the Prometheus project's
//! own Rust client, which Prometheus scrapes natively.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    /// The route pattern (`/v1/chat/completions`), or `unmatched`, so unknown paths cannot grow the series.
    route: String,
    method: String,
    status: String,
}

/// Labels of the finished-jobs counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct JobLabels {
    /// `complete`, `length`, `stop_sequence`, `cancelled` or `error`.
    outcome: String,
}

/// Every metric the runtime records.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    pub(crate) queue_depth: Gauge,
    pub(crate) jobs_running: Gauge,
    pub(crate) time_to_first_output: Histogram,
    pub(crate) time_between_outputs: Histogram,
    pub(crate) outputs: Counter,
    jobs: Family<JobLabels, Counter>,
    pub(crate) model_load_seconds: Gauge<f64, AtomicU64>,
    pub(crate) model_memory_bytes: Gauge,
    pub(crate) ready: Gauge,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("worker");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            requests.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register("queue_depth", "Jobs waiting for a free slot", queue_depth.clone());
        let jobs_running = Gauge::default();
        registry.register("jobs_running", "Jobs running now", jobs_running.clone());
        // 1 ms to about 65 s: a first token on a GPU to a first image on a CPU.
        let time_to_first_output = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        registry.register_with_unit(
            "time_to_first_output",
            "From a job being accepted to its first output",
            Unit::Seconds,
            time_to_first_output.clone(),
        );
        // 0.5 ms to about 16 s between outputs.
        let time_between_outputs = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register_with_unit(
            "time_between_outputs",
            "Between two consecutive outputs of one job",
            Unit::Seconds,
            time_between_outputs.clone(),
        );
        let outputs = Counter::default();
        registry.register("outputs", "Outputs produced (tokens, images)", outputs.clone());
        let jobs = Family::<JobLabels, Counter>::default();
        registry.register("jobs", "Jobs finished, by outcome", jobs.clone());
        let model_load_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "model_load",
            "Time the model took to load",
            Unit::Seconds,
            model_load_seconds.clone(),
        );
        let model_memory_bytes = Gauge::default();
        registry.register_with_unit(
            "model_memory",
            "Memory the loaded model holds",
            Unit::Bytes,
            model_memory_bytes.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 once the model is loaded and the worker takes jobs",
            ready.clone(),
        );
        Metrics {
            registry,
            requests,
            queue_depth,
            jobs_running,
            time_to_first_output,
            time_between_outputs,
            outputs,
            jobs,
            model_load_seconds,
            model_memory_bytes,
            ready,
        }
    }

    /// Counts one finished job by how it ended.
    pub(crate) fn job_finished(&self, outcome: &str) {
        self.jobs
            .get_or_create(&JobLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// The exposition text.
    pub(crate) fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// `GET /metrics`.
pub(crate) async fn metrics_route(State(metrics): State<Arc<Metrics>>) -> Response {
    let mut response = metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// Middleware counting every answered request by route pattern, method and status.
pub(crate) async fn count_requests(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().to_string();
    let response = next.run(request).await;
    let labels = RequestLabels {
        route,
        method,
        status: response.status().as_u16().to_string(),
    };
    metrics.requests.get_or_create(&labels).inc();
    response
}
