//! The aqueduct's HTTP API, wire-compatible with Aqueduct: `/frontends`, `/backends`,
//! `/haproxy/config`, plus `/metrics` and `POST /backends/{key}/confirm-removal` (the
//! mass-expiry brake). Successes answer the original's `200` body; every
//! failure is an [`ApiError`] (JSON `{"error","field"}`), including unknown routes.

use super::controller::{Change, Controller};
use super::fleet::{Fleet, WaitFor};
use super::rollout::engine::RolloutLive;
use super::rollout::transition::RolloutCommand;
use super::validate;
use crate::api_error::{ApiError, ok_200, route_not_found};
use crate::config::BackendType;
use crate::json_body::JsonBody;
use crate::metrics::MetricsRegistry;
use crate::status::{StatusBoard, now_ms};
use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRef, Path, RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;
use std::sync::Arc;

/// Default of `--max-members`: the most members a static backend may list.
pub const DEFAULT_MAX_MEMBERS: usize = 10_000;

/// The API routes, with members' live status from `board` (the membership manager's; `None`
/// returns members exactly as stored), refusing static backends with more than `max_members`
/// members (`--max-members`, [`DEFAULT_MAX_MEMBERS`] by default).
pub fn router_with_options(
    controller: Controller,
    board: Option<StatusBoard>,
    max_members: usize,
) -> Router {
    let metrics = MetricsRegistry::new();
    let pipeline = controller.clone();
    metrics.add(Arc::new(move |text| pipeline.metrics().render(text)));
    router_with_metrics(
        controller,
        board,
        max_members,
        metrics,
        None,
        RolloutLive::new(),
    )
}

/// [`router_with_options`] whose `GET /metrics` answers with every source of `metrics` (the
/// application registers the controller's, the supervisor's and membership's); with `fleet`,
/// writes go through the fleet's shared store (see [`super::fleet`]) and `GET /fleet` shows it.
/// `rollouts` has the rollout engine's figures of each rollout's current step.
pub fn router_with_metrics(
    controller: Controller,
    board: Option<StatusBoard>,
    max_members: usize,
    metrics: MetricsRegistry,
    fleet: Option<Fleet>,
    rollouts: RolloutLive,
) -> Router {
    let state = ApiState {
        controller,
        board,
        max_members,
        metrics,
        fleet,
        rollouts,
    };
    Router::new()
        .route("/frontends", get(list_frontends))
        .route(
            "/frontends/{key}",
            get(get_frontend).put(put_frontend).delete(delete_frontend),
        )
        .route("/backends", get(list_backends))
        .route(
            "/backends/{key}",
            get(get_backend)
                .put(put_backend)
                .delete(delete_backend)
                .post(switch_version),
        )
        .route("/backends/{key}/members", get(get_members))
        .route(
            "/backends/{key}/rollout",
            axum::routing::post(start_rollout).delete(abort_rollout),
        )
        .route(
            "/backends/{key}/rollout/{action}",
            axum::routing::post(rollout_action),
        )
        .route(
            "/backends/{key}/confirm-removal",
            axum::routing::post(confirm_removal),
        )
        .route("/haproxy/config", get(haproxy_config))
        .route("/fleet", get(get_fleet))
        .route("/metrics", get(get_metrics))
        .route("/openapi.json", get(crate::openapi::aqueduct))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

#[derive(Clone)]
struct ApiState {
    controller: Controller,
    board: Option<StatusBoard>,
    /// `--max-members`: most static members one backend may list.
    max_members: usize,
    metrics: MetricsRegistry,
    /// Set when this aqueduct is a node of a fleet (`--store`).
    fleet: Option<Fleet>,
    rollouts: RolloutLive,
}

/// Applies `change`: alone, through the apply pipeline (answering the original's `200`); in a
/// fleet, through the shared store (answering the version and each node's state for it;
/// `?wait=fleet` waits for every live node).
async fn submit(
    state: &ApiState,
    change: Change,
    query: Option<String>,
) -> Result<Response, ApiError> {
    match &state.fleet {
        None => {
            state.controller.submit(change).await?;
            Ok(ok_200())
        }
        Some(fleet) => {
            let answer = fleet.submit(change, wait_for(query.as_deref())).await?;
            Ok(axum::Json(answer).into_response())
        }
    }
}

/// `?wait=fleet` waits for every live node of a fleet, otherwise for this one.
fn wait_for(query: Option<&str>) -> WaitFor {
    match query.map(|q| q.split('&').any(|p| p == "wait=fleet")) {
        Some(true) => WaitFor::Fleet,
        _ => WaitFor::ThisNode,
    }
}

/// `GET /fleet`: every node of the fleet, the config version each runs, and how it went.
async fn get_fleet(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let fleet = state.fleet.as_ref().ok_or_else(|| {
        ApiError::not_found("this aqueduct is not part of a fleet (start it with --store)")
    })?;
    Ok(axum::Json(fleet.view().await?).into_response())
}

impl FromRef<ApiState> for Controller {
    fn from_ref(state: &ApiState) -> Controller {
        state.controller.clone()
    }
}

impl FromRef<ApiState> for RolloutLive {
    fn from_ref(state: &ApiState) -> RolloutLive {
        state.rollouts.clone()
    }
}

impl FromRef<ApiState> for MetricsRegistry {
    fn from_ref(state: &ApiState) -> MetricsRegistry {
        state.metrics.clone()
    }
}

impl FromRef<ApiState> for Option<StatusBoard> {
    fn from_ref(state: &ApiState) -> Option<StatusBoard> {
        state.board.clone()
    }
}

type KeyPath = Result<Path<String>, PathRejection>;

fn key_of(path: KeyPath) -> Result<String, ApiError> {
    path.map(|Path(key)| key)
        .map_err(|err| ApiError::bad_field("key", err.body_text()))
}

fn frontend_not_found(key: &str) -> ApiError {
    ApiError::not_found(format!("frontend {key} not found"))
}

fn backend_not_found(key: &str) -> ApiError {
    ApiError::not_found(format!("backend {key} not found"))
}

async fn list_frontends(State(controller): State<Controller>) -> Response {
    axum::Json(Value::Array(controller.read_model().frontends())).into_response()
}

async fn get_frontend(
    State(controller): State<Controller>,
    path: KeyPath,
) -> Result<Response, ApiError> {
    let key = key_of(path)?;
    let row = controller
        .read_model()
        .frontend(&key)
        .ok_or_else(|| frontend_not_found(&key))?;
    Ok(axum::Json(row).into_response())
}

async fn put_frontend(
    State(state): State<ApiState>,
    path: KeyPath,
    RawQuery(query): RawQuery,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let frontend = validate::frontend(&key_of(path)?, &body)?;
    submit(&state, Change::PutFrontend(frontend), query).await
}

async fn delete_frontend(
    State(state): State<ApiState>,
    path: KeyPath,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let key = key_of(path)?;
    submit(&state, Change::DeleteFrontend(key), query).await
}

/// Whether a GET asks for static members' live status (`?live=true`). Static members are
/// otherwise exactly what was PUT, as the original answered, so a client comparing what it PUT
/// with what it GETs sees no difference; dynamic members always carry their live status.
fn live_requested(query: Option<&str>) -> Result<bool, ApiError> {
    let mut live = false;
    for pair in query.unwrap_or("").split('&') {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("live", "" | "true" | "1") => live = true,
            ("live", "false" | "0") => live = false,
            ("live", _) => {
                return Err(ApiError::bad_field("live", "live must be true or false"));
            }
            _ => {}
        }
    }
    Ok(live)
}

