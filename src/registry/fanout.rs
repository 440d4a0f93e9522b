//! Delivers one [`Subscription`] to one follower through a bounded channel: the backlog first,
//! then live events, skipping duplicates, and a fresh snapshot whenever the follower fell so far
//! behind that live events were dropped for it.

use super::feed::FeedItem;
use super::handle::SubscriberCount;
use super::store::{RegistrationStore, Subscription};
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// Items buffered per follower before it counts as slow.
pub const FOLLOWER_BUFFER: usize = 1024;

pub(crate) fn forward(
    last_seen: Option<u64>,
    store: Arc<dyn RegistrationStore>,
    closing: CancellationToken,
    count: SubscriberCount,
) -> mpsc::Receiver<FeedItem> {
    let (tx, rx) = mpsc::channel(FOLLOWER_BUFFER);
    count.started();
    tokio::spawn(async move {
        let _count = count;
        tokio::select! {
            _ = closing.cancelled() => {}
            _ = run(last_seen, store, tx) => {}
        }
    });
    rx
}

async fn run(
    last_seen: Option<u64>,
    store: Arc<dyn RegistrationStore>,
    tx: mpsc::Sender<FeedItem>,
) {
    // The in-memory store answers at once; a shared one first catches its local copy up.
    let subscription = match store.subscribe(last_seen).await {
        Ok(subscription) => subscription,
        Err(err) => {
            // Ending the stream makes the follower reconnect (possibly to another node).
            tracing::warn!(error = %err, "cannot start a registry follower");
            return;
        }
    };
    let Subscription {
        backlog,
        mut covered_seq,
        mut live,
    } = subscription;
    for item in backlog {
        if tx.send(item).await.is_err() {
            return;
        }
    }
    loop {
        let received = tokio::select! {
            // The follower went away while all was quiet: stop counting it now.
            _ = tx.closed() => return,
            received = live.recv() => received,
        };
        let item = match received {
            // A snapshot always passes: after a store failover it may restart numbering.
            Ok(item) if item.seq() <= covered_seq && !item.is_snapshot() => continue,
            Ok(item) => item,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "a registry follower fell behind: sending a fresh snapshot"
                );
                store.snapshot()
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        covered_seq = item.seq();
        if tx.send(item).await.is_err() {
            return;
        }
    }
}
