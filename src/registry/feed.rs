//! The registry's change feed: what a follower (an aqueduct, the UI) receives. A follower first
//! gets a snapshot, then `online`/`offline` events, each with a monotonic sequence number so it
//! can resume after a disconnect. This module owns the types and their server-sent-events
//! encoding, shared by the server (`GET /events`) and the HTTP follower.

use super::model::Registration;
use serde::{Deserialize, Serialize};

/// Why a registration went offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OfflineReason {
    Deleted,
    Expired,
}

impl OfflineReason {
    pub fn as_str(self) -> &'static str {
        match self {
            OfflineReason::Deleted => "deleted",
            OfflineReason::Expired => "expired",
        }
    }
}

/// A change to the set of registrations.
#[derive(Debug, Clone, PartialEq)]
pub enum RegistryEvent {
    /// A registration that is new, or whose `meta` changed. Plain heartbeats are not events.
    Online(Registration),
    /// A registration that was deleted or expired.
    Offline { id: String, reason: OfflineReason },
}

/// Payload of an `offline` event on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfflinePayload {
    pub id: String,
    pub reason: OfflineReason,
}

/// Payload of a `snapshot` event on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotPayload {
    pub registrations: Vec<Registration>,
}

/// One item of the feed as a follower sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedItem {
    /// The complete current set; replaces whatever the follower had. `seq` is the sequence
    /// number of the last event included in it (resume from there).
    Snapshot {
        seq: u64,
        registrations: Vec<Registration>,
    },
    /// One change, numbered.
    Event { seq: u64, event: RegistryEvent },
}

impl FeedItem {
    pub fn is_snapshot(&self) -> bool {
        matches!(self, FeedItem::Snapshot { .. })
    }

    pub fn seq(&self) -> u64 {
        match self {
            FeedItem::Snapshot { seq, .. } | FeedItem::Event { seq, .. } => *seq,
        }
    }

    /// Encodes as one server-sent-events message (`id:`, `event:`, `data:` lines and a blank
    /// line). JSON never contains a raw newline, so one `data:` line always suffices.
    pub fn to_sse(&self) -> String {
        let (name, data) = match self {
            FeedItem::Snapshot { registrations, .. } => (
                "snapshot",
                serde_json::to_string(&SnapshotPayload {
                    registrations: registrations.clone(),
                }),
            ),
            FeedItem::Event {
                event: RegistryEvent::Online(reg),
                ..
            } => ("online", serde_json::to_string(reg)),
            FeedItem::Event {
                event: RegistryEvent::Offline { id, reason },
                ..
            } => (
                "offline",
                serde_json::to_string(&OfflinePayload {
                    id: id.clone(),
                    reason: *reason,
                }),
            ),
        };
        let data = data.unwrap_or_else(|_| "null".to_owned());
        format!("id: {}\nevent: {name}\ndata: {data}\n\n", self.seq())
    }

    /// Decodes one SSE message (its `id`, `event` name and joined `data`).
    pub fn from_sse(id: &str, event: &str, data: &str) -> Result<FeedItem, FeedDecodeError> {
        let seq: u64 = id
            .trim()
            .parse()
            .map_err(|_| FeedDecodeError(format!("bad event id {id:?}")))?;
        let json_err = |err: serde_json::Error| FeedDecodeError(format!("{event}: {err}"));
        match event {
            "snapshot" => {
                let payload: SnapshotPayload = serde_json::from_str(data).map_err(json_err)?;
                Ok(FeedItem::Snapshot {
                    seq,
                    registrations: payload.registrations,
                })
            }
            "online" => Ok(FeedItem::Event {
                seq,
                event: RegistryEvent::Online(serde_json::from_str(data).map_err(json_err)?),
            }),
            "offline" => {
                let payload: OfflinePayload = serde_json::from_str(data).map_err(json_err)?;
                Ok(FeedItem::Event {
                    seq,
                    event: RegistryEvent::Offline {
                        id: payload.id,
                        reason: payload.reason,
                    },
                })
            }
            other => Err(FeedDecodeError(format!("unknown event {other:?}"))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("registry feed: {0}")]
pub struct FeedDecodeError(pub String);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::model::RegistrationKey;

    fn round_trip(item: FeedItem) {
        let text = item.to_sse();
        let mut id = "";
        let mut event = "";
        let mut data = "";
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = v;
            } else if let Some(v) = line.strip_prefix("event: ") {
                event = v;
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = v;
            }
        }
        assert_eq!(FeedItem::from_sse(id, event, data).expect("decodes"), item);
    }

    #[test]
    fn every_kind_round_trips() {
        let key = RegistrationKey::parse("a", "1", "127.0.0.1", "80").expect("valid");
        let reg = Registration::new(key, 5, serde_json::Map::new());
        round_trip(FeedItem::Snapshot {
            seq: 3,
            registrations: vec![reg.clone()],
        });
        round_trip(FeedItem::Event {
            seq: 4,
            event: RegistryEvent::Online(reg.clone()),
        });
        round_trip(FeedItem::Event {
            seq: 5,
            event: RegistryEvent::Offline {
                id: reg.id.clone(),
                reason: OfflineReason::Expired,
            },
        });
    }
}
