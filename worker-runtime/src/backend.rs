//! The seam between the runtime and a worker: a worker implements [`Backend`] once (load a model, run
//! jobs), and the runtime does the rest (HTTP, queue, cancellation, streaming, metrics).
//!
//! Two forms. One job at a time per slot ([`Backend::run`]): the job runs on a blocking thread, since
//! Candle computes synchronously (worker-sd). Submit-based ([`Backend::start`]): a backend that
//! schedules jobs itself, like a batching engine running many sequences per step, takes the job and
//! returns a future that streams what its engine sends back, holding no thread (worker-llm). Either way
//! a job hands each output to its [`JobContext`], which streams it to the client and says when to
//! stop: the client went away or the worker is shutting down. A backend checks it at every step, so a
//! cancelled job stops within one.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::error::WorkerError;
use crate::events::{Counts, Event, StopReason};
use crate::job::Message;
use crate::metrics::Metrics;

/// A model loaded on a device, able to run jobs: what each worker (text, image) provides.
pub trait Backend: Send + Sync + 'static {
    /// One job's parameters, already parsed and validated by the worker's routes.
    type Job: Send + 'static;
    /// One unit of streamed output (a token with its text, an image, a preview).
    type Output: Serialize + Send + 'static;

    /// Runs one job to its end on the calling (blocking) thread, streaming outputs through `ctx`.
    ///
    /// Return [`WorkerError::Cancelled`] (what [`JobContext::emit`] and [`JobContext::check`] return
    /// once the job is cancelled) to stop early; any other error becomes the job's `error` event. A
    /// backend that overrides [`Backend::start`] need not implement it.
    fn run(&self, job: Self::Job, ctx: &mut JobContext<Self::Output>) -> Result<Finish, WorkerError> {
        let _ = (job, ctx);
        Err(WorkerError::Internal(
            "this backend implements neither `run` nor `start`".to_owned(),
        ))
    }

    /// Starts one job once it has a slot, and resolves when it has ended, giving its context back. By
    /// default it runs [`Backend::run`] on a blocking thread (panics become the job's error); a backend
    /// with its own scheduler hands the job to it and streams what comes back.
    fn start(self: Arc<Self>, job: Self::Job, mut ctx: JobContext<Self::Output>) -> JobFuture<Self::Output> {
        Box::pin(async move {
            let joined = tokio::task::spawn_blocking(move || {
                let result = catch_unwind(AssertUnwindSafe(|| self.run(job, &mut ctx)));
                (result, ctx)
            })
            .await;
            match joined {
                Ok((Ok(result), ctx)) => (result, ctx),
                Ok((Err(panic), ctx)) => (
                    Err(WorkerError::Internal(format!(
                        "the job panicked: {}",
                        panic_message(&*panic)
                    ))),
                    ctx,
                ),
                Err(join) => std::panic::resume_unwind(join.into_panic()),
            }
        })
    }

    /// What the backend's own scheduler holds, for `/metrics`; `None` (the default) when the runtime's
    /// queue says it all (one job per slot).
    fn scheduler_load(&self) -> Option<BackendLoad> {
        None
    }

    /// Memory the loaded model holds, for `/ready` and `/metrics`.
    fn memory(&self) -> MemoryUsage;

    /// Whether the backend can still take jobs (a lost device says no); `/ready` reports it.
    fn ready(&self) -> bool {
        true
    }
}

/// A started job, as [`Backend::start`] returns it: its result and its context once it has ended.
pub type JobFuture<O> = Pin<Box<dyn Future<Output = (Result<Finish, WorkerError>, JobContext<O>)> + Send>>;

/// What a backend that schedules its own jobs holds now: what a cluster's scheduler reads to route
/// requests (the Gateway API Inference Extension's endpoint picker) and to scale (KEDA).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BackendLoad {
    /// Requests computing now (sequences in the running batch).
    pub running: u64,
    /// Requests it holds that wait for room (in the batch or the KV cache).
    pub waiting: u64,
    /// Share of the KV cache in use, 0 to 1.
    pub kv_cache_usage_ratio: f64,
    /// Prompt tokens found in the prefix cache since the start.
    pub prefix_cache_hit_tokens: u64,
    /// Prompt tokens looked up in the prefix cache since the start.
    pub prefix_cache_query_tokens: u64,
}

/// How a job ended, as the backend reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finish {
    /// Why it stopped.
    pub stop_reason: StopReason,
    /// What it consumed and produced.
    pub counts: Counts,
}

/// Memory held by a loaded model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MemoryUsage {
    /// Bytes of weights resident on the device.
    pub weights_bytes: u64,
    /// Other bytes the backend holds between jobs (caches), when it knows them.
    pub other_bytes: u64,
}

/// A running job's line to its client and to the runtime.
pub struct JobContext<O> {
    events: UnboundedSender<Message<O>>,
    cancel: CancellationToken,
    metrics: Arc<Metrics>,
    accepted: Instant,
    outputs: u64,
    first_output: Option<Instant>,
    last_output: Option<Instant>,
}

impl<O> JobContext<O> {
    pub(crate) fn new(
        events: UnboundedSender<Message<O>>,
        cancel: CancellationToken,
        metrics: Arc<Metrics>,
        accepted: Instant,
    ) -> Self {
        JobContext {
            events,
            cancel,
            metrics,
            accepted,
            outputs: 0,
            first_output: None,
            last_output: None,
        }
    }

    /// Whether the job should stop now: its client went away or the worker is shutting down.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled() || self.events.is_closed()
    }

    /// `Err(Cancelled)` once the job should stop; call it at every step that emits nothing.
    pub fn check(&self) -> Result<(), WorkerError> {
        if self.is_cancelled() {
            Err(WorkerError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Streams one output to the client; `Err(Cancelled)` once nobody is listening.
    pub fn emit(&mut self, output: O) -> Result<(), WorkerError> {
        self.check()?;
        let now = Instant::now();
        match self.last_output {
            None => self
                .metrics
                .time_to_first_output
                .observe((now - self.accepted).as_secs_f64()),
            Some(last) => self
                .metrics
                .time_between_outputs
                .observe((now - last).as_secs_f64()),
        }
        self.metrics.outputs.inc();
        self.first_output.get_or_insert(now);
        self.last_output = Some(now);
        let index = self.outputs;
        self.outputs += 1;
        self.send(Event::Output { index, output })
    }

    /// Reports progress through a job with a known number of steps.
    pub fn progress(&mut self, step: u64, total: u64) -> Result<(), WorkerError> {
        self.check()?;
        self.send(Event::Progress { step, total })
    }

    /// Outputs emitted so far, for a backend's own counts.
    pub fn outputs(&self) -> u64 {
        self.outputs
    }

    /// A token a backend can hand to code that takes one (it is cancelled with the job, but not when
    /// the client merely disconnects: use [`JobContext::is_cancelled`] for that).
    pub fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }

    pub(crate) fn send(&self, event: Event<O>) -> Result<(), WorkerError> {
        self.events
            .send(Message::Event(event))
            .map_err(|_| WorkerError::Cancelled)
    }

    pub(crate) fn first_output(&self) -> Option<Instant> {
        self.first_output
    }

    pub(crate) fn last_output(&self) -> Option<Instant> {
        self.last_output
    }
}

/// The text of a panic's payload.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}
