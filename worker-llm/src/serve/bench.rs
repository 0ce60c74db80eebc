//! What the server costs: time to first token and decode tokens/s of the same greedy generation run in
//! process and through `POST /v1/generate` on loopback, runs interleaved in pairs; the medians of the
//! paired differences are compared against the goal (at most +5 ms to the first token, at most -2%
//! throughput).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use artifacts_contract::DeviceKind;
use tokio_util::sync::CancellationToken;
use worker_runtime::ServeArgs;

use super::backend::LlmBackend;
use crate::batch::engine::{Request, SeqEvent, generate_blocking};
use crate::error::LlmError;
use crate::params::{GenerationParams, Prompt};

/// Why a benchmark could not finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The engine failed.
    #[error(transparent)]
    Llm(#[from] LlmError),
    /// The loopback request failed.
    #[error("request to the loopback server: {0}")]
    Http(#[from] reqwest::Error),
    /// The server failed.
    #[error(transparent)]
    Serve(#[from] worker_runtime::ServeError),
    /// Binding the loopback port failed.
    #[error("loopback server: {0}")]
    Io(#[from] std::io::Error),
    /// A run produced nothing to measure.
    #[error("a run generated no token, or the stream was not UTF-8")]
    NoTokens,
    /// A task of the benchmark panicked.
    #[error("a benchmark task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What to generate, and how often (`worker-llm bench-serve` flags).
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The prompt, continued as plain text.
    pub prompt: String,
    /// Tokens per run (end-of-sequence is ignored, so every run generates exactly this many).
    pub max_tokens: u32,
    /// Measured runs on each side, after one warm-up each.
    pub runs: usize,
}

/// One run's figures.
#[derive(Debug, Clone, Copy)]
struct Run {
    ttft_ms: f64,
    tokens_per_s: f64,
}

/// Both sides' runs, paired by round (the two runs of a round are adjacent in time).
#[derive(Debug, Clone)]
pub struct BenchReport {
    local: Vec<Run>,
    remote: Vec<Run>,
}

impl BenchReport {
    /// Median over rounds of (server - in process) time to first token, in ms: pairing cancels the
    /// drift of a machine other work is loading.
    pub fn ttft_added_ms(&self) -> f64 {
        median(self.pairs(|here, there| there.ttft_ms - here.ttft_ms))
    }

    /// Median over rounds of the server's decode speed relative to in process, in percent (negative:
    /// the server is slower).
    pub fn throughput_change_percent(&self) -> f64 {
        median(self.pairs(|here, there| (there.tokens_per_s / here.tokens_per_s - 1.0) * 100.0))
    }

    fn pairs(&self, f: impl Fn(&Run, &Run) -> f64) -> Vec<f64> {
        self.local
            .iter()
            .zip(&self.remote)
            .map(|(here, there)| f(here, there))
            .collect()
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let column = |runs: &[Run], pick: fn(&Run) -> f64| median(runs.iter().map(pick).collect());
        let best = |runs: &[Run], pick: fn(&Run) -> f64, low: bool| {
            let values = runs.iter().map(pick);
            if low {
                values.fold(f64::INFINITY, f64::min)
            } else {
                values.fold(0.0, f64::max)
            }
        };
        let ttft = |run: &Run| run.ttft_ms;
        let speed = |run: &Run| run.tokens_per_s;
        let (added, change) = (self.ttft_added_ms(), self.throughput_change_percent());
        writeln!(
            f,
            "{:<26}{:>14}{:>18}{:>16}   goal",
            "", "in process", "through server", "paired median"
        )?;
        writeln!(
            f,
            "{:<26}{:>11.2} ms{:>15.2} ms{:>+13.2} ms   <= +5 ms {}",
            "time to first token",
            column(&self.local, ttft),
            column(&self.remote, ttft),
            added,
            if added <= 5.0 { "(met)" } else { "(MISSED)" }
        )?;
        writeln!(
            f,
            "{:<26}{:>11.2} ms{:>15.2} ms",
            "  best run",
            best(&self.local, ttft, true),
            best(&self.remote, ttft, true)
        )?;
        writeln!(
            f,
            "{:<26}{:>14.1}{:>18.1}{:>+14.2} %   >= -2 % {}",
            "decode tokens/s",
            column(&self.local, speed),
            column(&self.remote, speed),
            change,
            if change >= -2.0 { "(met)" } else { "(MISSED)" }
        )?;
        write!(
            f,
            "{:<26}{:>14.1}{:>18.1}",
            "  best run",
            best(&self.local, speed, false),
            best(&self.remote, speed, false)
        )
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn params(options: &BenchOptions) -> GenerationParams {
    GenerationParams {
        temperature: Some(0.0),
        max_tokens: Some(options.max_tokens),
        ignore_eos: true,
        ..GenerationParams::default()
    }
}

fn in_process(backend: &LlmBackend, options: &BenchOptions) -> Result<Run, BenchError> {
    let start = Instant::now();
    let tokens = backend.prompts().encode(&Prompt::Text(options.prompt.clone()))?;
    let request = Request {
        tokens,
        params: params(options),
        n: 1,
        cancel: CancellationToken::new(),
    };
    let (mut first, mut last, mut count) = (None, start, 0usize);
    generate_blocking(backend.engine(), request, |event| {
        if let SeqEvent::Token { .. } = event {
            let now = Instant::now();
            first.get_or_insert(now);
            last = now;
            count += 1;
        }
    })?;
    finish(start, first, last, count)
}

async fn through_server(
    client: &reqwest::Client,
    url: &str,
    options: &BenchOptions,
) -> Result<Run, BenchError> {
    let body = serde_json::json!({
        "prompt": options.prompt,
        "max_tokens": options.max_tokens,
        "temperature": 0.0,
        "ignore_eos": true,
    });
    let start = Instant::now();
    let mut response = client.post(url).json(&body).send().await?.error_for_status()?;
    let (mut first, mut last, mut count) = (None, start, 0usize);
    let mut buffer = String::new();
    while let Some(chunk) = response.chunk().await? {
        let now = Instant::now();
        buffer.push_str(std::str::from_utf8(&chunk).map_err(|_| BenchError::NoTokens)?);
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if block.lines().any(|line| line == "event: output") {
                first.get_or_insert(now);
                last = now;
                count += 1;
            }
        }
    }
    finish(start, first, last, count)
}

fn finish(start: Instant, first: Option<Instant>, last: Instant, count: usize) -> Result<Run, BenchError> {
    let first = first.ok_or(BenchError::NoTokens)?;
    let decode = (last - first).as_secs_f64();
    Ok(Run {
        ttft_ms: (first - start).as_secs_f64() * 1e3,
        tokens_per_s: if decode > 0.0 {
            (count - 1) as f64 / decode
        } else {
            f64::NAN
        },
    })
}

/// Runs both sides with the loaded `backend`, one warm-up round then `runs` rounds, and returns them.
pub async fn run(
    backend: LlmBackend,
    model_id: &str,
    device: DeviceKind,
    options: &BenchOptions,
) -> Result<BenchReport, BenchError> {
    let args = ServeArgs {
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        ..ServeArgs::default()
    };
    let stop = CancellationToken::new();
    let server = super::server(args, model_id, device).shutdown_on(stop.clone().cancelled_owned());
    let listener = server.bind().await?;
    let base = format!("http://{}", listener.local_addr()?);
    let served = backend.clone();
    let handle = tokio::spawn(server.serve(listener, move || Ok(served)));
    let client = reqwest::Client::new();
    for _ in 0..500 {
        if client
            .get(format!("{base}/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let url = format!("{base}/v1/generate");

    let (mut local, mut remote) = (Vec::new(), Vec::new());
    for round in 0..=options.runs {
        // Alternate which side goes first, so neither always runs on a cache the other warmed.
        let (here, there) = if round % 2 == 0 {
            let here = in_process_blocking(&backend, options).await?;
            (here, through_server(&client, &url, options).await?)
        } else {
            let there = through_server(&client, &url, options).await?;
            (in_process_blocking(&backend, options).await?, there)
        };
        if round > 0 {
            local.push(here);
            remote.push(there);
        }
    }
    stop.cancel();
    handle.await??;
    Ok(BenchReport { local, remote })
}

async fn in_process_blocking(backend: &LlmBackend, options: &BenchOptions) -> Result<Run, BenchError> {
    let (backend, options) = (backend.clone(), options.clone());
    tokio::task::spawn_blocking(move || in_process(&backend, &options)).await?
}
