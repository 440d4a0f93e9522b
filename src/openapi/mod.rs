//! OpenAPI 3 descriptions of the two HTTP APIs, served at `/openapi.json` on each port.
//! Hand-written JSON (one file per API, embedded in the binary): the routes are few and their
//! compatibility quirks (the `200` bodies, string numbers, ignored `key`/`id`/`_type`) read
//! better spelled out than derived. `tests/openapi.rs` keeps them in step with the routers:
//! every route in the source is documented, every documented operation answers.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The registry's API (port 9000).
pub const REGISTRY: &str = include_str!("registry.json");
/// The aqueduct's API and the UI's endpoints (port 10000).
pub const AQUEDUCT: &str = include_str!("aqueduct.json");

fn document(text: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

pub async fn registry() -> Response {
    document(REGISTRY)
}

pub async fn aqueduct() -> Response {
    document(AQUEDUCT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_documents_are_openapi_3_json() {
        for text in [REGISTRY, AQUEDUCT] {
            let doc: serde_json::Value = serde_json::from_str(text).unwrap();
            assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
            assert!(doc["paths"].as_object().unwrap().len() > 5);
        }
    }
}
