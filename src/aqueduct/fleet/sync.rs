//! The follower: keeps this node on the store's current config version. It reads the change
//! stream on a connection of its own (`XREAD BLOCK`), and on every new entry, on a wake from a
//! local write, and every few seconds anyway, compares the store's version with the one it
//! runs and adopts the newer one. A version this node refused is not retried until a newer one
//! arrives (each try costs a `haproxy -c`).

use super::Fleet;
use super::items;
use crate::registry::store::StoreResult;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Longest block of one `XREAD`; also how often the version is checked without any entry.
const BLOCK: Duration = Duration::from_secs(2);
/// Pause after a failed store call.
const RETRY: Duration = Duration::from_millis(250);

/// Follows the store until `closing`.
pub async fn follow(fleet: Fleet, closing: CancellationToken) {
    let mut tried: Option<u64> = None;
    let mut follower = None;
    let mut warned_unreachable = false;
    loop {
        if closing.is_cancelled() {
            return;
        }
        // The position is taken before the read, so an entry committed in between is seen.
        let position = fleet.inner.store.last_change_id().await;
        let synced = match &position {
            Ok(_) => sync_once(&fleet, &mut tried).await,
            Err(err) => Err(err.clone()),
        };
        match synced {
            Ok(()) => {
                if warned_unreachable {
                    tracing::info!("the fleet's store is reachable again: following it");
                    warned_unreachable = false;
                }
            }
            Err(err) => {
                if !warned_unreachable {
                    tracing::warn!(error = %err,
                        "the fleet's store is out of reach: serving the config this node runs");
                    warned_unreachable = true;
                }
                follower = None;
                tokio::select! {
                    _ = closing.cancelled() => return,
                    _ = fleet.inner.wake.notified() => {}
                    _ = tokio::time::sleep(RETRY) => {}
                }
                continue;
            }
        }
        let position = position.unwrap_or_else(|_| "$".to_owned());
        if follower.is_none() {
            follower = fleet.inner.store.follower_connection(BLOCK).await.ok();
        }
        let Some(connection) = follower.as_mut() else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        tokio::select! {
            _ = closing.cancelled() => return,
            _ = fleet.inner.wake.notified() => {}
            read = fleet.inner.store.wait_for_changes(connection, &position, BLOCK) => {
                if read.is_err() {
                    follower = None;
                }
            }
        }
    }
}

/// Adopts the store's version if it is newer than the one this node runs (and not one it
/// refused); seeds an empty store with this node's own config.
async fn sync_once(fleet: &Fleet, tried: &mut Option<u64>) -> StoreResult<()> {
    let inner = &fleet.inner;
    // The version alone first: the whole config is read only when there is a new one.
    let version = inner.store.current_version().await?;
    if version != 0 && (version <= fleet.applied_version() || *tried == Some(version)) {
        return Ok(());
    }
    let _gate = inner.gate.lock().await;
    let stored = inner.store.read().await?;
    if stored.version == 0 {
        let own = inner.controller.config();
        if own.frontends.is_empty() && own.backends.is_empty() {
            return Ok(());
        }
        if inner
            .store
            .seed(&inner.node.id, &items::to_items(&own))
            .await?
        {
            tracing::info!(
                "the fleet's store held no config: this node's own config is its first version"
            );
            fleet.mark_applied(1);
        } else {
            // Another node's config came first: adopt it in the next round, at once.
            inner.wake.notify_one();
        }
        return Ok(());
    }
    let applied = fleet.applied_version();
    if stored.version <= applied || *tried == Some(stored.version) {
        return Ok(());
    }
    *tried = Some(stored.version);
    fleet
        .adopt(
            items::config_of(&stored),
            stored.version,
            &stored.last_node,
            &stored.last_change,
        )
        .await;
    Ok(())
}
