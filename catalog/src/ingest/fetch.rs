//! The request sequences of describing a model, without I/O: which URL to fetch next, with which Range
//! and size limit, what an HTTP refusal means, and when the entry is complete. The native client
//! (`sources`, blocking) and catalog-wasm (`fetch`, async) only perform the requests these machines
//! ask for, so the two can never disagree on the order, the revision, the caps or the error messages.
//!
//! The loop is here too: [`run`] (async, for the browser's `fetch`) and [`run_blocking`] (the native
//! client) feed each body back to the machine and, on a refused request, ask the machine what the HTTP
//! status means here before reporting the driver's own error.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use artifacts_contract::{CatalogId, ModelEntry};
use chrono::{DateTime, Utc};

use super::gguf::{self, GgufHeader};
use super::hf::{self, FetchPlan, ModelInfo};
use super::hf_files::FetchedFiles;
use super::{IngestError, NameKind, check_name};

/// Largest model-info or search answer accepted (a big model info is a few hundred KB).
pub const JSON_LIMIT: u64 = 64 << 20;
/// Largest config file fetched whole (tokenizer configs with long templates run to a few hundred KB).
pub const CONFIG_LIMIT: u64 = 16 << 20;
/// Largest GGUF header read over HTTP; the parser refuses larger metadata anyway.
pub const GGUF_HEADER_LIMIT: u64 = 256 << 20;

/// One GET the driver performs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The URL.
    pub url: String,
    /// Bytes `start..=end` only (HTTP Range); a server may ignore it and send the whole body.
    pub range: Option<(u64, u64)>,
    /// Most bytes to accept: a longer body is an error, except for a Range read, which stops there.
    pub limit: u64,
    /// The answer must be JSON (an HTML login page is not model info).
    pub json: bool,
}

/// What a machine wants next.
#[derive(Debug)]
pub enum Step<T> {
    /// Perform this request and pass its body to the next `step`.
    Fetch(Request),
    /// Finished.
    Done(T),
}

/// A request sequence: asks for requests until it has its result.
pub trait Machine {
    /// What it produces.
    type Output;
    /// Advances with the body of the last request (`None` on the first call).
    fn step(&mut self, reply: Option<Vec<u8>>) -> Result<Step<Self::Output>, IngestError>;
    /// What an HTTP error status means for the request in flight, when it means more than the status.
    fn refusal(&self, status: u16) -> Option<IngestError>;
}

/// An error of a driver that may carry the HTTP status the server answered.
pub trait HttpStatus {
    /// The status, when the server answered with one.
    fn http_status(&self) -> Option<u16>;
}

/// Runs a machine, `perform` doing each request.
pub async fn run<M, E, F, Fut>(mut machine: M, mut perform: F) -> Result<M::Output, E>
where
    M: Machine,
    E: From<IngestError> + HttpStatus,
    F: FnMut(Request) -> Fut,
    Fut: Future<Output = Result<Vec<u8>, E>>,
{
    let mut reply = None;
    loop {
        match machine.step(reply.take())? {
            Step::Done(out) => return Ok(out),
            Step::Fetch(request) => match perform(request).await {
                Ok(body) => reply = Some(body),
                Err(e) => {
                    return Err(match e.http_status().and_then(|s| machine.refusal(s)) {
                        Some(refusal) => refusal.into(),
                        None => e,
                    });
                }
            },
        }
    }
}

/// Runs a machine whose requests block (the native client): [`run`] without an executor, since a
/// future that never waits is ready on its first poll.
pub fn run_blocking<M, E>(
    machine: M,
    mut perform: impl FnMut(Request) -> Result<Vec<u8>, E>,
) -> Result<M::Output, E>
where
    M: Machine,
    E: From<IngestError> + HttpStatus,
{
    let future = pin!(run(machine, |request| std::future::ready(perform(request))));
    match future.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => unreachable!("every request completed before it was awaited"),
    }
}

