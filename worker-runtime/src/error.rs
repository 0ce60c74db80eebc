//! The one error type of a worker and its one mapping to an HTTP status and an OpenAI-style JSON body.
//!
//! Every failure a client can see goes through [`WorkerError`], so a status code, a `Retry-After` header
//! and the `{"error": {"message", "type", "param", "code"}}` body are decided in one place and the
//! OpenAI client libraries show our messages as they show OpenAI's.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Everything that can go wrong between a request arriving and its job ending, as a client sees it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkerError {
    /// The request is malformed or a value is out of range; `param` names the field when there is one.
    #[error("{message}")]
    InvalidRequest {
        /// The offending field as a path into the body (`messages[0].content`), if known.
        param: Option<String>,
        /// What is wrong and what would be accepted.
        message: String,
    },
    /// An API key is configured and the request did not carry it.
    #[error("missing or wrong API key: send `Authorization: Bearer <key>`")]
    Unauthorized,
    /// The route, or the model the request names, does not exist here.
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not for this HTTP method.
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed {
        /// The method the client used.
        method: String,
        /// The path it used it on.
        path: String,
    },
    /// The request body is larger than the server accepts.
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The configured limit, in bytes.
        limit: usize,
    },
    /// Every running slot is busy and the waiting line is full; the job was refused at once.
    #[error("the worker is busy ({running} running, {waiting} waiting); retry after {retry_after_secs} s")]
    QueueFull {
        /// Jobs running when the request was refused.
        running: usize,
        /// Jobs waiting when the request was refused.
        waiting: usize,
        /// What the `Retry-After` header says.
        retry_after_secs: u64,
    },
    /// The model is still loading.
    #[error("the model {model} is still loading; retry after {retry_after_secs} s")]
    NotReady {
        /// The catalog id being loaded.
        model: String,
        /// What the `Retry-After` header says.
        retry_after_secs: u64,
    },
    /// The worker received SIGTERM and takes no new jobs.
    #[error("the worker is shutting down and takes no new jobs")]
    ShuttingDown,
    /// The job was stopped before it finished: its client went away or the worker shut down.
    #[error("the job was cancelled")]
    Cancelled,
    /// A bug or a failure of the device: the job failed, the server goes on.
    #[error("internal error: {0}")]
    Internal(String),
}

impl WorkerError {
    /// Shorthand for the common case of a field with a bad value.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        WorkerError::InvalidRequest {
            param: Some(param.into()),
            message: message.into(),
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            WorkerError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            WorkerError::Unauthorized => StatusCode::UNAUTHORIZED,
            WorkerError::NotFound(_) => StatusCode::NOT_FOUND,
            WorkerError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            WorkerError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            WorkerError::QueueFull { .. }
            | WorkerError::NotReady { .. }
            | WorkerError::ShuttingDown
            | WorkerError::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
            WorkerError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable machine-readable code, the `code` of the JSON body and of streamed error events.
    pub fn code(&self) -> &'static str {
        match self {
            WorkerError::InvalidRequest { .. } => "invalid_request",
            WorkerError::Unauthorized => "invalid_api_key",
            WorkerError::NotFound(_) => "not_found",
            WorkerError::MethodNotAllowed { .. } => "method_not_allowed",
            WorkerError::PayloadTooLarge { .. } => "payload_too_large",
            WorkerError::QueueFull { .. } => "queue_full",
            WorkerError::NotReady { .. } => "model_loading",
            WorkerError::ShuttingDown => "shutting_down",
            WorkerError::Cancelled => "cancelled",
            WorkerError::Internal(_) => "internal_error",
        }
    }

    /// The OpenAI error `type` family this error belongs to.
    fn kind(&self) -> &'static str {
        match self {
            WorkerError::InvalidRequest { .. }
            | WorkerError::MethodNotAllowed { .. }
            | WorkerError::PayloadTooLarge { .. } => "invalid_request_error",
            WorkerError::Unauthorized => "authentication_error",
            WorkerError::NotFound(_) => "not_found_error",
            WorkerError::QueueFull { .. } | WorkerError::NotReady { .. } => "overloaded_error",
            WorkerError::ShuttingDown | WorkerError::Cancelled | WorkerError::Internal(_) => "server_error",
        }
    }

    /// Seconds a client should wait before retrying, for the errors that are worth retrying.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            WorkerError::QueueFull { retry_after_secs, .. }
            | WorkerError::NotReady { retry_after_secs, .. } => Some(*retry_after_secs),
            WorkerError::ShuttingDown => Some(5),
            _ => None,
        }
    }

    /// The JSON body, in OpenAI's shape.
    pub fn body(&self) -> ErrorBody {
        let param = match self {
            WorkerError::InvalidRequest { param, .. } => param.clone(),
            _ => None,
        };
        ErrorBody {
            error: ErrorDetail {
                message: self.to_string(),
                kind: self.kind(),
                param,
                code: self.code(),
            },
        }
    }
}

/// `{"error": {...}}`: what OpenAI's API and its client libraries expect of an error response.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    /// The error itself.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Clone, Serialize)]
pub struct ErrorDetail {
    /// A sentence a person can act on.
    pub message: String,
    /// OpenAI's error family (`invalid_request_error`, `server_error`...).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The offending request field, if any.
    pub param: Option<String>,
    /// [`WorkerError::code`].
    pub code: &'static str,
}

impl IntoResponse for WorkerError {
    fn into_response(self) -> Response {
        if matches!(self, WorkerError::Internal(_)) {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::debug!(error = %self, "request refused");
        }
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after_secs() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if matches!(self, WorkerError::Unauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_full_is_503_with_retry_after() {
        let err = WorkerError::QueueFull {
            running: 1,
            waiting: 8,
            retry_after_secs: 2,
        };
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }

    #[test]
    fn invalid_request_names_the_field() {
        let body = WorkerError::invalid("temperature", "must be between 0 and 2").body();
        assert_eq!(body.error.param.as_deref(), Some("temperature"));
        assert_eq!(body.error.kind, "invalid_request_error");
        assert_eq!(body.error.code, "invalid_request");
    }
}
