//! The one error type of the exports, so every rejection reaches JavaScript as an `Error` whose
//! message names the problem (wasm-bindgen turns any `std::error::Error` into a `JsError`).

/// Why an export refused its input or could not finish; the message is shown to people as is.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    /// A catalog id that does not parse, or parts that do not form one.
    #[error(transparent)]
    Id(#[from] artifacts_contract::IdError),
    /// A value from JavaScript that does not have the declared shape.
    #[error("invalid {what}: {message}")]
    Shape {
        /// What was expected, e.g. `ModelEntry`.
        what: &'static str,
        /// The deserializer's account of the mismatch.
        message: String,
    },
    /// An endpoint that is not an http(s) URL.
    #[error("invalid endpoint {0:?}: expected an http:// or https:// URL")]
    Endpoint(String),
    /// `fetch` itself failed: no connection, CORS refusal, aborted.
    #[error("request to {url} failed: {message}")]
    Network {
        /// The URL requested.
        url: String,
        /// What the host said.
        message: String,
    },
    /// The server answered with an error status.
    #[error("{url} answered HTTP {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status {
        /// The URL requested.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the body, which often says why.
        body: String,
    },
    /// A value that could not be handed back to JavaScript.
    #[error("could not convert the result for JavaScript: {0}")]
    Output(String),
}

impl WasmError {
    /// Wraps a tsify conversion failure of an argument, naming the type that was expected.
    pub fn shape(what: &'static str, err: impl std::fmt::Display) -> Self {
        WasmError::Shape {
            what,
            message: err.to_string(),
        }
    }
}

impl From<tsify::Error> for WasmError {
    fn from(err: tsify::Error) -> Self {
        WasmError::Output(err.to_string())
    }
}