/// Reads a GGUF header with Range requests, growing the read as the parser asks, up to
/// [`GGUF_HEADER_LIMIT`].
#[derive(Debug, Clone)]
pub struct GgufRead {
    url: String,
    size: u64,
    limit: u64,
}

impl GgufRead {
    /// A read of the header of the GGUF file at `url`.
    pub fn new(url: String) -> Self {
        Self::with_limit(url, GGUF_HEADER_LIMIT)
    }

    /// A read that refuses headers longer than `limit` bytes (tests use a small one).
    pub fn with_limit(url: String, limit: u64) -> Self {
        GgufRead {
            url,
            size: gguf::FIRST_READ_BYTES.min(limit),
            limit,
        }
    }

    /// The Range request to perform now.
    pub fn request(&self) -> Request {
        Request {
            url: self.url.clone(),
            range: Some((0, self.size - 1)),
            limit: self.size,
            json: false,
        }
    }

    fn read(&mut self, bytes: &[u8]) -> Result<Step<GgufHeader>, IngestError> {
        let bytes = &bytes[..bytes.len().min(self.size as usize)];
        match gguf::parse_header(bytes) {
            Ok(header) => Ok(Step::Done(header)),
            Err(err) => match gguf::next_read_size(&err) {
                // A shorter answer than asked for is the whole file: asking again cannot help.
                Some(next) if bytes.len() as u64 >= self.size && next > self.size => {
                    if next > self.limit {
                        return Err(IngestError::Gguf(gguf::GgufError::Absurd {
                            what: "the header".into(),
                            claimed: format!("{next} bytes (the limit is {})", self.limit),
                        }));
                    }
                    self.size = next;
                    Ok(Step::Fetch(self.request()))
                }
                _ => Err(err.into()),
            },
        }
    }
}

impl Machine for GgufRead {
    type Output = GgufHeader;

    /// The header, or the next request when more is needed.
    fn step(&mut self, reply: Option<Vec<u8>>) -> Result<Step<GgufHeader>, IngestError> {
        match reply {
            None => Ok(Step::Fetch(self.request())),
            Some(bytes) => self.read(&bytes),
        }
    }

    fn refusal(&self, _status: u16) -> Option<IngestError> {
        None
    }
}

/// Describes a HuggingFace model: its model info, then the metadata files its plan names, then the
/// GGUF header when it is a GGUF repo, all at the resolved commit (the sha the model info answers,
/// else the revision asked for, else `main`), so every file comes from one commit.
#[derive(Debug)]
pub struct HfFetch {
    endpoint: String,
    id: CatalogId,
    now: DateTime<Utc>,
    state: State,
}

#[derive(Debug)]
enum State {
    Info,
    Files {
        info: Box<ModelInfo>,
        plan: FetchPlan,
        rev: String,
        files: FetchedFiles,
    },
    Gguf {
        info: Box<ModelInfo>,
        files: FetchedFiles,
        read: GgufRead,
    },
    Done,
}

impl HfFetch {
    /// The fetch of `id` (an `hf:` id) from the Hub at `endpoint`.
    pub fn new(endpoint: &str, id: &CatalogId, now: DateTime<Utc>) -> Result<Self, IngestError> {
        let CatalogId::HuggingFace { revision, .. } = id else {
            return Err(IngestError::WrongScheme {
                id: id.to_string(),
                expected: "hf:",
            });
        };
        if let Some(rev) = revision {
            check_name(NameKind::Revision, rev)?;
        }
        Ok(HfFetch {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            id: id.clone(),
            now,
            state: State::Info,
        })
    }

    fn repo(&self) -> &str {
        match &self.id {
            CatalogId::HuggingFace { repo, .. } => repo,
            _ => unreachable!("checked in new"),
        }
    }

    fn revision(&self) -> Option<&str> {
        match &self.id {
            CatalogId::HuggingFace { revision, .. } => revision.as_deref(),
            _ => None,
        }
    }

