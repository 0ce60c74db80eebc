//! A fake backend (counts, sleeping between steps) and a loopback server around it, so the runtime is
//! tested over real HTTP without a model.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use artifacts_contract::{DeviceKind, WorkerKind};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use worker_runtime::{
    Backend, Counts, Finish, JobContext, JsonBody, MemoryUsage, Runtime, ServeArgs, ServeError, Server,
    StopReason, WorkerError, WorkerInfo,
};

/// The model id the fake worker reports.
pub const MODEL: &str = "hf:test/counter";

/// Counts to `steps`, one output per step.
pub struct Counter {
    /// Steps run by every job so far, to see a cancelled job stop.
    pub steps_run: Arc<AtomicU64>,
}

/// The fake worker's job.
#[derive(Debug, Deserialize)]
pub struct CountJob {
    pub steps: u64,
    #[serde(default)]
    pub step_ms: u64,
    #[serde(default)]
    pub panic_at: Option<u64>,
}

/// The fake worker's output.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Tick {
    pub value: u64,
}

impl Backend for Counter {
    type Job = CountJob;
    type Output = Tick;

    fn run(&self, job: CountJob, ctx: &mut JobContext<Tick>) -> Result<Finish, WorkerError> {
        for value in 0..job.steps {
            if job.panic_at == Some(value) {
                panic!("the counter broke at {value}");
            }
            std::thread::sleep(Duration::from_millis(job.step_ms));
            self.steps_run.fetch_add(1, Ordering::SeqCst);
            ctx.emit(Tick { value })?;
        }
        Ok(Finish {
            stop_reason: StopReason::Complete,
            counts: Counts {
                input: 1,
                output: job.steps,
            },
        })
    }

    fn memory(&self) -> MemoryUsage {
        MemoryUsage {
            weights_bytes: 1234,
            other_bytes: 0,
        }
    }
}

fn validate(job: &CountJob) -> Result<(), WorkerError> {
    if !(1..=10_000).contains(&job.steps) {
        return Err(WorkerError::invalid(
            "steps",
            format!("steps must be between 1 and 10000, got {}", job.steps),
        ));
    }
    Ok(())
}

async fn generate(
    State(runtime): State<Runtime<Counter>>,
    JsonBody(job): JsonBody<CountJob>,
) -> Result<Response, WorkerError> {
    validate(&job)?;
    runtime.stream_events(job)
}

async fn generate_whole(
    State(runtime): State<Runtime<Counter>>,
    JsonBody(job): JsonBody<CountJob>,
) -> Result<Response, WorkerError> {
    validate(&job)?;
    let done = runtime.submit(job)?.collect_all().await?;
    let values: Vec<u64> = done.outputs.iter().map(|tick| tick.value).collect();
    Ok(Json(serde_json::json!({ "values": values, "stop_reason": done.stop_reason })).into_response())
}

/// A server on a loopback port, stopped by [`TestServer::stop`].
pub struct TestServer {
    pub base: String,
    pub port: u16,
    pub steps_run: Arc<AtomicU64>,
    stop: CancellationToken,
    handle: JoinHandle<Result<(), ServeError>>,
}

impl TestServer {
    /// Starts a fake worker; its model takes `load` to load.
    pub async fn start(args: ServeArgs, load: Duration) -> TestServer {
        Self::start_with(args, load, Ok(())).await
    }

    /// Starts a fake worker whose load fails with `outcome`'s error.
    pub async fn start_with(
        mut args: ServeArgs,
        load: Duration,
        outcome: Result<(), WorkerError>,
    ) -> TestServer {
        args.port = 0;
        let steps_run = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let (server, listener) = build(args).await;
        let server = server.shutdown_on(stop.clone().cancelled_owned());
        let port = listener.local_addr().unwrap().port();
        let counter = Counter {
            steps_run: steps_run.clone(),
        };
        let handle = tokio::spawn(server.serve(listener, move || {
            std::thread::sleep(load);
            outcome.map(|()| counter)
        }));
        TestServer {
            base: format!("http://127.0.0.1:{port}"),
            port,
            steps_run,
            stop,
            handle,
        }
    }

    /// A URL on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits until `/ready` says 200.
    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(response) = client.get(self.url("/ready")).send().await {
                if response.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the server never became ready");
    }

    /// Sends the shutdown signal and waits for `serve` to return.
    pub async fn stop(self) -> Result<(), ServeError> {
        self.stop.cancel();
        self.join().await
    }

    /// Waits for `serve` to return.
    pub async fn join(self) -> Result<(), ServeError> {
        tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .expect("serve returns")
            .unwrap()
    }

    /// Triggers the shutdown signal without waiting.
    pub fn signal(&self) {
        self.stop.cancel();
    }
}

/// The fake worker's server (stopped by SIGTERM unless told otherwise) and its bound listener.
pub async fn build(args: ServeArgs) -> (Server<Counter>, tokio::net::TcpListener) {
    let info = WorkerInfo::new(WorkerKind::Sd, MODEL, DeviceKind::Cpu, &args);
    let server = Server::<Counter>::new(info, args).routes(|runtime| {
        Router::new()
            .route("/v1/count", post(generate))
            .route("/v1/count/whole", post(generate_whole))
            .with_state(runtime)
    });
    let listener = server.bind().await.unwrap();
    (server, listener)
}

/// One parsed Server-Sent Event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub data: serde_json::Value,
}

/// Reads SSE events from a streaming response as they arrive.
pub struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        SseReader {
            response,
            buffer: String::new(),
        }
    }

    /// The next event, or `None` at the end of the stream; comments (keep-alives) are skipped.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        event = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                let data = serde_json::from_str(&data).expect("event data is JSON");
                return Some(SseEvent { event, data });
            }
            let chunk = self.response.chunk().await.expect("the stream reads")?;
            self.buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    /// Every remaining event.
    pub async fn rest(mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

/// Parses `/metrics` with a Prometheus text-format parser and returns the samples.
pub async fn scrape(server: &TestServer, client: &reqwest::Client) -> Vec<prometheus_parse::Sample> {
    let response = client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    prometheus_parse::Scrape::parse(lines)
        .expect("the exposition parses")
        .samples
}

/// The value of the sample named `name` whose labels include `labels`.
pub fn sample(samples: &[prometheus_parse::Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|sample| {
            sample.metric == name
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(key) == Some(*value))
        })
        .map(|sample| match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(ref buckets) => buckets.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
}

/// The test Python with `prometheus_client` (made by `scripts/test-python.sh`); panics with that command.
pub fn python() -> std::path::PathBuf {
    let path = std::env::var_os("OMC_TEST_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| {
                    std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache")
                });
            cache.join("open-model-catalog/venv-test/bin/python")
        });
    assert!(
        path.is_file(),
        "{} is missing: run `bash scripts/test-python.sh`",
        path.display()
    );
    path
}
