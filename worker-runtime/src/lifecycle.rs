//! What happens around serving: the process's tokio runtime and logs, the shutdown signal, and the
//! orchestrator hooks (a callback once ready, a periodic heartbeat) that never stop the worker.

use std::future::Future;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::args::ServeArgs;
use crate::backend::Backend;
use crate::server::{Shared, WorkerInfo};

/// Sets up `tracing` logs on stderr, filtered by `RUST_LOG` (default `info`); call once from `main`.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Runs a worker's async `main` on a multi-threaded runtime that does not wait, at exit, for a
/// blocking job thread that is still computing its last step.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts on any supported OS");
    let output = runtime.block_on(future);
    runtime.shutdown_timeout(Duration::from_secs(1));
    output
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is called, not when polled.
pub fn terminate_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(
            |err| tracing::warn!(error = %err, "cannot listen for SIGTERM; only Ctrl-C stops the worker"),
        )
        .ok();
    async move {
        #[cfg(unix)]
        {
            let sigterm = async {
                match terminate {
                    Some(mut terminate) => {
                        terminate.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = sigterm => tracing::info!("SIGTERM received"),
                _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C received"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Ctrl-C received");
        }
    }
}

/// The body of the `--callback-url` POST.
#[derive(Debug, Serialize)]
struct ReadyCallback<'a> {
    event: &'static str,
    #[serde(flatten)]
    info: &'a WorkerInfo,
    host: String,
    port: u16,
}

/// The body of each `--heartbeat-url` POST.
#[derive(Debug, Serialize)]
struct Heartbeat<'a> {
    event: &'static str,
    #[serde(flatten)]
    info: &'a WorkerInfo,
    port: u16,
    ready: bool,
    queue_depth: i64,
    jobs_running: i64,
    uptime_secs: f64,
}

/// Starts the ready callback and the heartbeat, if configured; both stop when `stop` is cancelled.
pub(crate) fn spawn_hooks<B: Backend>(
    args: &ServeArgs,
    shared: Arc<Shared<B>>,
    address: SocketAddr,
    stop: CancellationToken,
) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build();
    let client = match client {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(error = %err, "cannot build an HTTP client; no callback or heartbeat");
            return;
        }
    };
    if let Some(url) = args.callback_url.clone() {
        let (client, shared, stop) = (client.clone(), shared.clone(), stop.clone());
        tokio::spawn(async move {
            let body = ReadyCallback {
                event: "ready",
                info: &shared.info,
                host: address.ip().to_string(),
                port: address.port(),
            };
            tokio::select! {
                () = post_with_retries(&client, &url, &body) => {}
                () = stop.cancelled() => {}
            }
        });
    }
    if let Some(url) = args.heartbeat_url.clone() {
        let every = Duration::from_secs(args.heartbeat_secs.max(1));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = stop.cancelled() => return,
                }
                let body = Heartbeat {
                    event: "heartbeat",
                    info: &shared.info,
                    port: address.port(),
                    ready: shared.is_ready(),
                    queue_depth: shared.metrics.queue_depth.get(),
                    jobs_running: shared.metrics.jobs_running.get(),
                    uptime_secs: shared.started.elapsed().as_secs_f64(),
                };
                // A missed heartbeat is retried by the next one.
                if let Err(err) = post(&client, &url, &body).await {
                    tracing::warn!(%url, error = %err, "heartbeat failed");
                }
            }
        });
    }
}

/// Attempts at the ready callback before giving up (about 4 minutes with the backoff).
const CALLBACK_ATTEMPTS: u32 = 12;

async fn post_with_retries(client: &reqwest::Client, url: &str, body: &impl Serialize) {
    let mut delay = Duration::from_millis(500);
    for attempt in 1..=CALLBACK_ATTEMPTS {
        match post(client, url, body).await {
            Ok(()) => {
                tracing::info!(%url, attempt, "ready callback delivered");
                return;
            }
            Err(err) => tracing::warn!(%url, attempt, error = %err, "ready callback failed; retrying"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
    tracing::error!(%url, "ready callback failed {CALLBACK_ATTEMPTS} times; giving up (the worker keeps serving)");
}

async fn post(client: &reqwest::Client, url: &str, body: &impl Serialize) -> Result<(), reqwest::Error> {
    client.post(url).json(body).send().await?.error_for_status()?;
    Ok(())
}
