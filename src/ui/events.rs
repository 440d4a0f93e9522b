//! `GET /events`: the live server-sent-events stream. A page first receives `snapshot`, then the
//! deltas `config`, `stats` and `activity` as the hub gets them, and a `: keepalive` comment
//! every 15 s so proxies and browsers keep the connection open.

use super::hub::{Delta, Hub};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::{self, error::RecvError};

const KEEPALIVE_EVERY: Duration = Duration::from_secs(15);
/// How soon a browser reconnects after losing the stream (sent as the SSE `retry:` field).
const RECONNECT_AFTER: Duration = Duration::from_millis(1000);

enum Feed {
    /// Send a snapshot next (first, or after the page fell too far behind).
    Resync(Hub),
    Live(
        Hub,
        broadcast::Receiver<Delta>,
        tokio::sync::watch::Receiver<bool>,
    ),
}

pub(crate) fn stream(hub: Hub) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = futures_util::stream::unfold(Feed::Resync(hub), next_event);
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEPALIVE_EVERY).text("keepalive"))
}

async fn next_event(feed: Feed) -> Option<(Result<Event, Infallible>, Feed)> {
    let (hub, mut deltas, mut closed) = match feed {
        Feed::Resync(hub) => {
            let closed = hub.closed();
            if *closed.borrow() {
                return None;
            }
            let (snapshot, deltas) = hub.subscribe();
            let event = Event::default()
                .event("snapshot")
                .retry(RECONNECT_AFTER)
                .data(snapshot);
            return Some((Ok(event), Feed::Live(hub, deltas, closed)));
        }
        Feed::Live(hub, deltas, closed) => (hub, deltas, closed),
    };
    loop {
        tokio::select! {
            delta = deltas.recv() => match delta {
                Ok(delta) => {
                    let event = Event::default().event(delta.event).data(&*delta.data);
                    return Some((Ok(event), Feed::Live(hub, deltas, closed)));
                }
                Err(RecvError::Lagged(missed)) => {
                    // A fresh snapshot is both smaller and simpler than replaying what was
                    // missed; subscribing again keeps snapshot and deltas consistent.
                    tracing::debug!(missed, "events client fell behind, resyncing");
                    return Box::pin(next_event(Feed::Resync(hub))).await;
                }
                Err(RecvError::Closed) => return None,
            },
            changed = closed.changed() => {
                if changed.is_err() || *closed.borrow() {
                    return None;
                }
            }
        }
    }
}
