use std::cell::RefCell;
use std::collections::HashMap;

use super::*;
use crate::ingest::gguf::{GgufValue, write_header};

/// A driver error: the status a fake server answered, or what the machine said.
#[derive(Debug)]
enum Fail {
    Status(u16),
    Ingest(IngestError),
}

impl From<IngestError> for Fail {
    fn from(e: IngestError) -> Self {
        Fail::Ingest(e)
    }
}

impl HttpStatus for Fail {
    fn http_status(&self) -> Option<u16> {
        match self {
            Fail::Status(s) => Some(*s),
            Fail::Ingest(_) => None,
        }
    }
}

/// A fake hub: bodies by URL (a status for the ones it refuses), honouring Range; it records requests.
struct Hub {
    bodies: HashMap<String, Result<Vec<u8>, u16>>,
    seen: RefCell<Vec<Request>>,
}

impl Hub {
    fn perform(&self, request: Request) -> Result<Vec<u8>, Fail> {
        self.seen.borrow_mut().push(request.clone());
        match self.bodies.get(&request.url) {
            None => Err(Fail::Status(404)),
            Some(Err(status)) => Err(Fail::Status(*status)),
            Some(Ok(body)) => Ok(match request.range {
                Some((start, end)) => body[start as usize..body.len().min(end as usize + 1)].to_vec(),
                None => body.clone(),
            }),
        }
    }

    fn urls(&self) -> Vec<String> {
        self.seen.borrow().iter().map(|r| r.url.clone()).collect()
    }
}

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn now() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
}

fn gguf_repo(gated: bool) -> Hub {
    let info = serde_json::json!({
        "id": "o/r", "sha": SHA, "gated": if gated { serde_json::json!("manual") } else { serde_json::json!(false) },
        "siblings": [{"rfilename": "tokenizer_config.json"}, {"rfilename": "m-Q4_K_M.gguf", "size": 100}]
    });
    let header = write_header(&[("general.architecture", GgufValue::String("llama".into()))], 0);
    let mut bodies = HashMap::new();
    bodies.insert(
        "http://hub/api/models/o/r/revision/v1?blobs=true".to_string(),
        Ok(info.to_string().into_bytes()),
    );
    bodies.insert(
        format!("http://hub/o/r/resolve/{SHA}/tokenizer_config.json"),
        if gated { Err(403) } else { Ok(b"{}".to_vec()) },
    );
    bodies.insert(format!("http://hub/o/r/resolve/{SHA}/m-Q4_K_M.gguf"), Ok(header));
    Hub {
        bodies,
        seen: RefCell::new(Vec::new()),
    }
}

#[test]
fn files_come_from_the_resolved_sha_not_the_revision_asked_for() {
    let hub = gguf_repo(false);
    let id: CatalogId = "hf:o/r@v1".parse().unwrap();
    let entry = run_blocking(HfFetch::new("http://hub/", &id, now()).unwrap(), |r| {
        hub.perform(r)
    })
    .unwrap();
    assert_eq!(entry.revision.as_deref(), Some(SHA));
    assert_eq!(
        hub.urls(),
        [
            "http://hub/api/models/o/r/revision/v1?blobs=true".to_string(),
            format!("http://hub/o/r/resolve/{SHA}/tokenizer_config.json"),
            format!("http://hub/o/r/resolve/{SHA}/m-Q4_K_M.gguf"),
        ]
    );
    let seen = hub.seen.borrow();
    assert!(seen[0].json && seen[0].limit == JSON_LIMIT);
    assert_eq!(seen[1].limit, CONFIG_LIMIT);
    assert_eq!(seen[2].range, Some((0, gguf::FIRST_READ_BYTES - 1)));
}

#[test]
fn a_gated_repo_refusing_its_files_says_to_accept_the_terms() {
    let hub = gguf_repo(true);
    let id: CatalogId = "hf:o/r@v1".parse().unwrap();
    let err = run_blocking(HfFetch::new("http://hub", &id, now()).unwrap(), |r| {
        hub.perform(r)
    })
    .unwrap_err();
    let Fail::Ingest(err) = err else { panic!("{err:?}") };
    assert_eq!(
        err,
        IngestError::Gated {
            id: "hf:o/r@v1".into(),
            repo: "o/r".into()
        }
    );
    assert!(err.to_string().contains("HF_TOKEN"));
}

