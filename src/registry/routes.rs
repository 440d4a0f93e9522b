//! The registry's HTTP API, wire-compatible with the original Thalassa on port 9000, plus
//! `/leases`, `/metrics` and the `/events` change feed. Handlers only translate HTTP to
//! [`Registry`] calls; every failure leaves through [`ApiError`].

use super::events;
use super::handle::Registry;
use super::model::RegistrationKey;
use super::record::json_array;
use super::store::ListFilter;
use crate::api_error::{ApiError, ok_200, route_not_found};
use crate::json_body::{MAX_BODY_BYTES, parse_json_body};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, RawPathParamsRejection};
use axum::extract::{DefaultBodyLimit, Path, RawPathParams, State};
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
        // Refuse oversized bodies while reading, not after buffering megabytes.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
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
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let applied = registration_key(params).and_then(|key| {
        let body = body.map_err(|_| ApiError::payload_too_large(MAX_BODY_BYTES))?;
        registry.post(key, parse_json_body(&body)?)
    });
    match applied {
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
    registry.deregister(&key.id());
    Ok(ok_200())
}

async fn list_all(State(registry): State<Registry>) -> Response {
    listing(&registry, &ListFilter::all())
}

async fn list_name(
    State(registry): State<Registry>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = path.map_err(path_error)?;
    Ok(listing(&registry, &ListFilter::name(name)))
}

async fn list_name_version(
    State(registry): State<Registry>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((name, version)) = path.map_err(path_error)?;
    Ok(listing(&registry, &ListFilter::name_version(name, version)))
}

/// A path segment that is not valid UTF-8 once percent-decoded.
fn path_error(err: PathRejection) -> ApiError {
    ApiError::bad_field("path", err.body_text())
}

/// A JSON array of the original's Registration objects (`[]` when nothing matches).
fn listing(registry: &Registry, filter: &ListFilter) -> Response {
    let body = json_array(&registry.list_records(filter));
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn leases(State(registry): State<Registry>) -> Response {
    Json(registry.leases()).into_response()
}

async fn status(State(registry): State<Registry>) -> Response {
    Json(registry.status()).into_response()
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
