//! `GET /events`: the change feed as server-sent events. A follower gets a `snapshot`, then
//! `online`/`offline` events; each message's `id:` is its sequence number, so a reconnecting
//! client sends `Last-Event-ID` (or `?lastEventId=`) and receives only what it missed, or a fresh
//! snapshot when the registry no longer retains that far back.

use super::feed::FeedItem;
use super::handle::Registry;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::time::Duration;
use tokio::sync::mpsc;

/// A comment line sent when nothing else was, so idle followers (and proxies) can tell a live
/// connection from a dead one.
pub const KEEPALIVE_EVERY: Duration = Duration::from_secs(15);

/// Most bytes of events sent in one chunk of the response.
const MAX_CHUNK_BYTES: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
pub struct ResumeQuery {
    #[serde(rename = "lastEventId")]
    last_event_id: Option<String>,
}

pub async fn stream(
    State(registry): State<Registry>,
    headers: HeaderMap,
    query: Result<Query<ResumeQuery>, QueryRejection>,
) -> Response {
    // An unparsable id is treated like none: the follower starts from a snapshot.
    let last_seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query.ok().and_then(|Query(q)| q.last_event_id))
        .and_then(|v| v.trim().parse::<u64>().ok());
    let feed = registry.subscribe(last_seen);
    let body = Body::from_stream(futures_util::stream::unfold(feed, next_chunk));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response()
}

async fn next_chunk(
    mut feed: mpsc::Receiver<FeedItem>,
) -> Option<(
    Result<Bytes, std::convert::Infallible>,
    mpsc::Receiver<FeedItem>,
)> {
    let chunk = match tokio::time::timeout(KEEPALIVE_EVERY, feed.recv()).await {
        Ok(Some(item)) => {
            // Whatever else is already waiting goes in the same chunk: a mass expiry is
            // thousands of events, and one write each would make the follower wait on them.
            let mut text = item.to_sse();
            while text.len() < MAX_CHUNK_BYTES {
                match feed.try_recv() {
                    Ok(item) => text.push_str(&item.to_sse()),
                    Err(_) => break,
                }
            }
            Bytes::from(text)
        }
        // The registry is closing: end the response so the server can shut down.
        Ok(None) => return None,
        Err(_) => Bytes::from_static(b": keepalive\n\n"),
    };
    Some((Ok(chunk), feed))
}
