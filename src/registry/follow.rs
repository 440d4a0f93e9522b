//! How an aqueduct follows a registry: in-process (a channel from the [`Registry`]) or over
//! HTTP (`GET /events`). Both deliver the same [`FeedItem`]s. The HTTP follower follows one
//! node of a registry cluster at a time; when that node's stream ends, fails, or stays silent
//! past [`IDLE_TIMEOUT`], it reconnects with backoff to the next node of the list
//! (round-robin) and resumes with `Last-Event-ID`, receiving what it missed or a fresh
//! snapshot. An outage produces no events at all (the follower just waits), so members are
//! never withdrawn because a registry node restarted or died.

use super::events::KEEPALIVE_EVERY;
use super::feed::FeedItem;
use super::handle::Registry;
use super::nodes::RegistryNodes;
use super::sse_decoder::{SseDecoder, SseMessage};
use crate::metrics::{Counter, PromText};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// First reconnect delay; each failure multiplies it by 1.5 up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// No byte for this long means a dead connection (or a hung node): the registry sends a
/// keep-alive every [`KEEPALIVE_EVERY`] when it has nothing else, so this is two missed ones.
pub const IDLE_TIMEOUT: Duration = KEEPALIVE_EVERY.saturating_mul(2);

/// Follows a registry in the same process.
pub fn in_process(registry: Registry) -> mpsc::Receiver<FeedItem> {
    registry.subscribe(None)
}

/// A feed over HTTP and where it comes from.
pub struct HttpFeed {
    pub items: mpsc::Receiver<FeedItem>,
    pub status: FollowerStatus,
}

/// Follows the registry cluster `nodes` (e.g. `http://127.0.0.1:9000`, or several nodes of one
/// cluster) until `items` is dropped, sending `token` (the registry's read or admin token) as a
/// bearer token.
pub fn over_http(nodes: RegistryNodes, token: Option<String>) -> HttpFeed {
    let (tx, items) = mpsc::channel(super::fanout::FOLLOWER_BUFFER);
    let status = FollowerStatus::new(nodes.clone());
    tokio::spawn(follow(nodes, token, tx, status.clone()));
    HttpFeed { items, status }
}

/// Which node an HTTP follower follows, for logs, tests and `/metrics`.
#[derive(Clone)]
pub struct FollowerStatus(Arc<StatusInner>);

struct StatusInner {
    nodes: RegistryNodes,
    /// The node followed now, or being tried.
    node: AtomicUsize,
    /// The node answered `GET /events` with a 200 and its stream is open.
    connected: AtomicBool,
    /// Moves to another node.
    failovers: Counter,
}

impl FollowerStatus {
    fn new(nodes: RegistryNodes) -> FollowerStatus {
        FollowerStatus(Arc::new(StatusInner {
            nodes,
            node: AtomicUsize::new(0),
            connected: AtomicBool::new(false),
            failovers: Counter::default(),
        }))
    }

    /// The base URL of the node followed now (or being tried, when not connected).
    pub fn node(&self) -> &str {
        self.0.nodes.name(self.0.node.load(Ordering::Acquire))
    }

    /// Whether a stream from [`FollowerStatus::node`] is open.
    pub fn connected(&self) -> bool {
        self.0.connected.load(Ordering::Acquire)
    }

    /// How many times the follower moved to another node.
    pub fn failovers(&self) -> u64 {
        self.0.failovers.get()
    }

    /// `thalassa_feed_node{url}` (1 for the node followed, 0 for the others),
    /// `thalassa_feed_connected` and `thalassa_feed_failovers_total`.
    pub fn render(&self, text: &mut PromText) {
        let current = self.0.node.load(Ordering::Acquire);
        let nodes = &self.0.nodes;
        let samples: Vec<(Vec<String>, f64)> = (0..nodes.len())
            .map(|index| {
                let followed = if index == current { 1.0 } else { 0.0 };
                (vec![nodes.name(index).to_owned()], followed)
            })
            .collect();
        text.gauge_family(
            "thalassa_feed_node",
            "Registry node the feed follows (1) or may fail over to (0).",
            &["url"],
            &samples,
        )
        .gauge(
            "thalassa_feed_connected",
            "1 while the registry feed's stream is open.",
            if self.connected() { 1.0 } else { 0.0 },
        )
        .counter(
            "thalassa_feed_failovers_total",
            "Times the registry feed moved to another registry node.",
            &self.0.failovers,
        );
    }

