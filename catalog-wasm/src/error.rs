//! The one error type of the exports, so every rejection reaches JavaScript as an `Error` whose
//! message names the problem (wasm-bindgen turns any `std::error::Error` into a `JsError`).

/// Why an export refused its input or could not finish; the message is shown to people as is.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    /// What a source answered could not be turned into an entry (the catalog's words).
    #[error(transparent)]
    Ingest(#[from] catalog::ingest::IngestError),
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
    /// A body larger than the catalog accepts for that request.
    #[error("{url} sent more than {limit} bytes where a small document was expected")]
    TooLarge {
        /// The URL requested.
        url: String,
        /// The limit.
        limit: u64,
    },
    /// A value that could not be handed back to JavaScript.
    #[error("could not convert the result for JavaScript: {0}")]
    Output(String),
}

impl catalog::ingest::fetch::HttpStatus for WasmError {
    fn http_status(&self) -> Option<u16> {
        match self {
            WasmError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Reads an argument from JavaScript, naming the expected type when its shape is wrong.
pub fn from_js<T>(value: &tsify::Ts<T>, what: &'static str) -> Result<T, WasmError>
where
    T: tsify::Tsify + serde::de::DeserializeOwned,
    <T as tsify::Tsify>::JsType: Clone,
{
    value.to_rust().map_err(|e| WasmError::Shape {
        what,
        message: e.to_string(),
    })
}

/// Converts a value for JavaScript with plain objects for maps: `ModelEntry` flattens its config, which
/// serde writes as a map, and a JavaScript `Map` would hide every field from `entry.id`-style access.
pub fn to_js<T: serde::Serialize + tsify::Tsify>(value: &T) -> Result<tsify::Ts<T>, WasmError> {
    let serializer = serde_wasm_bindgen::Serializer::new().serialize_maps_as_objects(true);
    value
        .serialize(&serializer)
        .map(tsify::Ts::new_unchecked)
        .map_err(|e| WasmError::Output(e.to_string()))
}
