//! The registry's HTTP API, wire-compatible with the original Thalassa on port 9000, plus
//! `/leases`, `/metrics` and the `/events` change feed. Handlers only translate HTTP to
//! [`Registry`] calls; every failure leaves through [`ApiError`].

use super::events;
use super::handle::Registry;
use super::model::RegistrationKey;
use super::record::json_array;
use super::store::ListFilter;
use crate::api_error::{ApiError, ok_200, route_not_found};
use crate::json_body::{LimitedBody, parse_json_body};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, RawPathParamsRejection};
use axum::extract::{Path, RawPathParams, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The registry's routes over `registry`.
pub fn router(registry: Registry) -> Router {
    Router::new()
        .route("/registrations", get(list_all))
        .route("/registrations/{name}", get(list_name))
        .route("/registrations/{name}/{version}", get(list_name_version))
        .route(
            "/registrations/{name}/{version}/{host}/{port}",
            axum::routing::post(post_registration).delete(delete_registration),
        )
        .route("/leases", get(leases))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/events", get(events::stream))
        .route("/openapi.json", get(crate::openapi::registry))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(registry)
}

/// Reads `{name}/{version}/{host}/{port}` (percent-decoded) and validates them.
/// `RawPathParams` borrows the router's captures instead of allocating four strings: this is
/// the heartbeat path.
fn registration_key(
    params: Result<RawPathParams, RawPathParamsRejection>,
) -> Result<RegistrationKey, ApiError> {
    let params = params.map_err(|err| ApiError::bad_field("path", err.body_text()))?;
    let mut segments = ["", "", "", ""];
    for (name, value) in &params {
        let slot = match name {
            "name" => 0,
            "version" => 1,
            "host" => 2,
            "port" => 3,
            _ => continue,
        };
        segments[slot] = value;
    }
    let [name, version, host, port] = segments;
    RegistrationKey::parse(name, version, host, port)
        .map_err(|err| ApiError::bad_field(err.field, format!("{}: {}", err.field, err.message)))
}

/// The original's success answer, the JSON number `200` (what `ok_200` sends), built without
/// serialising anything.
fn ok_200_static() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        Bytes::from_static(b"200"),
    )
        .into_response()
}

async fn post_registration(
    State(registry): State<Registry>,
    params: Result<RawPathParams, RawPathParamsRejection>,
    body: Result<LimitedBody, ApiError>,
) -> Response {
    let parsed = registration_key(params).and_then(|key| {
        let LimitedBody(body) = body?;
        Ok((key, parse_json_body(&body)?))
    });
    let applied = match parsed {
        Ok((key, body)) => registry.post(key, body).await,
        Err(err) => Err(err),
    };
    match applied {
        Err(err) if err.status == StatusCode::SERVICE_UNAVAILABLE => err.into_response(),
        Ok(_) => ok_200_static(),
        Err(err) => {
            registry.record_rejected_post();
            err.into_response()
        }
    }
}

async fn delete_registration(
    State(registry): State<Registry>,
    params: Result<RawPathParams, RawPathParamsRejection>,
) -> Result<Response, ApiError> {
    let key = registration_key(params)?;
    // Like the original, deleting an unknown registration is not an error.
    match registry.deregister(&key.id()).await {
        Ok(_) => Ok(ok_200()),
        Err(err) => Err(ApiError::unavailable(err.to_string())),
    }
}

/// Marks a response served from this node's local copy while the store is out of reach.
fn mark_stale(registry: &Registry, mut response: Response) -> Response {
    if let Some(stale_ms) = registry.freshness().stale_ms
        && let Ok(value) = header::HeaderValue::from_str(&stale_ms.to_string())
    {
        response.headers_mut().insert(STALE_HEADER, value);
    }
    response
}

/// Milliseconds since this node last heard from its store, on responses served from the
/// local copy.
pub const STALE_HEADER: &str = "x-thalassa-stale-ms";

async fn list_all(State(registry): State<Registry>) -> Response {
    listing(&registry, &ListFilter::all()).await
}

async fn list_name(
    State(registry): State<Registry>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = path.map_err(path_error)?;
    Ok(listing(&registry, &ListFilter::name(name)).await)
}

async fn list_name_version(
    State(registry): State<Registry>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((name, version)) = path.map_err(path_error)?;
    Ok(listing(&registry, &ListFilter::name_version(name, version)).await)
}

/// A path segment that is not valid UTF-8 once percent-decoded.
fn path_error(err: PathRejection) -> ApiError {
    ApiError::bad_field("path", err.body_text())
}

/// A JSON array of the original's Registration objects (`[]` when nothing matches).
async fn listing(registry: &Registry, filter: &ListFilter) -> Response {
    match registry.list_records(filter).await {
        Ok(records) => mark_stale(
            registry,
            (
                [(header::CONTENT_TYPE, "application/json")],
                json_array(&records),
            )
                .into_response(),
        ),
        Err(err) => ApiError::unavailable(err.to_string()).into_response(),
    }
}

async fn leases(State(registry): State<Registry>) -> Response {
    match registry.leases().await {
        Ok(leases) => mark_stale(&registry, Json(leases).into_response()),
        Err(err) => ApiError::unavailable(err.to_string()).into_response(),
    }
}

/// Out of touch with the store this long, the node answers `/status` with 503 so a load
/// balancer in front of the registry nodes drains it.
const STATUS_UNAVAILABLE_AFTER_MS: u64 = 1_000;

async fn status(State(registry): State<Registry>) -> Response {
    let status = registry.status();
    let out_of_touch = status
        .store
        .as_ref()
        .and_then(|store| store.stale_ms)
        .is_some_and(|ms| ms > STATUS_UNAVAILABLE_AFTER_MS);
    let code = if out_of_touch {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    mark_stale(&registry, (code, Json(status)).into_response())
}

async fn metrics(State(registry): State<Registry>) -> Response {
    crate::metrics::response(registry.metrics_text())
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}
