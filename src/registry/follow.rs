//! How an aqueduct follows a registry: in-process (a channel from the [`Registry`]) or over
//! HTTP (`GET /events`). Both deliver the same [`FeedItem`]s. The HTTP follower reconnects with
//! backoff and resumes with `Last-Event-ID`; a registry outage produces no events at all (the
//! follower just waits), so members are never withdrawn because the registry restarted.

use super::feed::FeedItem;
use super::handle::Registry;
use super::sse_decoder::{SseDecoder, SseMessage};
use std::time::Duration;
use tokio::sync::mpsc;

/// First reconnect delay; each failure multiplies it by 1.5 up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// No byte for this long (the registry sends a keep-alive every 15 s) means a dead connection.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(45);

/// Follows a registry in the same process.
pub fn in_process(registry: Registry) -> mpsc::Receiver<FeedItem> {
    registry.subscribe(None)
}

/// Follows the registry at `base_url` (e.g. `http://127.0.0.1:9000`) until the receiver is
/// dropped.
pub fn over_http(base_url: String) -> mpsc::Receiver<FeedItem> {
    over_http_with_token(base_url, None)
}

/// [`over_http`] sending `token` (the registry's read or admin token) as a bearer token.
pub fn over_http_with_token(base_url: String, token: Option<String>) -> mpsc::Receiver<FeedItem> {
    let (tx, rx) = mpsc::channel(super::fanout::FOLLOWER_BUFFER);
    tokio::spawn(follow(base_url, token, tx));
    rx
}

/// Why one connection ended.
#[derive(Debug)]
enum Ended {
    /// Nobody listens any more: stop following.
    ReceiverGone,
    /// The connection failed or closed; `connected` says whether it got as far as a 200.
    Disconnected { connected: bool, error: String },
}

async fn follow(base_url: String, token: Option<String>, tx: mpsc::Sender<FeedItem>) {
    let url = format!("{}/events", base_url.trim_end_matches('/'));
    let headers = match crate::auth::client_headers(token.as_deref()) {
        Ok(headers) => headers,
        Err(err) => {
            tracing::error!(error = %err, "cannot follow the registry with this token");
            return;
        }
    };
    let client = match reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .default_headers(headers)
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(error = %err, "cannot build the HTTP client to follow the registry");
            return;
        }
    };
    let mut last_seen: Option<u64> = None;
    let mut backoff = FIRST_BACKOFF;
    let mut failing = false;
    loop {
        match connect(&client, &url, &mut last_seen, &tx, &mut failing).await {
            Ended::ReceiverGone => return,
            Ended::Disconnected { connected, error } => {
                if connected {
                    backoff = FIRST_BACKOFF;
                }
                // Log an outage once, not every retry.
                if !failing {
                    tracing::warn!(url = %url, error = %error, "lost the registry feed; reconnecting with backoff");
                    failing = true;
                }
            }
        }
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = next_backoff(backoff);
    }
}

fn next_backoff(current: Duration) -> Duration {
    current.mul_f64(1.5).min(MAX_BACKOFF)
}

async fn connect(
    client: &reqwest::Client,
    url: &str,
    last_seen: &mut Option<u64>,
    tx: &mpsc::Sender<FeedItem>,
    failing: &mut bool,
) -> Ended {
    let disconnected = |connected: bool, error: String| Ended::Disconnected { connected, error };
    let mut request = client.get(url).header("accept", "text/event-stream");
    if let Some(seen) = last_seen {
        request = request.header("last-event-id", seen.to_string());
    }
    let mut response = tokio::select! {
        _ = tx.closed() => return Ended::ReceiverGone,
        sent = request.send() => match sent {
            Ok(response) => response,
            Err(err) => return disconnected(false, err.to_string()),
        },
    };
    if !response.status().is_success() {
        return disconnected(false, format!("GET {url} answered {}", response.status()));
    }
    if *failing {
        tracing::info!(url = %url, "following the registry feed again");
        *failing = false;
    }
    let mut decoder = SseDecoder::default();
    loop {
        let chunk = tokio::select! {
            _ = tx.closed() => return Ended::ReceiverGone,
            chunk = tokio::time::timeout(IDLE_TIMEOUT, response.chunk()) => chunk,
        };
        let bytes = match chunk {
            Ok(Ok(Some(bytes))) => bytes,
            Ok(Ok(None)) => return disconnected(true, "the registry closed the feed".into()),
            Ok(Err(err)) => return disconnected(true, err.to_string()),
            Err(_) => return disconnected(true, format!("no data for {IDLE_TIMEOUT:?}")),
        };
        let messages = match decoder.push(&bytes) {
            Ok(messages) => messages,
            Err(err) => return disconnected(true, err.to_string()),
        };
        for message in messages {
            let Some(item) = decode(&message) else {
                continue;
            };
            *last_seen = Some(item.seq());
            if tx.send(item).await.is_err() {
                return Ended::ReceiverGone;
            }
        }
    }
}

/// Turns one SSE message into a feed item; unknown or malformed messages are logged and
/// skipped (a newer registry may send kinds this follower does not know).
fn decode(message: &SseMessage) -> Option<FeedItem> {
    let id = message.id.as_deref().unwrap_or("");
    match FeedItem::from_sse(id, &message.event, &message.data) {
        Ok(item) => Some(item),
        Err(err) => {
            tracing::warn!(error = %err, event = %message.event, "skipped a registry feed message");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_by_half_up_to_five_seconds() {
        let mut delays = vec![FIRST_BACKOFF];
        for _ in 0..12 {
            delays.push(next_backoff(*delays.last().unwrap()));
        }
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(&ms[..4], &[100, 150, 225, 337]);
        assert_eq!(*ms.last().unwrap(), 5000);
    }
}
