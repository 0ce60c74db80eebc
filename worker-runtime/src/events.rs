//! What a job tells its client while it runs, for any kind of output: the events of the native streaming
//! API, sent as Server-Sent Events whose `event:` is the variant name and whose `data:` is the JSON.
//!
//! The runtime sends `started`, `metrics` and `end` (or `error`) itself; a backend sends `output` and
//! `progress` through its [`JobContext`](crate::JobContext).

use std::convert::Infallible;

use axum::response::sse::{self, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::error::WorkerError;

/// One event of a job's stream, generic over the worker's output (a token, an image...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event<O> {
    /// The job left the queue and began running.
    Started {
        /// The id the logs use for this job.
        job_id: String,
        /// How long it waited for a free slot, in milliseconds.
        queued_ms: f64,
    },
    /// One unit of output.
    Output {
        /// 0 for the first output of the job, then 1, 2...
        index: u64,
        /// The worker's own output.
        output: O,
    },
    /// How far a job with a known number of steps has come (denoising steps, say).
    Progress {
        /// Steps done.
        step: u64,
        /// Steps in all.
        total: u64,
    },
    /// Timings of the job, sent just before `end`.
    Metrics(JobMetrics),
    /// The job is over.
    End {
        /// Why it stopped.
        stop_reason: StopReason,
        /// What it consumed and produced.
        counts: Counts,
    },
    /// The job failed; nothing follows.
    Error {
        /// [`WorkerError::code`].
        code: String,
        /// What went wrong.
        message: String,
    },
}

impl<O> Event<O> {
    /// The SSE `event:` name, the same as the JSON `type`.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Started { .. } => "started",
            Event::Output { .. } => "output",
            Event::Progress { .. } => "progress",
            Event::Metrics(_) => "metrics",
            Event::End { .. } => "end",
            Event::Error { .. } => "error",
        }
    }

    /// The error event for a failure.
    pub fn error(err: &WorkerError) -> Self {
        Event::Error {
            code: err.code().to_owned(),
            message: err.to_string(),
        }
    }
}

impl<O: Serialize> Event<O> {
    /// This event as one Server-Sent Event.
    pub fn to_sse(&self) -> sse::Event {
        let event = sse::Event::default().event(self.name());
        match event.clone().json_data(self) {
            Ok(event) => event,
            Err(err) => {
                let failure: Event<()> =
                    Event::error(&WorkerError::Internal(format!("unserializable output: {err}")));
                sse::Event::default()
                    .event(failure.name())
                    .data(serde_json::to_string(&failure).unwrap_or_default())
            }
        }
    }
}

/// Why a job stopped, in terms that hold for every kind of worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model finished on its own: an end-of-sequence token, the last denoising step.
    Complete,
    /// A requested limit was reached (`max_tokens`...).
    Length,
    /// A requested stop sequence appeared.
    StopSequence,
    /// The client went away or the worker shut down.
    Cancelled,
}

/// What a job consumed and produced, in the worker's own units (prompt and completion tokens; images).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Units of input (prompt tokens).
    pub input: u64,
    /// Units of output (generated tokens, images).
    pub output: u64,
}

/// Timings of one job, as the `metrics` event reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct JobMetrics {
    /// Time spent waiting for a free slot.
    pub queued_ms: f64,
    /// From the request being accepted to the first output; absent when there was none.
    pub time_to_first_output_ms: Option<f64>,
    /// From the request being accepted to the end of the job.
    pub total_ms: f64,
    /// Outputs emitted.
    pub outputs: u64,
    /// Outputs per second after the first (the decode rate for text); absent below two outputs.
    pub outputs_per_second: Option<f64>,
}

/// Streams any SSE events to the client with keep-alive comments, which also reveal a client that left
/// while its job waits in the queue.
pub fn sse_response<S>(events: S) -> Response
where
    S: Stream<Item = sse::Event> + Send + 'static,
{
    Sse::new(events.map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(5)))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_with_their_type() {
        let event = Event::Output {
            index: 3,
            output: "hi",
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "output", "index": 3, "output": "hi"})
        );
        let end: Event<()> = Event::End {
            stop_reason: StopReason::Length,
            counts: Counts { input: 4, output: 2 },
        };
        let json = serde_json::to_value(&end).unwrap();
        assert_eq!(json["stop_reason"], "length");
        assert_eq!(json["counts"]["output"], 2);
    }
}