/// Adds live status to a backend row's members: always for a dynamic backend, for a static
/// one when `live`.
fn decorate_row(board: &StatusBoard, row: &mut Value, live: bool) {
    let dynamic = row.get("type").and_then(Value::as_str) == Some("dynamic");
    if dynamic || live {
        board.decorate_backend_row(row);
    } else {
        board.decorate_backend_row_without_members(row);
    }
}

async fn list_backends(
    State(controller): State<Controller>,
    State(board): State<Option<StatusBoard>>,
    State(rollouts): State<RolloutLive>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let live = live_requested(query.as_deref())?;
    let mut rows = controller.read_model().backends();
    for row in &mut rows {
        if let Some(board) = &board {
            decorate_row(board, row, live);
        }
        rollouts.decorate_backend_row(row);
    }
    Ok(axum::Json(Value::Array(rows)).into_response())
}

async fn get_backend(
    State(state): State<ApiState>,
    path: KeyPath,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let live = live_requested(query.as_deref())?;
    let key = key_of(path)?;
    Ok(axum::Json(backend_answer(&state, &key, live)?).into_response())
}

/// A backend's row as `GET /backends/{key}` answers it.
fn backend_answer(state: &ApiState, key: &str, live: bool) -> Result<Value, ApiError> {
    let mut row = state
        .controller
        .read_model()
        .backend(key)
        .ok_or_else(|| backend_not_found(key))?;
    if let Some(board) = &state.board {
        decorate_row(board, &mut row, live);
    }
    state.rollouts.decorate_backend_row(&mut row);
    Ok(row)
}

/// `POST /backends/{key}/rollout`: `{"version","weight"}` (manual) or `{"version","steps",
/// "interval","abort"}` (a plan), optionally `"sticky": false`.
async fn start_rollout(
    State(state): State<ApiState>,
    path: KeyPath,
    RawQuery(query): RawQuery,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let key = key_of(path)?;
    let request = validate::rollout_request(&body)?;
    rollout_change(&state, key, RolloutCommand::Start(request), query).await
}

/// `DELETE /backends/{key}/rollout`: roll back to the backend's version at once.
async fn abort_rollout(
    State(state): State<ApiState>,
    path: KeyPath,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let key = key_of(path)?;
    let command = RolloutCommand::Abort {
        reason: "rolled back by API".to_owned(),
        figures: None,
    };
    rollout_change(&state, key, command, query).await
}

