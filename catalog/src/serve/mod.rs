//! `catalog serve`: an HTTP API over the local catalog and the web UI that uses it.
//!
//! Everything the `catalog` command does is here as JSON routes under `/api` (entries are the
//! contract's JSON), pulls stream their progress as Server-Sent Events, and the built web UI
//! (`ts/build/site`) is served at `/`. It binds loopback by default; `--token` makes every `/api`
//! route ask for `Authorization: Bearer TOKEN`. The routes are listed once in [`ROUTES`], which the
//! router and the OpenAPI description (`openapi.json`) are checked against.

mod api;
mod proxy;
mod pulls;
mod ui;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::ops::{OpsError, Sources};
use crate::sources::SourceError;

pub use pulls::{PullEvent, Pulls};

/// The flags of `catalog serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on; anything but loopback exposes your catalog to the network.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8765)]
    pub port: u16,
    /// Require `Authorization: Bearer TOKEN` on the API (the printed URL carries it for the UI).
    #[arg(long, env = "CATALOG_SERVE_TOKEN")]
    pub token: Option<String>,
    /// The built web UI (default: ts/build/site of this source tree).
    #[arg(long, value_name = "DIR")]
    pub ui_dir: Option<PathBuf>,
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    home: PathBuf,
    sources: Sources,
    token: Option<String>,
    ui_dir: PathBuf,
    pulls: Pulls,
    http: reqwest::Client,
}

impl AppState {
    /// State for a catalog home, its sources, an optional API token and the UI folder.
    pub fn new(home: &Path, sources: Sources, token: Option<String>, ui_dir: PathBuf) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                home: home.to_path_buf(),
                sources,
                token,
                ui_dir,
                pulls: Pulls::default(),
                http: reqwest::Client::new(),
            }),
        }
    }

    fn catalog(&self) -> Result<crate::Catalog, ApiError> {
        Ok(crate::Catalog::open(&self.inner.home)?)
    }
}

/// The UI folder this source tree builds (`cd ts && npm run build:web`).
pub fn default_ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ts/build/site")
}

/// Every API route as (method, path in OpenAPI's notation); the router, `openapi.json` and the tests
/// all follow this list.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/openapi.json"),
    ("get", "/api/info"),
    ("get", "/api/entries"),
    ("post", "/api/entries"),
    ("get", "/api/entry"),
    ("delete", "/api/entry"),
    ("post", "/api/verify"),
    ("get", "/api/compat"),
    ("post", "/api/compat"),
    ("post", "/api/pull"),
    ("delete", "/api/pull"),
    ("get", "/api/pulls"),
    ("get", "/api/search/hf"),
    ("get", "/api/search/civitai"),
    ("get", "/api/remote"),
    ("get", "/api/civitai/versions"),
    ("get", "/api/worker/{kind}/{path}"),
    ("post", "/api/worker/{kind}/{path}"),
];

/// The OpenAPI description of [`ROUTES`].
pub const OPENAPI: &str = include_str!("openapi.json");

/// The application: the API, then the UI for every other path.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/openapi.json", get(openapi))
        .route("/api/info", get(info))
        .route("/api/entries", get(api::list).post(api::add))
        .route("/api/entry", get(api::show).delete(api::remove))
        .route("/api/verify", post(api::verify))
        .route("/api/compat", get(api::compat).post(api::compat_of))
        .route("/api/pull", post(pulls::pull).delete(pulls::cancel))
        .route("/api/pulls", get(pulls::list))
        .route("/api/search/hf", get(api::search_hf))
        .route("/api/search/civitai", get(api::search_civitai))
        .route("/api/remote", get(api::remote))
        .route("/api/civitai/versions", get(api::civitai_versions))
        .route(
            "/api/worker/{kind}/{*path}",
            get(proxy::forward).post(proxy::forward),
        )
        .route("/api/{*rest}", get(not_found).post(not_found).delete(not_found))
        .layer(middleware::from_fn_with_state(state.clone(), auth));
    api.fallback(ui::serve).with_state(state)
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// `GET /api/info`: the catalog home (the workers' `--catalog-home`) and this build's version.
async fn info(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "home": state.inner.home.display().to_string(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route {} {}", req.method(), req.uri().path()),
    )
}

/// Asks for the bearer token when one was set.
async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = &state.inner.token else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this catalog asks for a token: open the URL `catalog serve` printed, or send Authorization: Bearer TOKEN",
        )
        .into_response()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An error answered as `{"error": "..."}` with its status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

impl<E: Into<OpsError>> From<E> for ApiError {
    fn from(e: E) -> ApiError {
        let e = e.into();
        let status = match &e {
            OpsError::Id(_) => StatusCode::BAD_REQUEST,
            OpsError::Unknown { .. } | OpsError::Source(SourceError::NotFound(_)) => StatusCode::NOT_FOUND,
            OpsError::Source(SourceError::Ingest(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            OpsError::Source(SourceError::Unsupported(_)) => StatusCode::NOT_IMPLEMENTED,
            OpsError::Source(_) | OpsError::Download(_) => StatusCode::BAD_GATEWAY,
            OpsError::Store(_) | OpsError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

/// Runs blocking catalog work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the request failed: {e}"),
        )
    })?
}

/// Serves until Ctrl-C: prints the URL to open (with the token, if any) and blocks.
pub fn run(home: &Path, sources: Sources, args: ServeArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("cannot start the server: {e}"))?;
    runtime.block_on(async move {
        let addr = SocketAddr::new(args.host, args.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let ui_dir = args.ui_dir.clone().unwrap_or_else(default_ui_dir);
        if !ui_dir.join("index.html").is_file() {
            eprintln!(
                "catalog serve: no web UI at {} (build it with `cd ts && npm install && npm run build:web`); the API works without it",
                ui_dir.display()
            );
        }
        let host = match local.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_string(),
            IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        let query = args.token.as_ref().map(|t| format!("?token={t}")).unwrap_or_default();
        println!("catalog serve: open http://{host}:{}/{query}", local.port());
        let state = AppState::new(home, sources, args.token, ui_dir);
        axum::serve(listener, router(state))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(|e| format!("the server stopped: {e}"))
    })
}