    fn file_request(&self, rev: &str, name: &str) -> Request {
        Request {
            url: hf::file_url(&self.endpoint, self.repo(), rev, name),
            range: None,
            limit: CONFIG_LIMIT,
            json: false,
        }
    }

    /// The next metadata file to fetch, else the GGUF header, else the entry.
    fn next_file(
        &self,
        info: Box<ModelInfo>,
        plan: FetchPlan,
        rev: String,
        files: FetchedFiles,
    ) -> Result<(State, Step<ModelEntry>), IngestError> {
        if let Some(name) = plan.metadata_files.get(files.len()) {
            let request = self.file_request(&rev, name);
            return Ok((
                State::Files {
                    info,
                    plan,
                    rev,
                    files,
                },
                Step::Fetch(request),
            ));
        }
        if let Some(file) = &plan.gguf_file {
            let read = GgufRead::new(hf::file_url(&self.endpoint, self.repo(), &rev, file));
            let request = read.request();
            return Ok((State::Gguf { info, files, read }, Step::Fetch(request)));
        }
        let entry = hf::build_entry(&self.id, &info, &files, None, self.now)?;
        Ok((State::Done, Step::Done(entry)))
    }
}

impl Machine for HfFetch {
    type Output = ModelEntry;

    /// A 404 on the model info is "no such model"; a 401/403 on a gated repo's files is "accept its terms".
    fn refusal(&self, status: u16) -> Option<IngestError> {
        match (&self.state, status) {
            (State::Info, 404) => Some(IngestError::NotFound(format!(
                "no model {} on the Hub{}",
                self.id,
                self.revision()
                    .map(|r| format!(" at revision {r}"))
                    .unwrap_or_default()
            ))),
            (State::Files { info, .. } | State::Gguf { info, .. }, 401 | 403) if is_gated(info) => {
                Some(IngestError::Gated {
                    id: self.id.to_string(),
                    repo: self.repo().to_string(),
                })
            }
            _ => None,
        }
    }

    /// The next request, or the entry.
    fn step(&mut self, reply: Option<Vec<u8>>) -> Result<Step<ModelEntry>, IngestError> {
        let state = std::mem::replace(&mut self.state, State::Done);
        let (state, step) = match (state, reply) {
            (State::Info, None) => {
                let request = Request {
                    url: hf::model_info_url(&self.endpoint, self.repo(), self.revision()),
                    range: None,
                    limit: JSON_LIMIT,
                    json: true,
                };
                (State::Info, Step::Fetch(request))
            }
            (State::Info, Some(body)) => {
                let info = hf::parse_model_info(&body)?;
                let plan = hf::plan_fetch(&self.id, &info)?;
                let rev = info
                    .sha
                    .clone()
                    .or_else(|| self.revision().map(str::to_string))
                    .unwrap_or_else(|| "main".into());
                self.next_file(Box::new(info), plan, rev, FetchedFiles::new())?
            }
            (
                State::Files {
                    info,
                    plan,
                    rev,
                    mut files,
                },
                Some(body),
            ) => {
                let name = plan.metadata_files[files.len()].clone();
                files.insert(name, body);
                self.next_file(info, plan, rev, files)?
            }
            (
                State::Gguf {
                    info,
                    files,
                    mut read,
                },
                Some(body),
            ) => match read.read(&body)? {
                Step::Fetch(request) => (State::Gguf { info, files, read }, Step::Fetch(request)),
                Step::Done(header) => {
                    let entry = hf::build_entry(&self.id, &info, &files, Some(&header), self.now)?;
                    (State::Done, Step::Done(entry))
                }
            },
            (state, _) => {
                self.state = state;
                return Err(IngestError::Json {
                    what: "HuggingFace fetch sequence".into(),
                    message: "a reply came with no request pending (a bug in the driver)".into(),
                });
            }
        };
        self.state = state;
        Ok(step)
    }
}

fn is_gated(info: &ModelInfo) -> bool {
    !matches!(
        info.gated,
        serde_json::Value::Bool(false) | serde_json::Value::Null
    )
}

#[cfg(test)]
mod tests;
