//! Request-body extraction shared by both HTTP APIs: the body is parsed as JSON whatever the
//! Content-Type says (curl's `-d` sends a form type), limited in size, and every failure becomes
//! an [`ApiError`] with the same JSON shape.

use crate::api_error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde_json::Value;

/// Largest request body either API accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A request body read as JSON. An empty (or all-whitespace) body is `Value::Null`.
#[derive(Debug, Clone)]
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|_| ApiError::payload_too_large(MAX_BODY_BYTES))?;
        parse_json_body(&bytes).map(JsonBody)
    }
}

/// Parses a request body; split out so it can be tested without HTTP.
pub fn parse_json_body(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::payload_too_large(MAX_BODY_BYTES));
    }
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(bytes).map_err(|err| {
        ApiError::bad_field("body", format!("request body is not valid JSON: {err}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<Value, &str>) {
        let got = parse_json_body(input.as_bytes());
        match (got, expected) {
            (Ok(v), Ok(e)) => assert_eq!(v, e),
            (Err(err), Err(field)) => assert_eq!(err.field.as_deref(), Some(field)),
            (got, expected) => panic!("{input:?}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn bodies() {
        check("", Ok(Value::Null));
        check("  \n", Ok(Value::Null));
        check(r#"{"a":1}"#, Ok(serde_json::json!({"a":1})));
        check("{nope", Err("body"));
    }

    #[test]
    fn oversized_body_is_413() {
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        let err = parse_json_body(&big).unwrap_err();
        assert_eq!(err.status, axum::http::StatusCode::PAYLOAD_TOO_LARGE);
    }
}
