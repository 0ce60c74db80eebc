//! The JSON routes over the catalog: list, show, add, verify, remove, compatibility, remote searches.

use artifacts_contract::{
    CatalogId, ModelEntry, ModelSource, ModelType, WorkerCapabilities, WorkerKind, compat,
};
use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState, blocking};
use crate::ops::{self, AddOptions};
use crate::sources::SourceError;
use crate::store::Filter;

/// `?id=` of the routes about one entry.
#[derive(Deserialize)]
pub struct IdQuery {
    pub(super) id: String,
}

/// Parses an id from a query; a malformed one is a 400 naming the problem.
pub(super) fn parse_id(id: &str) -> Result<CatalogId, ApiError> {
    id.parse::<CatalogId>()
        .map_err(|e| ApiError::bad_request(format!("bad id {id:?}: {e}")))
}

/// `GET /api/entries?type=&q=`.
#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(rename = "type")]
    model_type: Option<String>,
    q: Option<String>,
}

/// `GET /api/entries`: the stored entries, of one type or matching words.
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<ModelEntry>>, ApiError> {
    let model_type = match q.model_type.as_deref().filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => Some(t.parse::<ModelType>().map_err(|_| {
            ApiError::bad_request(format!("unknown type {t:?}: expected llm, image, audio or video"))
        })?),
    };
    blocking(move || {
        let catalog = state.catalog()?;
        let entries = match q.q.as_deref().filter(|t| !t.trim().is_empty()) {
            Some(text) => catalog
                .search(text)?
                .into_iter()
                .filter(|e| model_type.is_none_or(|t| e.model_type() == t))
                .collect(),
            None => catalog.list(&Filter {
                model_type,
                ..Filter::default()
            })?,
        };
        Ok(Json(entries))
    })
    .await
}

/// `GET /api/entry?id=`: one stored entry.
pub async fn show(
    State(state): State<AppState>,
    Query(q): Query<IdQuery>,
) -> Result<Json<ModelEntry>, ApiError> {
    let id = parse_id(&q.id)?;
    blocking(move || Ok(Json(stored(&state, &id)?))).await
}

fn stored(state: &AppState, id: &CatalogId) -> Result<ModelEntry, ApiError> {
    let catalog = state.catalog()?;
    catalog.get(id)?.ok_or_else(|| {
        ops::OpsError::Unknown {
            id: id.clone(),
            home: catalog.home().to_path_buf(),
        }
        .into()
    })
}

/// `POST /api/entries`: describe a source and store it (files are fetched by `POST /api/pull`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddBody {
    source: String,
    #[serde(default)]
    allow_pickle: bool,
}

/// `POST /api/entries`: describes a source and stores the entry, without its files.
pub async fn add(
    State(state): State<AppState>,
    Json(body): Json<AddBody>,
) -> Result<Json<ModelEntry>, ApiError> {
    blocking(move || {
        let catalog = state.catalog()?;
        let opts = AddOptions {
            download: false,
            allow_pickle: body.allow_pickle,
        };
        Ok(Json(ops::add(
            &catalog,
            &state.inner.sources,
            body.source.trim(),
            opts,
        )?))
    })
    .await
}

/// `POST /api/verify?id=`: re-checks the files; the result is the entry's status.
pub async fn verify(
    State(state): State<AppState>,
    Query(q): Query<IdQuery>,
) -> Result<Json<ModelEntry>, ApiError> {
    let id = parse_id(&q.id)?;
    blocking(move || Ok(Json(ops::verify(&state.catalog()?, &id)?))).await
}

/// `DELETE /api/entry?id=&keepFiles=`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoveQuery {
    id: String,
    #[serde(default)]
    keep_files: bool,
}

/// What a removal did.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Removed {
    entry: ModelEntry,
    /// Bytes of downloaded files deleted (0 with `keepFiles`, or for local files, which stay).
    freed_bytes: u64,
}

