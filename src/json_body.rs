//! Request-body extraction shared by both HTTP APIs: the body is parsed as JSON whatever the
//! Content-Type says (curl's `-d` sends a form type), limited in size, and every failure becomes
//! an [`ApiError`] with the same JSON shape.

use crate::api_error::ApiError;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::header;
use futures_util::StreamExt;
use serde_json::Value;
use std::time::Duration;

/// Largest request body either API accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How much of an oversized body is still read, and thrown away, before the 413 goes out. A
/// server that answers and closes while the client is still sending leaves unread bytes in its
/// socket, the kernel then resets the connection, and the client reports a broken pipe (or
/// loses the 413 it had already received) instead of the clear error.
const DRAIN_MAX_BYTES: usize = 16 * 1024 * 1024;

/// How long draining an oversized body may take: a slow sender is not waited for forever.
const DRAIN_MAX_TIME: Duration = Duration::from_secs(2);

/// A request body of at most [`MAX_BODY_BYTES`], read without buffering more than that.
#[derive(Debug, Clone)]
pub struct LimitedBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for LimitedBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<usize>().ok());
        read_limited(req.into_body(), declared).await.map(Self)
    }
}

/// Reads `body` up to [`MAX_BODY_BYTES`]; a larger one is drained (within bounds) and refused.
async fn read_limited(body: Body, declared_length: Option<usize>) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::payload_too_large(MAX_BODY_BYTES);
    if declared_length.is_some_and(|length| length > DRAIN_MAX_BYTES) {
        // Too large even to drain: refuse at once, the connection is closed anyway.
        return Err(too_large());
    }
    let mut chunks = body.into_data_stream();
    // One chunk is the common case (a heartbeat): keep it without copying.
    let mut first: Option<Bytes> = None;
    let mut rest: Vec<u8> = Vec::new();
    let mut length = 0usize;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|err| {
            ApiError::bad_field("body", format!("request body could not be read: {err}"))
        })?;
        length += chunk.len();
        if length > MAX_BODY_BYTES {
            let drain = async {
                while let Some(Ok(chunk)) = chunks.next().await {
                    length += chunk.len();
                    if length > DRAIN_MAX_BYTES {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_MAX_TIME, drain).await;
            return Err(too_large());
        }
        match &first {
            None => first = Some(chunk),
            Some(head) => {
                if rest.is_empty() {
                    rest.extend_from_slice(head);
                }
                rest.extend_from_slice(&chunk);
            }
        }
    }
    Ok(if rest.is_empty() {
        first.unwrap_or_default()
    } else {
        Bytes::from(rest)
    })
}

/// A request body read as JSON. An empty (or all-whitespace) body is `Value::Null`.
#[derive(Debug, Clone)]
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let LimitedBody(bytes) = LimitedBody::from_request(req, state).await?;
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