#[test]
fn a_missing_model_is_named_with_its_revision_and_other_refusals_stay_the_drivers() {
    let hub = gguf_repo(false);
    let id: CatalogId = "hf:o/missing@v2".parse().unwrap();
    let err = run_blocking(HfFetch::new("http://hub", &id, now()).unwrap(), |r| {
        hub.perform(r)
    })
    .unwrap_err();
    assert!(
        matches!(&err, Fail::Ingest(IngestError::NotFound(m)) if m == "no model hf:o/missing@v2 on the Hub at revision v2"),
        "{err:?}"
    );
    // A 403 on a repo that is not gated is the driver's own error (with its token hint), unchanged.
    let mut hub = gguf_repo(false);
    hub.bodies.insert(
        format!("http://hub/o/r/resolve/{SHA}/tokenizer_config.json"),
        Err(403),
    );
    let id: CatalogId = "hf:o/r@v1".parse().unwrap();
    let err = run_blocking(HfFetch::new("http://hub", &id, now()).unwrap(), |r| {
        hub.perform(r)
    })
    .unwrap_err();
    assert!(matches!(err, Fail::Status(403)), "{err:?}");
}

#[test]
fn a_climbing_revision_is_refused_before_any_request() {
    let id: CatalogId = "hf:o/r@main".parse().unwrap();
    HfFetch::new("http://hub", &id, now()).unwrap();
    let id = CatalogId::HuggingFace {
        repo: "o/r".into(),
        revision: Some("../x".into()),
        selector: None,
    };
    let err = HfFetch::new("http://hub", &id, now()).unwrap_err();
    assert!(
        err.to_string().contains("refusing the revision \"../x\""),
        "{err}"
    );
}

/// A GGUF header whose one string value is `len` bytes long.
fn big_header(len: usize) -> Vec<u8> {
    write_header(
        &[
            ("general.architecture", GgufValue::String("llama".into())),
            ("general.name", GgufValue::String("x".repeat(len))),
        ],
        0,
    )
}

#[test]
fn the_gguf_read_grows_to_fit_the_header_and_stops_at_its_limit() {
    let url = "http://hub/m.gguf".to_string();
    let header = big_header(3 << 20);
    let hub = Hub {
        bodies: HashMap::from([(url.clone(), Ok(header.clone()))]),
        seen: RefCell::new(Vec::new()),
    };
    let read = run_blocking(GgufRead::new(url.clone()), |r| hub.perform(r)).unwrap();
    assert_eq!(
        read.metadata
            .get("general.name")
            .and_then(|v| v.as_str())
            .map(str::len),
        Some(3 << 20)
    );
    let sizes: Vec<u64> = hub.seen.borrow().iter().map(|r| r.range.unwrap().1 + 1).collect();
    assert_eq!(sizes.first(), Some(&gguf::FIRST_READ_BYTES));
    assert!(
        sizes.len() <= 3 && sizes.windows(2).all(|w| w[1] > w[0]),
        "{sizes:?}"
    );

    hub.seen.borrow_mut().clear();
    let err = run_blocking(GgufRead::with_limit(url.clone(), 2 << 20), |r| hub.perform(r)).unwrap_err();
    assert!(
        matches!(
            &err,
            Fail::Ingest(IngestError::Gguf(gguf::GgufError::Absurd { .. }))
        ),
        "{err:?}"
    );
    assert!(hub.seen.borrow().iter().all(|r| r.range.unwrap().1 < 2 << 20));

    // A file shorter than the read is the whole file: a truncated header is an error, not a loop.
    let short = Hub {
        bodies: HashMap::from([(url.clone(), Ok(header[..1000].to_vec()))]),
        seen: RefCell::new(Vec::new()),
    };
    let err = run_blocking(GgufRead::new(url), |r| short.perform(r)).unwrap_err();
    assert!(
        matches!(
            &err,
            Fail::Ingest(IngestError::Gguf(gguf::GgufError::Truncated { .. }))
        ),
        "{err:?}"
    );
    assert_eq!(short.seen.borrow().len(), 1);
}
