//! The web UI: serves the browser app embedded from the top-level `ui/` folder, the live event
//! stream that feeds it, and the two JSON helpers it calls. The control plane pushes what it
//! sees into a [`Hub`]; every open page receives a snapshot and then the same deltas.
//!
//! Routes (merged by the caller with the API router; none is a catch-all, so API routes keep
//! priority):
//! - `GET /` -> 303 to `/overview`; `GET /overview`, `/activity`, `/registry`, `/nodes` (the
//!   fleet view, which reads the API's `GET /fleet`) -> the app.
//! - `GET /ui/{file}` -> an embedded asset.
//! - `GET /events` -> server-sent events: `snapshot`, then `config`, `stats`, `activity`.
//! - `GET /ui/api/registry` -> registrations with expiries and version counts (502 when the
//!   registry is down).
//! - `GET /ui/api/activity?before=<id>&limit=<n>` -> older activity, oldest first.
//! - `GET /ui/api/node` -> the [`NodeLabel`] of the aqueduct the page looks at.
//!
//! Wiring, in short:
//! ```ignore
//! let hub = ui::Hub::open(&data_dir)?;                   // loads <data_dir>/activity.jsonl
//! let node = ui::NodeLabel { id: "aq-1".into(), address: "http://10.0.0.5:10000".into(), fleet: true };
//! let app = api_router.merge(ui::router_for_node(hub.clone(), registry_nodes, token, node));
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
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Which aqueduct the pages show, as their header names it (`GET /ui/api/node`). The UI does
/// not know the fleet: the application says who this node is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeLabel {
    /// The node's id in its fleet (`--node-id`), or the host name when it runs alone.
    pub id: String,
    /// Where operators reach this aqueduct's API and UI (`http://host:port`).
    pub address: String,
    /// Whether this aqueduct is a node of a fleet (`--store`).
    pub fleet: bool,
}

impl NodeLabel {
    /// The label of a UI served without one (the UI's own tests): it names no node.
    fn unnamed() -> NodeLabel {
        NodeLabel {
            id: "aqueduct".to_owned(),
            address: String::new(),
            fleet: false,
        }
    }
}

#[derive(Clone)]
struct UiState {
    hub: Hub,
    registry: RegistryClient,
    node: Arc<NodeLabel>,
}

/// The UI's routes. `registry_nodes` is the registry's base URL (e.g.
/// `http://127.0.0.1:9000`), or those of the nodes of its cluster, read by `/ui/api/registry`.
pub fn router(hub: Hub, registry_nodes: RegistryNodes) -> axum::Router {
    router_for_node(hub, registry_nodes, None, NodeLabel::unnamed())
}

/// [`router`] for the aqueduct `node` (named in each page's header), reading a registry that
/// may want a bearer token (its read or admin token).
pub fn router_for_node(
    hub: Hub,
    registry_nodes: RegistryNodes,
    registry_token: Option<&str>,
    node: NodeLabel,
) -> axum::Router {
    let state = UiState {
        hub,
        registry: RegistryClient::new(registry_nodes, registry_token),
        node: Arc::new(node),
    };
    axum::Router::new()
        .route("/", get(|| async { Redirect::to("/overview") }))
        .route("/overview", get(page))
        .route("/activity", get(page))
        .route("/registry", get(page))
        .route("/nodes", get(page))
        .route("/events", get(events_stream))
        .route("/ui/api/registry", get(registry))
        .route("/ui/api/activity", get(older_activity))
        .route("/ui/api/node", get(node_label))
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

async fn node_label(State(state): State<UiState>) -> Json<NodeLabel> {
    Json(NodeLabel::clone(&state.node))
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
