//! Reading a JSON request body into a worker's request type, with errors that name the offending field.
//!
//! axum's own `Json` answers in plain text with its own statuses; [`JsonBody`] answers every problem as a
//! [`WorkerError`]: 413 past the body limit, 400 for malformed JSON (with line and column) and for a
//! value of the wrong type (with the field's path as `param`). Unknown fields are the request type's
//! business: a type without `deny_unknown_fields` ignores them, as OpenAI-compatible servers should.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::WorkerError;

/// The body limit in force, put in each request's extensions by the server so rejections can quote it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimit(pub(crate) usize);

/// A JSON request body of type `T`; use it in place of `axum::Json` in a worker's handlers.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = WorkerError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = request.extensions().get::<BodyLimit>().map(|limit| limit.0);
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                WorkerError::PayloadTooLarge {
                    limit: limit.unwrap_or_default(),
                }
            } else {
                WorkerError::InvalidRequest {
                    param: None,
                    message: rejection.body_text(),
                }
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses a request body, naming the field at fault in the error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WorkerError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(WorkerError::InvalidRequest {
            param: None,
            message: "the request body is empty; expected a JSON object".to_owned(),
        });
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_data() && path != "." {
            WorkerError::InvalidRequest {
                param: Some(path.clone()),
                message: format!("field `{path}`: {inner}"),
            }
        } else if inner.is_data() {
            WorkerError::InvalidRequest {
                param: None,
                message: format!("invalid request body: {inner}"),
            }
        } else {
            WorkerError::InvalidRequest {
                param: None,
                message: format!("malformed JSON in the request body: {inner}"),
            }
        }
    })?;
    deserializer.end().map_err(|err| WorkerError::InvalidRequest {
        param: None,
        message: format!("malformed JSON in the request body: {err}"),
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Request {
        messages: Vec<Message>,
        max_tokens: Option<u32>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Message {
        content: String,
    }

    fn param_of(body: &str) -> (Option<String>, String) {
        match parse_json::<Request>(body.as_bytes()).unwrap_err() {
            WorkerError::InvalidRequest { param, message } => (param, message),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_wrong_type_names_its_field_path() {
        let (param, message) = param_of(r#"{"messages": [{"content": 5}], "max_tokens": 1}"#);
        assert_eq!(param.as_deref(), Some("messages[0].content"));
        assert!(message.contains("invalid type"), "{message}");
        let (param, _) = param_of(r#"{"messages": [], "max_tokens": -1}"#);
        assert_eq!(param.as_deref(), Some("max_tokens"));
    }

    #[test]
    fn malformed_json_says_where() {
        let (param, message) = param_of(r#"{"messages": [}"#);
        assert_eq!(param, None);
        assert!(
            message.contains("malformed JSON") && message.contains("column"),
            "{message}"
        );
        let (_, message) = param_of("");
        assert!(message.contains("empty"), "{message}");
        let (_, message) = param_of(r#"{"messages": []} trailing"#);
        assert!(message.contains("malformed JSON"), "{message}");
    }

    #[test]
    fn unknown_fields_are_ignored_and_missing_ones_named() {
        assert!(parse_json::<Request>(br#"{"messages": [], "logit_bias": {}}"#).is_ok());
        let (_, message) = param_of(r#"{"max_tokens": 3}"#);
        assert!(message.contains("missing field `messages`"), "{message}");
    }
}
