//! The blocking HTTP client the sources share: statuses turned into errors a person can act on, retries
//! with backoff on rate limits, Range reads, and a token sent but never shown.

use std::io::Read;
use std::time::Duration;

use ureq::Agent;

/// Attempts on a 429 or 503 before giving up.
const MAX_ATTEMPTS: u32 = 4;

/// Why a request failed. Messages carry the URL (never a token) and what to do.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// 404.
    #[error("not found: {url}")]
    NotFound {
        /// The URL.
        url: String,
    },
    /// 401 or 403: a token is missing, wrong, or lacks access.
    #[error("access denied ({status}) to {url}{hint}")]
    Denied {
        /// The status.
        status: u16,
        /// The URL.
        url: String,
        /// What to do about it (which token to set).
        hint: String,
    },
    /// 429 after every retry.
    #[error("rate limited by {url} after {attempts} attempts; wait a minute and try again")]
    RateLimited {
        /// The URL.
        url: String,
        /// Attempts made.
        attempts: u32,
    },
    /// Another non-success status.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The status.
        status: u16,
        /// The URL.
        url: String,
    },
    /// The body was not the expected kind (an HTML login page instead of JSON).
    #[error("{url} answered with content type {content_type:?}, expected {expected}")]
    ContentType {
        /// The URL.
        url: String,
        /// What came.
        content_type: String,
        /// What was expected.
        expected: &'static str,
    },
    /// The connection failed or broke off.
    #[error("cannot reach {url}: {message}")]
    Transport {
        /// The URL.
        url: String,
        /// The transport's message.
        message: String,
    },
    /// The body stopped arriving: no byte for the stall timeout. What arrived is kept for resuming.
    #[error("{url} sent no byte for {} s after {received} bytes; the partial file is kept: run the command again to resume", after.as_secs_f64())]
    Stalled {
        /// The URL.
        url: String,
        /// How long nothing arrived.
        after: Duration,
        /// Bytes received in this request before it stalled.
        received: u64,
    },
    /// A body larger than the caller allows.
    #[error("{url} sent more than {limit} bytes where a small document was expected")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: u64,
    },
}

impl HttpError {
    /// The HTTP status behind the error, when the server answered one.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::NotFound { .. } => Some(404),
            HttpError::Denied { status, .. } | HttpError::Status { status, .. } => Some(*status),
            HttpError::RateLimited { .. } => Some(429),
            _ => None,
        }
    }
}

/// One response, status already checked.
pub struct Response {
    /// The status (200 or 206).
    pub status: u16,
    /// `Content-Length`, when sent.
    pub content_length: Option<u64>,
    /// `Content-Type`, empty when not sent.
    pub content_type: String,
    /// The body, to read.
    pub body: Box<dyn Read + Send + Sync + 'static>,
}

/// How long a body may send nothing before the transfer is abandoned (and resumed on the next pull).
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A configured client for one source: its token and the hint shown on 401/403.
#[derive(Clone)]
pub struct HttpClient {
    agent: Agent,
    token: Option<String>,
    denied_hint: String,
    retry_base: Duration,
    stall_timeout: Duration,
}

