//! The worker's Prometheus metrics, kept in one registry per server and exposed at `GET /metrics`.
//!
//! Names carry the `worker_` prefix; the text is OpenMetrics 1.0 as encoded by the Prometheus project's
//! own Rust client, which Prometheus scrapes natively.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

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

use crate::backend::BackendLoad;

/// Where the backend's own load figures come from (set once the model is loaded).
struct LoadSource(Box<dyn Fn() -> Option<BackendLoad> + Send + Sync>);

impl std::fmt::Debug for LoadSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoadSource")
    }
}

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
    requests_running: Gauge,
    requests_waiting: Gauge,
    kv_cache_usage_ratio: Gauge<f64, AtomicU64>,
    prefix_cache_hits: Counter,
    prefix_cache_queries: Counter,
    load_source: OnceLock<LoadSource>,
    /// One scrape at a time moves the counters.
    refreshing: Mutex<()>,
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
        // The names a cluster's scheduler reads: the Gateway API Inference Extension's endpoint picker
        // (queue, running, KV-cache use, prefix hits) and a KEDA Prometheus trigger (waiting requests).
        let requests_running = Gauge::default();
        registry.register(
            "requests_running",
            "Requests being computed now (sequences in the running batch)",
            requests_running.clone(),
        );
        let requests_waiting = Gauge::default();
        registry.register(
            "requests_waiting",
            "Requests accepted and waiting to start (for a slot, room in the batch or KV cache)",
            requests_waiting.clone(),
        );
        let kv_cache_usage_ratio = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "kv_cache_usage_ratio",
            "Share of the KV cache held by sequences, 0 to 1",
            kv_cache_usage_ratio.clone(),
        );
        let prefix_cache_hits = Counter::default();
        registry.register(
            "prefix_cache_hits",
            "Prompt tokens found in the prefix cache",
            prefix_cache_hits.clone(),
        );
        let prefix_cache_queries = Counter::default();
        registry.register(
            "prefix_cache_queries",
            "Prompt tokens looked up in the prefix cache",
            prefix_cache_queries.clone(),
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
            requests_running,
            requests_waiting,
            kv_cache_usage_ratio,
            prefix_cache_hits,
            prefix_cache_queries,
            load_source: OnceLock::new(),
            refreshing: Mutex::new(()),
        }
    }

    /// Reads the backend's own load figures at every scrape from now on.
    pub(crate) fn set_load_source(&self, source: impl Fn() -> Option<BackendLoad> + Send + Sync + 'static) {
        let _ = self.load_source.set(LoadSource(Box::new(source)));
    }

    /// Sets the scheduler gauges from the backend's figures, or from the runtime's queue when the
    /// backend runs one job per slot.
    fn refresh(&self) {
        let _one = self.refreshing.lock().unwrap_or_else(PoisonError::into_inner);
        let load = self.load_source.get().and_then(|source| (source.0)());
        let queued = self.queue_depth.get();
        match load {
            Some(load) => {
                self.requests_running.set(saturate(load.running));
                self.requests_waiting.set(queued + saturate(load.waiting));
                self.kv_cache_usage_ratio.set(load.kv_cache_usage_ratio);
                advance(&self.prefix_cache_hits, load.prefix_cache_hit_tokens);
                advance(&self.prefix_cache_queries, load.prefix_cache_query_tokens);
            }
            None => {
                self.requests_running.set(self.jobs_running.get());
                self.requests_waiting.set(queued);
            }
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
        self.refresh();
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

fn saturate(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Moves a counter up to a total the backend keeps.
fn advance(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn without_a_scheduler_the_gauges_follow_the_runtimes_queue() {
        // worker-sd's case: one job per slot, the runtime's queue is all there is.
        let metrics = Metrics::new();
        metrics.jobs_running.set(1);
        metrics.queue_depth.set(3);
        let text = metrics.render();
        assert_eq!(value(&text, "worker_requests_running"), Some(1.0));
        assert_eq!(value(&text, "worker_requests_waiting"), Some(3.0));
        assert_eq!(value(&text, "worker_kv_cache_usage_ratio"), Some(0.0));
        assert_eq!(value(&text, "worker_prefix_cache_hits_total"), Some(0.0));
    }

    #[test]
    fn a_schedulers_figures_fill_the_gauges_and_move_the_counters() {
        let metrics = Metrics::new();
        metrics.queue_depth.set(2);
        let hits = Arc::new(AtomicU64::new(32));
        let source = hits.clone();
        metrics.set_load_source(move || {
            Some(BackendLoad {
                running: 5,
                waiting: 1,
                kv_cache_usage_ratio: 0.25,
                prefix_cache_hit_tokens: source.load(std::sync::atomic::Ordering::Relaxed),
                prefix_cache_query_tokens: 100,
            })
        });
        let text = metrics.render();
        assert_eq!(value(&text, "worker_requests_running"), Some(5.0));
        assert_eq!(
            value(&text, "worker_requests_waiting"),
            Some(3.0),
            "queue plus scheduler"
        );
        assert_eq!(value(&text, "worker_kv_cache_usage_ratio"), Some(0.25));
        assert_eq!(value(&text, "worker_prefix_cache_hits_total"), Some(32.0));
        assert_eq!(value(&text, "worker_prefix_cache_queries_total"), Some(100.0));
        hits.store(48, std::sync::atomic::Ordering::Relaxed);
        let text = metrics.render();
        assert_eq!(value(&text, "worker_prefix_cache_hits_total"), Some(48.0));
    }
}