/// `POST /backends/{key}/rollout/{pause|resume|promote|abort}`.
async fn rollout_action(
    State(state): State<ApiState>,
    Path((key, action)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    validate::key(&key)?;
    let command = match action.as_str() {
        "pause" => RolloutCommand::Pause {
            reason: "paused by API".to_owned(),
            figures: None,
        },
        "resume" => RolloutCommand::Resume,
        "promote" => RolloutCommand::Promote,
        "abort" => RolloutCommand::Abort {
            reason: "rolled back by API".to_owned(),
            figures: None,
        },
        _ => {
            return Err(ApiError::not_found(format!(
                "no rollout action {action:?}: use pause, resume, promote or abort"
            )));
        }
    };
    rollout_change(&state, key, command, query).await
}

/// Applies a rollout command; answers the backend's row (in a fleet, with the fleet's
/// answer under `fleet`).
async fn rollout_change(
    state: &ApiState,
    key: String,
    command: RolloutCommand,
    query: Option<String>,
) -> Result<Response, ApiError> {
    let change = Change::Rollout {
        key: key.clone(),
        command,
        at_ms: now_ms(),
    };
    let fleet_answer = match &state.fleet {
        None => {
            state.controller.submit(change).await?;
            None
        }
        Some(fleet) => Some(fleet.submit(change, wait_for(query.as_deref())).await?),
    };
    let mut row = backend_answer(state, &key, false)?;
    if let (Some(answer), Value::Object(fields)) = (fleet_answer, &mut row) {
        fields.insert("fleet".into(), answer);
    }
    Ok(axum::Json(row).into_response())
}

async fn get_members(
    State(controller): State<Controller>,
    State(board): State<Option<StatusBoard>>,
    path: KeyPath,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let live = live_requested(query.as_deref())?;
    let key = key_of(path)?;
    let mut members = controller
        .read_model()
        .members(&key)
        .ok_or_else(|| backend_not_found(&key))?;
    let dynamic = controller
        .config()
        .backends
        .get(&key)
        .is_some_and(|b| b.kind == BackendType::Dynamic);
    if let Some(board) = &board
        && (dynamic || live)
    {
        board.decorate_members(&key, &mut members);
        if dynamic {
            board.append_leaving(&key, &mut members);
        }
    }
    Ok(axum::Json(members).into_response())
}

/// An operator accepts that the members the mass-expiry brake holds are really gone: they
/// leave through the normal drain path and the degraded mark clears. 404 for an unknown
/// backend, 409 when it holds nothing.
async fn confirm_removal(
    State(controller): State<Controller>,
    State(board): State<Option<StatusBoard>>,
    path: KeyPath,
) -> Result<Response, ApiError> {
    let key = key_of(path)?;
    if !controller.config().backends.contains_key(&key) {
        return Err(backend_not_found(&key));
    }
    let nothing_held = || {
        ApiError::new(
            axum::http::StatusCode::CONFLICT,
            format!("backend {key} is not degraded: no expired members are held"),
        )
    };
    let board = board.ok_or_else(nothing_held)?;
    let removing = board
        .brake()
        .confirm_removal(&key)
        .map_err(|_| nothing_held())?;
    tracing::info!(backend = %key, removing = ?removing, "operator confirmed the removal of held members");
    Ok(axum::Json(serde_json::json!({"backend": key, "removing": removing})).into_response())
}

async fn put_backend(
    State(state): State<ApiState>,
    path: KeyPath,
    RawQuery(query): RawQuery,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let backend = validate::backend(&key_of(path)?, &body)?;
    if backend.static_members.len() > state.max_members {
        return Err(ApiError::bad_field(
            "members",
            format!(
                "a backend may have at most {} members (--max-members), this one lists {}",
                state.max_members,
                backend.static_members.len()
            ),
        ));
    }
    submit(&state, Change::PutBackend(backend), query).await
}

async fn delete_backend(
    State(state): State<ApiState>,
    path: KeyPath,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let key = key_of(path)?;
    submit(&state, Change::DeleteBackend(key), query).await
}

async fn switch_version(
    State(state): State<ApiState>,
    path: KeyPath,
    RawQuery(query): RawQuery,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let key = key_of(path)?;
    let switch = validate::version_switch(&body)?;
    submit(&state, Change::SwitchVersion { key, switch }, query).await
}

async fn haproxy_config(State(controller): State<Controller>) -> Response {
    (
        [(CONTENT_TYPE, "text/plain; charset=utf-8")],
        controller.haproxy_config(),
    )
        .into_response()
}

async fn get_metrics(State(metrics): State<MetricsRegistry>) -> Response {
    crate::metrics::response(metrics.text())
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed",
    )
}

#[cfg(test)]
mod tests {
    use super::live_requested;

    #[test]
    fn live_is_a_boolean_query_flag_and_anything_else_names_the_field() {
        for (query, expected) in [
            (None, false),
            (Some(""), false),
            (Some("live"), true),
            (Some("live=true"), true),
            (Some("wait=fleet&live=1"), true),
            (Some("live=false"), false),
            (Some("live=0"), false),
            (Some("other=x"), false),
        ] {
            assert_eq!(live_requested(query).unwrap(), expected, "{query:?}");
        }
        let err = live_requested(Some("live=maybe")).unwrap_err();
        assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(err.field.as_deref(), Some("live"));
    }
}
