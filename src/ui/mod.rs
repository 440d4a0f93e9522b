//! The web UI: serves the browser app embedded from the top-level `ui/` folder, the live event
//! stream that feeds it, and the two JSON helpers it calls. The control plane pushes what it
//! sees into a [`Hub`]; every open page receives a snapshot and then the same deltas.
//!
//! Routes (merged by the caller with the API router; none is a catch-all, so API routes keep
//! priority):
//! - `GET /` -> 303 to `/overview`; `GET /overview`, `/activity`, `/registry` -> the app.
//! - `GET /ui/{file}` -> an embedded asset.
//! - `GET /events` -> server-sent events: `snapshot`, then `config`, `stats`, `activity`.
//! - `GET /ui/api/registry` -> registrations with expiries and version counts (502 when the
//!   registry is down).
//! - `GET /ui/api/activity?before=<id>&limit=<n>` -> older activity, oldest first.
//!
//! Wiring, in short:
//! ```ignore
//! let hub = ui::Hub::open(&data_dir)?;                   // loads <data_dir>/activity.jsonl
//! let app = api_router.merge(ui::router(hub.clone(), registry_nodes));
//! hub.config(json!({"frontends": [..], "backends": [..]})); // after every model change
//! hub.stats(sample);                                      // every stats poll (1-2 s)
//! hub.activity(Activity::now("member-up", "backend/web/web_127.0.0.1:8080", detail));
//! hub.close();                                            // before a graceful shutdown
//! ```
//! `/events` is a never-ending response: keep request timeouts and compression off it.

mod activity;
mod assets;
pub mod diff;
mod events;
mod hub;
mod registry_view;
mod stats;

pub use activity::ActivityRecord;
pub use hub::{ACTIVITY_CAPACITY, HISTORY_CAPACITY, Hub, SNAPSHOT_ACTIVITY};

use crate::api_error::ApiError;
use crate::registry::nodes::RegistryNodes;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use registry_view::RegistryClient;
use serde::Deserialize;

#[derive(Clone)]
struct UiState {
    hub: Hub,
    registry: RegistryClient,
}

/// The UI's routes. `registry_nodes` is the registry's base URL (e.g.
/// `http://127.0.0.1:9000`), or those of the nodes of its cluster, read by `/ui/api/registry`.
pub fn router(hub: Hub, registry_nodes: RegistryNodes) -> axum::Router {
    router_with_registry_token(hub, registry_nodes, None)
}

/// [`router`] for a registry that wants a bearer token (its read or admin token).
pub fn router_with_registry_token(
    hub: Hub,
    registry_nodes: RegistryNodes,
    registry_token: Option<&str>,
) -> axum::Router {
    let state = UiState {
        hub,
        registry: RegistryClient::new(registry_nodes, registry_token),
    };
    axum::Router::new()
        .route("/", get(|| async { Redirect::to("/overview") }))
        .route("/overview", get(page))
        .route("/activity", get(page))
        .route("/registry", get(page))
        .route("/events", get(events_stream))
        .route("/ui/api/registry", get(registry))
        .route("/ui/api/activity", get(older_activity))
        .route("/ui/{*path}", get(asset))
        .with_state(state)
}

async fn page(headers: HeaderMap) -> Response {
    assets::index(&headers)
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    assets::file(&path, &headers).ok_or_else(|| ApiError::not_found(format!("no file /ui/{path}")))
}

async fn events_stream(State(state): State<UiState>) -> impl IntoResponse {
    events::stream(state.hub)
}

async fn registry(State(state): State<UiState>) -> Result<Response, ApiError> {
    let view = state.registry.view().await?;
    Ok((
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(view),
    )
        .into_response())
}

#[derive(Deserialize)]
struct OlderActivity {
    /// Only entries with a smaller id; absent = the newest.
    before: Option<u64>,
    limit: Option<usize>,
}

async fn older_activity(
    State(state): State<UiState>,
    query: Result<Query<OlderActivity>, QueryRejection>,
) -> Result<Json<Vec<ActivityRecord>>, ApiError> {
    let Query(query) = query.map_err(|err| ApiError::bad_request(err.body_text()))?;
    let limit = query
        .limit
        .unwrap_or(SNAPSHOT_ACTIVITY)
        .min(ACTIVITY_CAPACITY);
    Ok(Json(match query.before {
        Some(before) => state.hub.activity_before(before, limit),
        None => state.hub.recent_activity(limit),
    }))
}