/// The agent: connect and header timeouts, and `stall` as the longest wait for any one read.
fn agent(stall: Duration) -> Agent {
    Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(stall))
        .user_agent(concat!("open-model-catalog/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("HttpClient")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl HttpClient {
    /// A client sending `token` as a bearer token, and saying `denied_hint` on 401/403.
    pub fn new(token: Option<String>, denied_hint: impl Into<String>) -> Self {
        HttpClient {
            agent: agent(DEFAULT_STALL_TIMEOUT),
            token: token.filter(|t| !t.is_empty()),
            denied_hint: denied_hint.into(),
            retry_base: Duration::from_millis(500),
            stall_timeout: DEFAULT_STALL_TIMEOUT,
        }
    }

    /// Sets how long a body may send nothing before the request fails with [`HttpError::Stalled`]
    /// (a minute by default; tests use a second).
    pub fn with_stall_timeout(mut self, stall: Duration) -> Self {
        self.agent = agent(stall);
        self.stall_timeout = stall;
        self
    }

    /// The error for a failed body read: [`HttpError::Stalled`] when nothing arrived for the stall
    /// timeout, else a transport error; `received` is what this request had delivered.
    pub fn body_error(&self, url: &str, e: std::io::Error, received: u64) -> HttpError {
        let timed_out = e.kind() == std::io::ErrorKind::TimedOut
            || e.get_ref()
                .and_then(|inner| inner.downcast_ref::<ureq::Error>())
                .is_some_and(|inner| matches!(inner, ureq::Error::Timeout(_)));
        if timed_out {
            HttpError::Stalled {
                url: url.to_string(),
                after: self.stall_timeout,
                received,
            }
        } else {
            HttpError::Transport {
                url: url.to_string(),
                message: e.to_string(),
            }
        }
    }

    /// Shortens the wait between rate-limit retries (tests).
    pub fn with_retry_base(mut self, base: Duration) -> Self {
        self.retry_base = base;
        self
    }

    /// Whether a token is configured (for hints; the token itself stays private).
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// GETs a URL, optionally from byte `range_start` on (and up to `range_end` inclusive).
    pub fn get(&self, url: &str, range: Option<(u64, Option<u64>)>) -> Result<Response, HttpError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self.agent.get(url);
            if let Some(token) = &self.token {
                req = req.header("Authorization", &format!("Bearer {token}"));
            }
            if let Some((start, end)) = range {
                let value = match end {
                    Some(e) => format!("bytes={start}-{e}"),
                    None => format!("bytes={start}-"),
                };
                req = req.header("Range", &value);
            }
            let resp = req.call().map_err(|e| HttpError::Transport {
                url: url.to_string(),
                message: e.to_string(),
            })?;
            let status = resp.status().as_u16();
            match status {
                200..=299 => {
                    let content_length = resp
                        .headers()
                        .get("content-length")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok());
                    let content_type = resp
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let body = resp.into_body().into_reader();
                    return Ok(Response {
                        status,
                        content_length,
                        content_type,
                        body: Box::new(body),
                    });
                }
                429 | 503 if attempt < MAX_ATTEMPTS => {
                    let wait = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s.min(30)))
                        .unwrap_or(self.retry_base * 2u32.pow(attempt - 1));
                    std::thread::sleep(wait.min(self.retry_base * 60));
                }
                429 => {
                    return Err(HttpError::RateLimited {
                        url: url.to_string(),
                        attempts: attempt,
                    });
                }
                404 => return Err(HttpError::NotFound { url: url.to_string() }),
                401 | 403 => {
                    return Err(HttpError::Denied {
                        status,
                        url: url.to_string(),
                        hint: self.denied_hint.clone(),
                    });
                }
                _ => {
                    return Err(HttpError::Status {
                        status,
                        url: url.to_string(),
                    });
                }
            }
        }
    }

    /// GETs a small document whole, refusing bodies over `limit` bytes.
    pub fn get_bytes(
        &self,
        url: &str,
        range: Option<(u64, Option<u64>)>,
        limit: u64,
    ) -> Result<Vec<u8>, HttpError> {
        read_limited(url, self.get(url, range)?, limit)
    }

    /// GETs the first `len` bytes of a file with a Range request; fewer come back when the file is
    /// shorter, and a server that ignores Range is read only as far as needed.
    pub fn get_prefix(&self, url: &str, len: u64) -> Result<Vec<u8>, HttpError> {
        let resp = self.get(url, Some((0, Some(len.saturating_sub(1)))))?;
        let mut out = Vec::new();
        resp.body
            .take(len)
            .read_to_end(&mut out)
            .map_err(|e| HttpError::Transport {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        Ok(out)
    }

    /// GETs a JSON document, refusing other content types (an HTML error page is not model info).
    pub fn get_json(&self, url: &str) -> Result<Vec<u8>, HttpError> {
        self.get_json_limited(url, JSON_LIMIT)
    }

    /// GETs a JSON document of at most `limit` bytes, refusing other content types.
    pub fn get_json_limited(&self, url: &str, limit: u64) -> Result<Vec<u8>, HttpError> {
        let resp = self.get(url, None)?;
        let ct = resp.content_type.to_ascii_lowercase();
        if !ct.is_empty() && !ct.contains("json") {
            return Err(HttpError::ContentType {
                url: url.to_string(),
                content_type: resp.content_type,
                expected: "application/json",
            });
        }
        read_limited(url, resp, limit)
    }
}

fn read_limited(url: &str, resp: Response, limit: u64) -> Result<Vec<u8>, HttpError> {
    let mut out = Vec::new();
    resp.body
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| HttpError::Transport {
            url: url.to_string(),
            message: e.to_string(),
        })?;
    if out.len() as u64 > limit {
        return Err(HttpError::TooLarge {
            url: url.to_string(),
            limit,
        });
    }
    Ok(out)
}

pub use crate::ingest::fetch::JSON_LIMIT;
