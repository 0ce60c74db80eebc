//! Pulls that outlive the request that started them, streamed as Server-Sent Events.
//!
//! One pull per entry runs on a blocking thread, whoever asks: a second `POST /api/pull` of the same
//! entry (another tab) joins the running one and gets the same events. Closing a tab only drops its
//! stream: the download goes on, and opening the stream again picks it up where it is. A cancelled or
//! cut pull leaves its `.partial` files and a `downloading` status, and the next pull resumes them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use artifacts_contract::{ArtifactStatus, CatalogId, ModelEntry};
use axum::Json;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Serialize;
use tokio::sync::broadcast;

use super::api::{IdQuery, parse_id};
use super::{ApiError, AppState};
use crate::ops;

/// One event of a pull's stream (`event:` is the variant's name, `data:` its JSON).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum PullEvent {
    /// Bytes on disk so far; `phase` is `downloading`, or `verifying` once every byte arrived.
    #[serde(rename_all = "camelCase")]
    Progress {
        /// Bytes on disk over all files (resumed bytes included).
        downloaded_bytes: u64,
        /// The published total, when known.
        total_bytes: Option<u64>,
        /// Bytes per second since this pull started.
        bytes_per_second: f64,
        /// `downloading` or `verifying`.
        phase: &'static str,
    },
    /// Every file arrived and verified (size and SHA-256): the entry is available.
    #[serde(rename_all = "camelCase")]
    Done {
        /// The entry as stored now.
        entry: Box<ModelEntry>,
    },
    /// The pull failed; what was downloaded stays for the next pull to resume.
    Error {
        /// One sentence.
        message: String,
    },
    /// Someone cancelled it; the next pull resumes.
    Cancelled {
        /// Bytes kept on disk.
        #[serde(rename = "downloadedBytes")]
        downloaded_bytes: u64,
    },
}

impl PullEvent {
    fn name(&self) -> &'static str {
        match self {
            PullEvent::Progress { .. } => "progress",
            PullEvent::Done { .. } => "done",
            PullEvent::Error { .. } => "error",
            PullEvent::Cancelled { .. } => "cancelled",
        }
    }

    /// Whether the stream ends with this event.
    pub fn is_final(&self) -> bool {
        !matches!(self, PullEvent::Progress { .. })
    }
}

/// A running pull.
struct Running {
    /// The newest event, for whoever joins late; updated under this lock before each send.
    last: Mutex<PullEvent>,
    tx: broadcast::Sender<PullEvent>,
    cancel: AtomicBool,
}

/// The pulls running in this server, by entry id.
#[derive(Default)]
pub struct Pulls {
    running: Mutex<HashMap<CatalogId, Arc<Running>>>,
}

/// The unwinding payload that stops a cancelled download from inside its progress callback (the
/// downloader has no other way to be stopped); it is caught at the top of the pull's thread.
struct Cancelled;