    fn set_node(&self, index: usize) {
        self.0.node.store(index, Ordering::Release);
    }

    fn set_connected(&self, connected: bool) {
        self.0.connected.store(connected, Ordering::Release);
    }
}

/// Why one connection ended.
#[derive(Debug)]
enum Ended {
    /// Nobody listens any more: stop following.
    ReceiverGone,
    /// The connection failed or closed; `connected` says whether it got as far as a 200.
    Disconnected { connected: bool, error: String },
}

async fn follow(
    nodes: RegistryNodes,
    token: Option<String>,
    tx: mpsc::Sender<FeedItem>,
    status: FollowerStatus,
) {
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
    let mut node = 0;
    loop {
        status.set_node(node);
        let follower = Connection {
            client: &client,
            url: nodes.endpoint(node, "/events"),
            node: nodes.name(node),
            tx: &tx,
            status: &status,
        };
        match follower.run(&mut last_seen, &mut failing).await {
            Ended::ReceiverGone => return,
            Ended::Disconnected { connected, error } => {
                status.set_connected(false);
                if connected {
                    backoff = FIRST_BACKOFF;
                }
                let next = nodes.next(node);
                // Log an outage once, not every retry.
                if !failing {
                    tracing::warn!(
                        node = %nodes.name(node),
                        next = %nodes.name(next),
                        error = %error,
                        "lost the registry feed; reconnecting with backoff"
                    );
                    failing = true;
                } else {
                    tracing::debug!(node = %nodes.name(node), error = %error, "registry node unavailable");
                }
                if next != node {
                    status.0.failovers.inc();
                }
                node = next;
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

/// One `GET /events` to one node.
struct Connection<'a> {
    client: &'a reqwest::Client,
    /// The node's `/events` URL.
    url: String,
    /// The node's base URL, for logs.
    node: &'a str,
    tx: &'a mpsc::Sender<FeedItem>,
    status: &'a FollowerStatus,
}

impl Connection<'_> {
    /// Follows the node until its stream ends; `last_seen` is the last sequence number handed
    /// on, sent as `Last-Event-ID` and advanced with every item.
    async fn run(&self, last_seen: &mut Option<u64>, failing: &mut bool) -> Ended {
        let disconnected =
            |connected: bool, error: String| Ended::Disconnected { connected, error };
        let tx = self.tx;
        let url = &self.url;
        let mut request = self.client.get(url).header("accept", "text/event-stream");
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
        self.status.set_connected(true);
        if *failing {
            tracing::info!(node = %self.node, resume_after = ?last_seen, "following the registry feed again");
            *failing = false;
        } else {
            tracing::info!(node = %self.node, resume_after = ?last_seen, "following the registry feed");
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

    #[test]
    fn a_node_is_dead_after_two_missed_keepalives() {
        assert_eq!(IDLE_TIMEOUT, Duration::from_secs(30));
    }

    #[test]
    fn status_names_the_node_followed() {
        let status =
            FollowerStatus::new(RegistryNodes::parse("http://a:9000,http://b:9000/").unwrap());
        status.set_node(1);
        status.set_connected(true);
        status.0.failovers.inc();
        assert_eq!(status.node(), "http://b:9000");
        let mut text = PromText::new();
        status.render(&mut text);
        let text = text.finish();
        for line in [
            "thalassa_feed_node{url=\"http://a:9000\"} 0",
            "thalassa_feed_node{url=\"http://b:9000\"} 1",
            "thalassa_feed_connected 1",
            "thalassa_feed_failovers_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
