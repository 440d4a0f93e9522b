//! The node's local copy of the shared store: a [`MemoryStore`] fed by the store's event
//! stream on a dedicated connection (`XREAD BLOCK` would stall a shared one). Reads, `/events`
//! followers and the capacity check use it, so they keep working, marked stale, while the
//! store is out of reach.
//!
//! The copy starts from a snapshot (meta, deadlines and the stream's last id, read in one
//! `MULTI`), then applies every later stream entry in order. Whenever it cannot be sure it
//! saw every entry since (a new primary after a failover, a reconnect after the stream was
//! trimmed past its position) it takes a new snapshot, and its followers get that snapshot
//! as one `Snapshot` item: never a silent gap.

use super::functions::{DEADLINES, EVENTS, META, StreamEntries, seq_of_stream_id};
use super::link::{Link, RESPONSE_TIMEOUT};
use crate::registry::feed::{OfflineReason, RegistryEvent};
use crate::registry::memory_store::MemoryStore;
use crate::registry::model::{Registration, RegistrationKey};
use crate::registry::record::RegistrationRecord;
use crate::registry::store::StoreExport;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamReadReply};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Longest block of one `XREAD`: the loop also notices a new primary this often.
const BLOCK: Duration = Duration::from_millis(500);
/// Most entries applied per read.
const BATCH: usize = 10_000;

