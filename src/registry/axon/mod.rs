//! The original registry's push channel, for subscribers that still speak it (the original
//! `thalassa` Node client's `subscribe()`, an original aqueduct, Crowsnest): an axon 1.0 PUB
//! socket (`--axon-listen`), fed from the same change feed as `GET /events`.
//!
//! What a subscriber receives, as the original sent it ([`frame`] has the bytes):
//! - `[id, "online", registration JSON]` for a new registration or changed meta (from any node
//!   of a cluster), **and for every plain heartbeat POSTed to this node**: original subscribers
//!   de-duplicate by id and meta, and repair a missed `online` from the next heartbeat;
//! - `[id, "offline"]` for a delete or an expiry.
//!
//! Differences from the original, on purpose: a subscriber that does not read fast enough is
//! disconnected (its queue holds [`SUBSCRIBER_QUEUE`] messages) rather than buffered without
//! bound; when this publisher itself falls behind the feed it re-announces the whole set
//! (`online` for every registration, `offline` for those gone) instead of missing changes.
//! Heartbeats POSTed to another node of a cluster are not relayed (each node relays its own,
//! as each original node published its own).

pub mod frame;

use super::feed::{FeedItem, RegistryEvent};
use super::handle::Registry;
use super::model::Registration;
use bytes::Bytes;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Messages queued for one subscriber before it counts as too slow and is disconnected.
pub const SUBSCRIBER_QUEUE: usize = 4096;

/// Most queued messages written to a subscriber in one write.
const WRITE_BATCH: usize = 256;

