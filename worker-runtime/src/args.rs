//! The command-line flags every worker's `serve` command shares; each worker flattens [`ServeArgs`]
//! into its own command next to its model flags.

use std::net::IpAddr;
use std::time::Duration;

/// Where and how a worker serves: address, access, queue, orchestrator hooks, shutdown.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1", env = "WORKER_HOST")]
    pub host: IpAddr,
    /// Port to listen on (0 picks a free one; the log says which).
    #[arg(long, default_value_t = 8080, env = "WORKER_PORT")]
    pub port: u16,
    /// Require `Authorization: Bearer <key>` on every route but /health.
    #[arg(long, env = "WORKER_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Jobs that run at once on the device.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,
    /// Jobs that may wait for a free slot; beyond that a request is refused at once with 503.
    #[arg(long, default_value_t = 8)]
    pub max_waiting: u32,
    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// URL that receives a POST with this worker's id, model, device and port once the model is loaded.
    #[arg(long, env = "WORKER_CALLBACK_URL")]
    pub callback_url: Option<String>,
    /// URL that receives a periodic POST with this worker's state.
    #[arg(long, env = "WORKER_HEARTBEAT_URL")]
    pub heartbeat_url: Option<String>,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_secs: u64,
    /// This worker's id in callbacks and heartbeats (default: a random UUID).
    #[arg(long, env = "WORKER_ID")]
    pub worker_id: Option<String>,
    /// On SIGTERM, seconds the running jobs get to finish before they are cancelled.
    #[arg(long, default_value_t = 10)]
    pub shutdown_grace_secs: u64,
}

impl ServeArgs {
    /// The shutdown grace as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

impl Default for ServeArgs {
    /// The flags' defaults, for tests and embedders that build a server without a command line.
    fn default() -> Self {
        ServeArgs {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 8080,
            api_key: None,
            concurrency: 1,
            max_waiting: 8,
            max_body_bytes: 2 * 1024 * 1024,
            callback_url: None,
            heartbeat_url: None,
            heartbeat_secs: 10,
            worker_id: None,
            shutdown_grace_secs: 10,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        let matches =
            Cli::command().try_get_matches_from(std::iter::once("worker").chain(args.iter().copied()))?;
        Ok(Cli::from_arg_matches(&matches)?.serve)
    }

    #[test]
    fn defaults_match_the_default_impl() {
        let parsed = parse(&[]).unwrap();
        let default = ServeArgs::default();
        assert_eq!(parsed.port, default.port);
        assert_eq!(parsed.concurrency, default.concurrency);
        assert_eq!(parsed.max_waiting, default.max_waiting);
        assert_eq!(parsed.max_body_bytes, default.max_body_bytes);
        assert_eq!(parsed.heartbeat_secs, default.heartbeat_secs);
        assert_eq!(parsed.shutdown_grace_secs, default.shutdown_grace_secs);
    }

    #[test]
    fn zero_concurrency_is_refused() {
        assert!(parse(&["--concurrency", "0"]).is_err());
        assert_eq!(parse(&["--concurrency", "2"]).unwrap().concurrency, 2);
    }
}