/// Follows the store into `mirror` until `closing`; `applied` carries the sequence number of
/// the last entry applied (what readers wait for).
pub async fn follow(
    link: Arc<Link>,
    mirror: Arc<MemoryStore>,
    applied: watch::Sender<u64>,
    closing: CancellationToken,
) {
    // The stream id the copy is at, `None` until the first snapshot.
    let mut position: Option<String> = None;
    loop {
        if closing.is_cancelled() {
            return;
        }
        let generation = link.generation();
        let mut connection = match link.dedicated(BLOCK + RESPONSE_TIMEOUT).await {
            Ok(connection) => connection,
            Err(_) => {
                tokio::select! {
                    _ = closing.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            }
        };
        // Resume only from an entry the store still has; else start over from a snapshot.
        let resumable = match &position {
            Some(id) => still_has(&mut connection, id).await.unwrap_or(false),
            None => false,
        };
        if !resumable {
            match snapshot(&mut connection).await {
                Ok((export, last_id)) => {
                    tracing::info!(
                        registrations = export.records.len(),
                        at = %last_id,
                        "local copy of the store loaded"
                    );
                    let seq = export.seq;
                    mirror.reset(export);
                    position = Some(last_id);
                    link.replied();
                    applied.send_replace(seq);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot load the store's snapshot");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let Some(mut at) = position.clone() else {
            continue;
        };
        loop {
            if link.generation() != generation {
                tracing::info!("new store primary: checking the local copy");
                break;
            }
            let mut xread = redis::cmd("XREAD");
            xread
                .arg("COUNT")
                .arg(BATCH)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(EVENTS)
                .arg(&at);
            let read: redis::RedisResult<Option<StreamReadReply>> = tokio::select! {
                _ = closing.cancelled() => return,
                read = xread.query_async(&mut connection) => read,
            };
            let reply = match read {
                Ok(reply) => reply,
                Err(err) => {
                    tracing::debug!(error = %err, "the store's event stream broke off");
                    break;
                }
            };
            link.replied();
            let before = at.clone();
            let entries = reply
                .map(|reply| {
                    reply
                        .keys
                        .into_iter()
                        .flat_map(|key| key.ids)
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            // The stream is trimmed from its head: if the entry the read started from is
            // still there, nothing between it and what was read was trimmed away.
            if !entries.is_empty()
                && before != "0-0"
                && !still_has(&mut connection, &before).await.unwrap_or(false)
            {
                tracing::warn!(at = %before, "the store's stream was trimmed past this node's copy: reloading");
                position = None;
                break;
            }
            let mut in_order = true;
            for entry in &entries {
                let Some(seq) = seq_of_stream_id(&entry.id) else {
                    in_order = false;
                    break;
                };
                if let Some((event, deadline)) = parse_event(entry) {
                    if !mirror.apply_remote(seq, event, deadline) {
                        in_order = false;
                        break;
                    }
                    applied.send_replace(seq);
                } else {
                    tracing::warn!(id = %entry.id, "skipped an unreadable entry of the store's event stream");
                }
                at = entry.id.clone();
            }
            position = Some(at.clone());
            if !in_order {
                // Cannot happen with one stream; if it does, start over from a snapshot.
                position = None;
                break;
            }
        }
    }
}

/// Whether the stream still holds the entry `id`.
async fn still_has(connection: &mut MultiplexedConnection, id: &str) -> redis::RedisResult<bool> {
    if id == "0-0" {
        // The copy started from an empty stream: it has nothing to miss only if the stream
        // is still empty or starts after it... which it cannot tell; take a snapshot.
        return Ok(false);
    }
    let found: StreamEntries = redis::cmd("XRANGE")
        .arg(EVENTS)
        .arg(id)
        .arg(id)
        .query_async(connection)
        .await?;
    Ok(!found.is_empty())
}

/// Everything, consistent at one point of the stream (`MULTI`).
async fn snapshot(
    connection: &mut MultiplexedConnection,
) -> Result<(StoreExport, String), redis::RedisError> {
    let (metas, deadlines, last): (HashMap<String, String>, Vec<(String, f64)>, StreamEntries) =
        redis::pipe()
            .atomic()
            .cmd("HGETALL")
            .arg(META)
            .cmd("ZRANGE")
            .arg(DEADLINES)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .cmd("XREVRANGE")
            .arg(EVENTS)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(connection)
            .await?;
    let last_id = last
        .first()
        .map(|(id, _)| id.clone())
        .unwrap_or_else(|| "0-0".to_owned());
    let mut records = Vec::with_capacity(deadlines.len());
    for (id, deadline) in deadlines {
        let Some(value) = metas.get(&id) else {
            continue;
        };
        match record_of(&id, value, deadline as u64) {
            Some(record) => records.push(record),
            None => tracing::warn!(%id, "skipped an unreadable registration in the store"),
        }
    }
    records.sort_unstable_by(|a, b| a.id().cmp(b.id()));
    Ok((
        StoreExport {
            seq: seq_of_stream_id(&last_id).unwrap_or(0),
            records,
        },
        last_id,
    ))
}

/// A stored `"<lease ms>|<meta json>"` value as a record; `None` if anything is malformed
/// (a store is input like any other: nothing in it may panic the node).
pub fn record_of(id: &str, value: &str, deadline: u64) -> Option<RegistrationRecord> {
    let key = RegistrationKey::from_id(id)?;
    let (lease, meta) = value.split_once('|')?;
    let lease: u64 = lease.parse().ok()?;
    let meta_map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(meta).ok()?;
    Some(RegistrationRecord::new(
        &key,
        &meta_map,
        deadline.saturating_sub(lease),
        deadline,
    ))
}

fn field(entry: &StreamId, name: &str) -> Option<String> {
    entry.get::<String>(name)
}

/// One stream entry as an event and the deadline it set.
fn parse_event(entry: &StreamId) -> Option<(RegistryEvent, u64)> {
    let id = field(entry, "id")?;
    match field(entry, "k")?.as_str() {
        "on" => {
            let key = RegistrationKey::from_id(&id)?;
            let last_known: u64 = field(entry, "lk")?.parse().ok()?;
            let deadline: u64 = field(entry, "dl")?.parse().ok()?;
            let meta: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&field(entry, "m")?).ok()?;
            Some((
                RegistryEvent::Online(Registration::new(key, last_known, meta)),
                deadline,
            ))
        }
        "off" => {
            let reason = match field(entry, "r")?.as_str() {
                "deleted" => OfflineReason::Deleted,
                "expired" => OfflineReason::Expired,
                _ => return None,
            };
            Some((RegistryEvent::Offline { id, reason }, 0))
        }
        _ => None,
    }
}