/// `DELETE /api/entry?id=&keepFiles=`: removes an entry (and its downloaded files), saying what it freed.
pub async fn remove(
    State(state): State<AppState>,
    Query(q): Query<RemoveQuery>,
) -> Result<Json<Removed>, ApiError> {
    let id = parse_id(&q.id)?;
    if state.inner.pulls.is_running(&id) {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            format!("{id} is being downloaded; cancel the pull first"),
        ));
    }
    blocking(move || {
        let catalog = state.catalog()?;
        let entry = ops::remove(&catalog, &state.inner.sources, &id, q.keep_files)?;
        let freed_bytes =
            if q.keep_files || entry.source == ModelSource::Local || !entry.status.is_available() {
                0
            } else {
                entry.size
            };
        Ok(Json(Removed { entry, freed_bytes }))
    })
    .await
}

/// `GET /api/compat?id=`: each worker's answer, its reasons and the memory estimate.
pub async fn compat(
    State(state): State<AppState>,
    Query(q): Query<IdQuery>,
) -> Result<Json<Vec<compat::Compatibility>>, ApiError> {
    let id = parse_id(&q.id)?;
    blocking(move || Ok(Json(answers(&stored(&state, &id)?)))).await
}

fn answers(entry: &ModelEntry) -> Vec<compat::Compatibility> {
    WorkerKind::ALL
        .iter()
        .map(|k| compat::check(entry, &WorkerCapabilities::builtin(*k), None))
        .collect()
}

/// `POST /api/compat` with an entry (a search result not stored yet): the same answers.
pub async fn compat_of(Json(entry): Json<ModelEntry>) -> Json<Vec<compat::Compatibility>> {
    Json(answers(&entry))
}

/// `?q=&limit=` of the remote searches.
#[derive(Deserialize)]
pub struct SearchQuery {
    q: String,
    limit: Option<u32>,
}

/// A registered source's search.
async fn search(
    state: AppState,
    q: SearchQuery,
    scheme: &'static str,
) -> Result<Json<Vec<ModelEntry>>, ApiError> {
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    blocking(move || {
        let found = state
            .inner
            .sources
            .get(scheme)
            .and_then(|source| source.search(&q.q, limit, ops::now()))
            .unwrap_or_else(|| Err(SourceError::Unsupported(format!("{scheme}: search"))));
        Ok(Json(found.map_err(ops::OpsError::from)?))
    })
    .await
}

/// `GET /api/search/hf?q=`: the Hub's search.
pub async fn search_hf(
    State(state): State<AppState>,
    Query(q): Query<SearchQuery>,
) -> Result<Json<Vec<ModelEntry>>, ApiError> {
    search(state, q, "hf").await
}

/// `GET /api/search/civitai?q=`: CivitAI's search.
pub async fn search_civitai(
    State(state): State<AppState>,
    Query(q): Query<SearchQuery>,
) -> Result<Json<Vec<ModelEntry>>, ApiError> {
    search(state, q, "civitai").await
}

/// `GET /api/remote?id=`: what a source says about an id, without storing it (the Discover page's
/// details, and a CivitAI version picked by `civitai:MODEL@VERSION`).
pub async fn remote(
    State(state): State<AppState>,
    Query(q): Query<IdQuery>,
) -> Result<Json<ModelEntry>, ApiError> {
    let id = parse_id(&q.id)?;
    if matches!(id, CatalogId::File { .. }) {
        return Err(ApiError::bad_request("file: ids are described by adding them"));
    }
    blocking(move || Ok(Json(ops::describe(&state.inner.sources, &id, true)?))).await
}

/// `?model=` of the version picker.
#[derive(Deserialize)]
pub struct ModelQuery {
    model: u64,
}

/// `GET /api/civitai/versions?model=`: one entry per version of a CivitAI model, newest first (the
/// Discover page's version picker).
pub async fn civitai_versions(
    State(state): State<AppState>,
    Query(q): Query<ModelQuery>,
) -> Result<Json<Vec<ModelEntry>>, ApiError> {
    blocking(move || {
        let id = CatalogId::CivitAi {
            model: q.model,
            version: None,
        };
        let found = state
            .inner
            .sources
            .for_id(&id)
            .map_err(ops::OpsError::from)?
            .versions(&id, ops::now())
            .unwrap_or_else(|| Err(SourceError::Unsupported(format!("{id}: versions"))));
        Ok(Json(found.map_err(ops::OpsError::from)?))
    })
    .await
}