/// Pause before following the change feed again after it ended.
const RESUBSCRIBE_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// The running publisher. Stops with [`AxonPublisher::stop`] or when the registry closes.
#[derive(Debug)]
pub struct AxonPublisher {
    local_addr: SocketAddr,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl AxonPublisher {
    /// Starts publishing `registry`'s changes to every subscriber that connects to `listener`.
    pub fn start(listener: TcpListener, registry: Registry) -> std::io::Result<AxonPublisher> {
        let local_addr = listener.local_addr()?;
        let stop = registry.closing().child_token();
        let subscribers = Subscribers::default();
        // Subscribe before accepting anyone, so no change between the two is missed.
        let feed = registry.subscribe(None);
        let refreshes = registry.refreshes();
        let tasks = vec![
            tokio::spawn(accept(listener, subscribers.clone(), stop.clone())),
            tokio::spawn(publish(
                feed,
                refreshes,
                subscribers,
                registry,
                stop.clone(),
            )),
        ];
        tracing::info!(listen = %local_addr, "axon publisher listening (the original registry's push socket)");
        Ok(AxonPublisher {
            local_addr,
            stop,
            tasks,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, disconnects every subscriber and waits for the tasks.
    pub async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// One connected subscriber: its queue, and a token that disconnects it at once.
struct Subscriber {
    peer: SocketAddr,
    queue: mpsc::Sender<Bytes>,
    disconnect: CancellationToken,
}

/// The connected subscribers. The accept loop adds; the publisher sends and removes.
#[derive(Clone, Default)]
struct Subscribers(Arc<Mutex<Vec<Subscriber>>>);

impl Subscribers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `message` for every subscriber; drops those gone or too slow. Returns how many
    /// were dropped for being slow.
    fn send(&self, message: &Bytes) -> u64 {
        let mut slow = 0;
        self.lock().retain(|subscriber| {
            match subscriber.queue.try_send(message.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Closed(_)) => false,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(
                        peer = %subscriber.peer,
                        queued = SUBSCRIBER_QUEUE,
                        "axon subscriber too slow: disconnecting it (it reconnects and resyncs from heartbeats)"
                    );
                    subscriber.disconnect.cancel();
                    slow += 1;
                    false
                }
            }
        });
        slow
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

async fn accept(listener: TcpListener, subscribers: Subscribers, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %err, "axon publisher cannot accept a subscriber");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (queue, queued) = mpsc::channel(SUBSCRIBER_QUEUE);
        let disconnect = stop.child_token();
        subscribers.lock().push(Subscriber {
            peer,
            queue,
            disconnect: disconnect.clone(),
        });
        tracing::debug!(%peer, "axon subscriber connected");
        tokio::spawn(serve_subscriber(stream, peer, queued, disconnect));
    }
}

/// Writes the subscriber's queue to its socket until it disconnects, is disconnected, or the
/// publisher stops. Whatever a subscriber sends is read and ignored (axon subscribers send
/// nothing; reading is how its close is noticed while all is quiet).
async fn serve_subscriber(
    stream: TcpStream,
    peer: SocketAddr,
    mut queued: mpsc::Receiver<Bytes>,
    disconnect: CancellationToken,
) {
    let (mut reader, mut writer) = stream.into_split();
    let mut sink = [0u8; 512];
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let mut out = bytes::BytesMut::new();
    loop {
        tokio::select! {
            _ = disconnect.cancelled() => break,
            // Whatever queued up while the last write ran goes out in one write: under a burst
            // of heartbeats that is one syscall per batch, not one per message.
            received = queued.recv_many(&mut batch, WRITE_BATCH) => {
                if received == 0 {
                    break;
                }
                out.clear();
                for message in batch.drain(..) {
                    out.extend_from_slice(&message);
                }
                if writer.write_all(&out).await.is_err() {
                    break;
                }
            }
            read = reader.read(&mut sink) => {
                if matches!(read, Ok(0) | Err(_)) {
                    break;
                }
            }
        }
    }
    tracing::debug!(%peer, "axon subscriber disconnected");
}

/// Turns the change feed and this node's heartbeats into axon messages for every subscriber.
async fn publish(
    mut feed: mpsc::Receiver<FeedItem>,
    mut refreshes: broadcast::Receiver<Registration>,
    subscribers: Subscribers,
    registry: Registry,
    stop: CancellationToken,
) {
    let counters = registry.axon_counters();
    let mut known = Known::default();
    loop {
        let messages = tokio::select! {
            _ = stop.cancelled() => break,
            item = feed.recv() => match item {
                Some(item) => known.messages_for(item),
                // The feed ends when a shared store could not start it (or the registry
                // closes): follow it again; its first item, a snapshot, tells what changed.
                None => {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(RESUBSCRIBE_AFTER) => {}
                    }
                    feed = registry.subscribe(None);
                    continue;
                }
            },
            refreshed = refreshes.recv() => match refreshed {
                Ok(registration) => vec![online(&registration)],
                // Missed heartbeats only delay a repair; the feed itself lost nothing.
                Err(broadcast::error::RecvError::Lagged(_)) => Vec::new(),
                Err(broadcast::error::RecvError::Closed) => break,
            },
        };
        for message in messages.into_iter().flatten() {
            let slow = subscribers.send(&message);
            counters.dropped_slow.add(slow);
            counters.messages.inc();
        }
        counters.set_subscribers(subscribers.len());
    }
    for subscriber in subscribers.lock().drain(..) {
        subscriber.disconnect.cancel();
    }
    counters.set_subscribers(0);
}

/// The ids the subscribers were told are online: a fresh snapshot (after the publisher fell
/// behind the feed) becomes `offline` for those gone and `online` for every one present.
#[derive(Default)]
struct Known {
    ids: HashSet<String>,
    /// The first snapshot is the state before any subscriber could connect: the original
    /// announced nothing at start-up either.
    started: bool,
}

impl Known {
    fn messages_for(&mut self, item: FeedItem) -> Vec<Option<Bytes>> {
        match item {
            FeedItem::Snapshot { registrations, .. } => {
                let now: HashSet<String> = registrations.iter().map(|r| r.id.clone()).collect();
                let mut messages = Vec::new();
                if self.started {
                    messages.extend(self.ids.difference(&now).map(|id| offline(id)));
                    messages.extend(registrations.iter().map(online));
                }
                self.started = true;
                self.ids = now;
                messages
            }
            FeedItem::Event {
                event: RegistryEvent::Online(registration),
                ..
            } => {
                self.ids.insert(registration.id.clone());
                vec![online(&registration)]
            }
            FeedItem::Event {
                event: RegistryEvent::Offline { id, .. },
                ..
            } => {
                self.ids.remove(&id);
                vec![offline(&id)]
            }
        }
    }
}

/// `[id, "online", registration JSON]`; `None` (logged) for a registration too large for the
/// 24-bit length (a meta of 16 MiB cannot pass the API's body limit, so this is defensive).
fn online(registration: &Registration) -> Option<Bytes> {
    let json = serde_json::to_vec(registration).ok()?;
    encoded(&[registration.id.as_bytes(), b"online", &json])
}

/// `[id, "offline"]`.
fn offline(id: &str) -> Option<Bytes> {
    encoded(&[id.as_bytes(), b"offline"])
}

fn encoded(parts: &[&[u8]]) -> Option<Bytes> {
    frame::multipart(parts)
        .inspect_err(|err| tracing::warn!(error = %err, "axon message not sent"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::model::RegistrationKey;

    fn registration(port: u16) -> Registration {
        let key = RegistrationKey::parse("web", "1", "127.0.0.1", &port.to_string()).unwrap();
        Registration::new(key, 0, Default::default())
    }

    /// The parts of each message, as text, for readable assertions.
    fn parts(messages: Vec<Option<Bytes>>) -> Vec<Vec<String>> {
        messages
            .into_iter()
            .map(|message| {
                let message = message.unwrap();
                let mut rest = &message[4..];
                let mut parts = Vec::new();
                while !rest.is_empty() {
                    let length = u32::from_be_bytes([0, rest[1], rest[2], rest[3]]) as usize;
                    let part = String::from_utf8(rest[4..4 + length].to_vec()).unwrap();
                    parts.push(if part.starts_with('{') {
                        "{json}".into()
                    } else {
                        part
                    });
                    rest = &rest[4 + length..];
                }
                parts
            })
            .collect()
    }

    #[test]
    fn the_first_snapshot_is_silent_and_a_later_one_resyncs_subscribers() {
        let mut known = Known::default();
        let first = FeedItem::Snapshot {
            seq: 1,
            registrations: vec![registration(1), registration(2)],
        };
        assert!(
            known.messages_for(first).is_empty(),
            "the original announced nothing at start"
        );
        let online = FeedItem::Event {
            seq: 2,
            event: RegistryEvent::Online(registration(3)),
        };
        assert_eq!(
            parts(known.messages_for(online)),
            [["/web/1/127.0.0.1/3", "online", "{json}"]]
        );
        // The publisher fell behind (or followed the feed again): 1 went away meanwhile.
        let resync = FeedItem::Snapshot {
            seq: 9,
            registrations: vec![registration(2), registration(3)],
        };
        assert_eq!(
            parts(known.messages_for(resync)),
            [
                vec!["/web/1/127.0.0.1/1", "offline"],
                vec!["/web/1/127.0.0.1/2", "online", "{json}"],
                vec!["/web/1/127.0.0.1/3", "online", "{json}"],
            ]
        );
    }
}
