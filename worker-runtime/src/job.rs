//! The bounded job queue and the life of one job: admitted or refused at once, waiting for a free slot,
//! running on a blocking thread with panics caught, streaming its events, cancelled when its client
//! goes away.

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::{FutureExt, Stream, StreamExt};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::mpsc::{self, UnboundedReceiver};
use tokio_util::sync::DropGuard;

use crate::backend::{Backend, Finish, JobContext, panic_message};
use crate::error::WorkerError;
use crate::events::{Counts, Event, JobMetrics, StopReason};
use crate::server::Shared;

/// Increments a gauge for as long as it lives, so every path out of a state (including a panic or a
/// dropped future) takes the job out of the count.
struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn enter(gauge: &Gauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What travels from a job to its stream: events, and the typed error behind an `error` event.
pub(crate) enum Message<O> {
    Event(Event<O>),
    Failed(WorkerError),
}

/// The events of one admitted job; dropping it cancels the job.
pub struct JobStream<O> {
    id: String,
    messages: UnboundedReceiver<Message<O>>,
    failure: Option<WorkerError>,
    _cancel_on_drop: DropGuard,
}

impl<O> JobStream<O> {
    /// The job's id, as logs and the `started` event give it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The error behind the last `error` event, with its HTTP status.
    pub fn failure(&self) -> Option<&WorkerError> {
        self.failure.as_ref()
    }

    /// Waits for the job to end and gathers its outputs, for clients that do not stream.
    pub async fn collect_all(mut self) -> Result<Completed<O>, WorkerError>
    where
        O: Send,
    {
        let mut outputs = Vec::new();
        let mut metrics = None;
        while let Some(event) = self.next().await {
            match event {
                Event::Output { output, .. } => outputs.push(output),
                Event::Metrics(job_metrics) => metrics = Some(job_metrics),
                Event::End { stop_reason, counts } => {
                    return Ok(Completed {
                        outputs,
                        stop_reason,
                        counts,
                        metrics: metrics.unwrap_or_default(),
                    });
                }
                Event::Error { message, .. } => {
                    return Err(self.failure.take().unwrap_or(WorkerError::Internal(message)));
                }
                Event::Started { .. } | Event::Progress { .. } => {}
            }
        }
        Err(WorkerError::Internal("the job ended without a result".to_owned()))
    }
}

impl<O> Stream for JobStream<O> {
    type Item = Event<O>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.messages.poll_recv(cx) {
            Poll::Ready(Some(Message::Event(event))) => Poll::Ready(Some(event)),
            Poll::Ready(Some(Message::Failed(err))) => {
                let event = Event::error(&err);
                self.failure = Some(err);
                Poll::Ready(Some(event))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A whole job's result, for clients that do not stream.
#[derive(Debug, Clone)]
pub struct Completed<O> {
    /// Every output, in order.
    pub outputs: Vec<O>,
    /// Why it stopped.
    pub stop_reason: StopReason,
    /// What it consumed and produced.
    pub counts: Counts,
    /// Its timings.
    pub metrics: JobMetrics,
}

/// Admits a job or refuses it at once, then runs it in the background; see [`crate::Runtime::submit`].
pub(crate) fn submit<B: Backend>(
    shared: &Arc<Shared<B>>,
    backend: Arc<B>,
    job: B::Job,
) -> Result<JobStream<B::Output>, WorkerError> {
    let admission = shared
        .admission
        .clone()
        .try_acquire_owned()
        .map_err(|_| WorkerError::QueueFull {
            running: shared.metrics.jobs_running.get().max(0) as usize,
            waiting: shared.metrics.queue_depth.get().max(0) as usize,
            retry_after_secs: 1,
        })?;
    let accepted = Instant::now();
    let id = shared.next_job_id();
    let (sender, messages) = mpsc::unbounded_channel();
    let cancel = shared.stop_jobs.child_token();
    let waiting = GaugeGuard::enter(&shared.metrics.queue_depth);
    let task_shared = shared.clone();
    let task_cancel = cancel.clone();
    let job_id = id.clone();
    shared.tracker.spawn(async move {
        let shared = task_shared;
        let cancel = task_cancel;
        let slot = tokio::select! {
            slot = shared.slots.clone().acquire_owned() => slot,
            () = cancel.cancelled() => {
                shared.metrics.job_finished("cancelled");
                let _ = sender.send(Message::Failed(WorkerError::ShuttingDown));
                return;
            }
            () = sender.closed() => {
                tracing::debug!(job = %job_id, "client left while its job waited");
                shared.metrics.job_finished("cancelled");
                return;
            }
        };
        let Ok(slot) = slot else { return };
        drop(waiting);
        let running = GaugeGuard::enter(&shared.metrics.jobs_running);
        let queued_ms = accepted.elapsed().as_secs_f64() * 1e3;
        tracing::info!(job = %job_id, queued_ms, "job started");
        let _ = sender.send(Message::Event(Event::Started { job_id: job_id.clone(), queued_ms }));

        let ctx = JobContext::new(sender.clone(), cancel, shared.metrics.clone(), accepted);
        let (result, metrics) = match AssertUnwindSafe(backend.start(job, ctx)).catch_unwind().await {
            Ok((result, ctx)) => (result, job_metrics(&ctx, accepted, queued_ms)),
            Err(panic) => (
                Err(WorkerError::Internal(format!("the job panicked: {}", panic_message(&*panic)))),
                JobMetrics { queued_ms, ..JobMetrics::default() },
            ),
        };

        let last = match result {
            Ok(Finish { stop_reason, counts }) => Ok((stop_reason, counts)),
            Err(WorkerError::Cancelled) => {
                Ok((StopReason::Cancelled, Counts { input: 0, output: metrics.outputs }))
            }
            Err(err) => Err(err),
        };
        drop(running);
        drop(slot);
        drop(admission);
        match last {
            Ok((stop_reason, counts)) => {
                let outcome = serde_json::to_value(stop_reason).ok();
                shared.metrics.job_finished(outcome.as_ref().and_then(|v| v.as_str()).unwrap_or("complete"));
                tracing::info!(job = %job_id, ?stop_reason, outputs = metrics.outputs, total_ms = metrics.total_ms, "job ended");
                let _ = sender.send(Message::Event(Event::Metrics(metrics)));
                let _ = sender.send(Message::Event(Event::End { stop_reason, counts }));
            }
            Err(err) => {
                shared.metrics.job_finished("error");
                tracing::error!(job = %job_id, error = %err, "job failed");
                let _ = sender.send(Message::Failed(err));
            }
        }
    });
    Ok(JobStream {
        id,
        messages,
        failure: None,
        _cancel_on_drop: cancel.drop_guard(),
    })
}

fn job_metrics<O>(ctx: &JobContext<O>, accepted: Instant, queued_ms: f64) -> JobMetrics {
    let outputs = ctx.outputs();
    let rate = match (ctx.first_output(), ctx.last_output()) {
        (Some(first), Some(last)) if outputs >= 2 && last > first => {
            Some((outputs - 1) as f64 / (last - first).as_secs_f64())
        }
        _ => None,
    };
    JobMetrics {
        queued_ms,
        time_to_first_output_ms: ctx
            .first_output()
            .map(|first| (first - accepted).as_secs_f64() * 1e3),
        total_ms: accepted.elapsed().as_secs_f64() * 1e3,
        outputs,
        outputs_per_second: rate,
    }
}