impl Pulls {
    /// Whether an entry is being pulled.
    pub fn is_running(&self, id: &CatalogId) -> bool {
        self.lock().contains_key(id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CatalogId, Arc<Running>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks a running pull to stop; false when none runs.
    pub fn cancel(&self, id: &CatalogId) -> bool {
        match self.lock().get(id) {
            Some(r) => {
                r.cancel.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// The ids being pulled, with their newest event.
    fn snapshot(&self) -> Vec<(CatalogId, PullEvent)> {
        self.lock()
            .iter()
            .map(|(id, r)| {
                (
                    id.clone(),
                    r.last.lock().unwrap_or_else(|p| p.into_inner()).clone(),
                )
            })
            .collect()
    }
}

impl Running {
    fn publish(&self, event: PullEvent) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        *last = event.clone();
        // No receiver is fine: every tab may have closed.
        let _ = self.tx.send(event);
    }

    /// The newest event and a receiver of the ones after it, taken together so none is missed.
    fn subscribe(&self) -> (PullEvent, broadcast::Receiver<PullEvent>) {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        (last.clone(), self.tx.subscribe())
    }
}

/// Starts the pull of `id`, or joins the one running; returns its newest event and the stream after it.
pub fn start_or_join(
    state: &AppState,
    id: &CatalogId,
    entry: &ModelEntry,
) -> (PullEvent, broadcast::Receiver<PullEvent>) {
    let pulls = &state.inner.pulls;
    let mut running = pulls.lock();
    if let Some(r) = running.get(id) {
        return r.subscribe();
    }
    let (tx, rx) = broadcast::channel(256);
    let (downloaded, total) = match entry.status {
        ArtifactStatus::Downloading {
            downloaded_bytes,
            total_bytes,
        } => (downloaded_bytes, total_bytes),
        _ => (0, Some(entry.size).filter(|s| *s > 0)),
    };
    let first = PullEvent::Progress {
        downloaded_bytes: downloaded,
        total_bytes: total,
        bytes_per_second: 0.0,
        phase: "downloading",
    };
    let r = Arc::new(Running {
        last: Mutex::new(first.clone()),
        tx,
        cancel: AtomicBool::new(false),
    });
    running.insert(id.clone(), r.clone());
    drop(running);
    let state = state.clone();
    let id = id.clone();
    std::thread::spawn(move || {
        let end = run_pull(&state, &id, &r, total);
        // Leave the map first, then publish: a tab joining after this starts a fresh pull (which finds
        // the entry available), and one that joined before gets the final event.
        state.inner.pulls.lock().remove(&id);
        r.publish(end);
    });
    (first, rx)
}

/// Runs one pull on this thread and returns its final event.
fn run_pull(state: &AppState, id: &CatalogId, r: &Running, total: Option<u64>) -> PullEvent {
    let catalog = match state.catalog() {
        Ok(c) => c,
        Err(e) => return PullEvent::Error { message: e.message },
    };
    let started = Instant::now();
    let mut first_seen: Option<u64> = None;
    let mut last_sent = Instant::now() - Duration::from_secs(1);
    let mut latest = 0u64;
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        ops::pull_with_progress(&catalog, &state.inner.sources, id, &mut |n| {
            latest = n;
            if r.cancel.load(Ordering::SeqCst) {
                std::panic::resume_unwind(Box::new(Cancelled));
            }
            let base = *first_seen.get_or_insert(n);
            let complete = total.is_some_and(|t| n >= t);
            // A few events a second is smooth enough and keeps slow tabs from lagging behind.
            if complete || last_sent.elapsed() >= Duration::from_millis(100) {
                last_sent = Instant::now();
                let secs = started.elapsed().as_secs_f64().max(1e-3);
                r.publish(PullEvent::Progress {
                    downloaded_bytes: n,
                    total_bytes: total,
                    bytes_per_second: (n.saturating_sub(base)) as f64 / secs,
                    phase: if complete { "verifying" } else { "downloading" },
                });
            }
        })
    }));
    match outcome {
        Ok(Ok(entry)) if entry.status.is_available() => PullEvent::Done {
            entry: Box::new(entry),
        },
        Ok(Ok(entry)) => PullEvent::Error {
            message: match entry.status {
                ArtifactStatus::Failed { error } => error,
                _ => format!("{id} did not verify; run the pull again"),
            },
        },
        Ok(Err(e)) => PullEvent::Error {
            message: ApiError::from(e).message,
        },
        Err(payload) if payload.is::<Cancelled>() => {
            // Keep what arrived: the next pull resumes from the partial files.
            let _ = catalog.update(id, |e| {
                e.status = ArtifactStatus::Downloading {
                    downloaded_bytes: latest,
                    total_bytes: total,
                };
                e.updated_at = ops::now();
            });
            PullEvent::Cancelled {
                downloaded_bytes: latest,
            }
        }
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

fn to_sse(event: &PullEvent) -> Event {
    Event::default()
        .event(event.name())
        .json_data(event)
        .unwrap_or_else(|_| Event::default().event("error").data("{}"))
}

/// `POST /api/pull?id=`: starts (or joins) the pull of a stored entry and streams its events until
/// `done`, `error` or `cancelled`. An entry already available answers `done` at once.
pub async fn pull(
    State(state): State<AppState>,
    Query(q): Query<IdQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = parse_id(&q.id)?;
    let entry = {
        let state = state.clone();
        let id = id.clone();
        super::blocking(move || {
            let catalog = state.catalog()?;
            catalog.get(&id)?.ok_or_else(|| {
                ApiError::from(ops::OpsError::Unknown {
                    id: id.clone(),
                    home: catalog.home().to_path_buf(),
                })
            })
        })
        .await?
    };
    let (first, rx) = if entry.status.is_available() && !state.inner.pulls.is_running(&id) {
        let (tx, rx) = broadcast::channel(1);
        drop(tx);
        (
            PullEvent::Done {
                entry: Box::new(entry),
            },
            rx,
        )
    } else {
        start_or_join(&state, &id, &entry)
    };
    let stream =
        futures_util::stream::unfold((Some(first), rx, false), |(pending, mut rx, ended)| async move {
            if ended {
                return None;
            }
            let event = match pending {
                Some(e) => e,
                None => loop {
                    match rx.recv().await {
                        Ok(e) => break e,
                        // A slow reader skips to the newest progress.
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                },
            };
            let end = event.is_final();
            Some((Ok(to_sse(&event)), (None, rx, end)))
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// `DELETE /api/pull?id=`: cancels a running pull (its streams end with `cancelled`).
pub async fn cancel(
    State(state): State<AppState>,
    Query(q): Query<IdQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_id(&q.id)?;
    if state.inner.pulls.cancel(&id) {
        Ok(Json(serde_json::json!({ "cancelled": true })))
    } else {
        Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            format!("no pull of {id} is running"),
        ))
    }
}

/// `GET /api/pulls`: the pulls running now and their newest event (a reopened tab shows them).
pub async fn list(State(state): State<AppState>) -> Json<Vec<serde_json::Value>> {
    Json(
        state
            .inner
            .pulls
            .snapshot()
            .into_iter()
            .map(|(id, event)| serde_json::json!({ "id": id.to_string(), "last": event }))
            .collect(),
    )
}
