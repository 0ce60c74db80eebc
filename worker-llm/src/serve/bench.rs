//! What the server costs: time to first token and decode tokens/s of the same greedy generation run in
//! process and through `POST /v1/generate` on loopback, runs interleaved, medians compared against the
//! goal (at most +5 ms to the first token, at most -2% throughput).

use std::net::{IpAddr, Ipv4Addr};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use artifacts_contract::DeviceKind;
use tokio_util::sync::CancellationToken;
use worker_runtime::ServeArgs;

use super::backend::LlmBackend;
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
    pub max_tokens: usize,
    /// Measured runs on each side, after one warm-up each.
    pub runs: usize,
}

/// One run's figures.
#[derive(Debug, Clone, Copy)]
struct Run {
    ttft_ms: f64,
    tokens_per_s: f64,
}

/// Medians of both sides.
#[derive(Debug, Clone, Copy)]
pub struct BenchReport {
    /// Time to first token in process, ms.
    pub in_process_ttft_ms: f64,
    /// Time to first token through the server, ms.
    pub server_ttft_ms: f64,
    /// Decode speed in process, tokens/s.
    pub in_process_tokens_per_s: f64,
    /// Decode speed through the server, tokens/s.
    pub server_tokens_per_s: f64,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ttft_added = self.server_ttft_ms - self.in_process_ttft_ms;
        let throughput = (self.server_tokens_per_s / self.in_process_tokens_per_s - 1.0) * 100.0;
        writeln!(
            f,
            "{:<24}{:>14}{:>18}{:>14}   goal",
            "", "in process", "through server", "difference"
        )?;
        writeln!(
            f,
            "{:<24}{:>11.2} ms{:>15.2} ms{:>+11.2} ms   <= +5 ms {}",
            "time to first token",
            self.in_process_ttft_ms,
            self.server_ttft_ms,
            ttft_added,
            if ttft_added <= 5.0 { "(met)" } else { "(MISSED)" }
        )?;
        write!(
            f,
            "{:<24}{:>14.1}{:>18.1}{:>+12.2} %   >= -2 % {}",
            "decode tokens/s",
            self.in_process_tokens_per_s,
            self.server_tokens_per_s,
            throughput,
            if throughput >= -2.0 { "(met)" } else { "(MISSED)" }
        )
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
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
    let prompt = Prompt::Text(options.prompt.clone());
    let params = params(options);
    let start = Instant::now();
    let (mut first, mut last, mut count) = (None, start, 0usize);
    backend.with_engine(|engine| {
        engine.generate(&prompt, &params, |_| {
            let now = Instant::now();
            first.get_or_insert(now);
            last = now;
            count += 1;
            ControlFlow::Continue(())
        })
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

/// Runs both sides with the loaded `backend` and returns the medians.
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
        let (backend, local_options) = (backend.clone(), options.clone());
        let here = tokio::task::spawn_blocking(move || in_process(&backend, &local_options)).await??;
        let there = through_server(&client, &url, options).await?;
        if round > 0 {
            local.push(here);
            remote.push(there);
        }
    }
    stop.cancel();
    handle.await??;
    Ok(BenchReport {
        in_process_ttft_ms: median(local.iter().map(|run| run.ttft_ms).collect()),
        server_ttft_ms: median(remote.iter().map(|run| run.ttft_ms).collect()),
        in_process_tokens_per_s: median(local.iter().map(|run| run.tokens_per_s).collect()),
        server_tokens_per_s: median(remote.iter().map(|run| run.tokens_per_s).collect()),
    })
}
