//! The fleet's keys in the shared store and the calls on them: commit, seed and read of the
//! configuration (Functions in `functions.lua`, each one atomic step), the change stream, and
//! the nodes' reports.

use crate::registry::redis_store::link::{Link, RESPONSE_TIMEOUT};
use crate::registry::store::{StoreError, StoreResult};
use redis::aio::MultiplexedConnection;
use std::sync::Arc;
use std::time::Duration;

/// The fleet's library, loaded by its [`Link`] on every new primary connection.
pub const LIBRARY: &str = include_str!("functions.lua");

/// Every key, under one hash tag (one slot in a Redis Cluster), apart from the registry's.
pub const VERSION: &str = "{thalassa-fleet}:version";
pub const ITEMS: &str = "{thalassa-fleet}:items";
pub const CHANGED: &str = "{thalassa-fleet}:changed";
pub const CHANGES: &str = "{thalassa-fleet}:changes";
pub const NODES: &str = "{thalassa-fleet}:nodes";
const CONFIG_KEYS: [&str; 4] = [VERSION, ITEMS, CHANGED, CHANGES];

/// One item written by a commit: `Some(json)` puts it, `None` deletes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemWrite {
    pub field: String,
    pub json: Option<String>,
}

/// How a commit ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// The new config version.
    Version(u64),
    /// `field` was written at `version`, after the base the change was made on.
    Conflict { field: String, version: u64 },
}

/// The configuration as of one version: `(field, json)` pairs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredConfig {
    pub version: u64,
    pub items: Vec<(String, String)>,
    /// The node that made the last commit, and what it was.
    pub last_node: String,
    pub last_change: String,
}

/// The fleet's view of the shared store.
#[derive(Clone)]
pub struct FleetStore {
    link: Arc<Link>,
}

fn fcall(function: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("FCALL");
    cmd.arg(function).arg(CONFIG_KEYS.len());
    for key in CONFIG_KEYS {
        cmd.arg(key);
    }
    cmd
}

impl FleetStore {
    pub fn new(link: Arc<Link>) -> FleetStore {
        FleetStore { link }
    }

    pub fn link(&self) -> &Arc<Link> {
        &self.link
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> StoreResult<T> {
        let (mut connection, generation) = self.link.connection()?;
        match cmd.query_async(&mut connection).await {
            Ok(value) => {
                self.link.replied();
                Ok(value)
            }
            Err(err) => Err(self.link.failed(generation, err)),
        }
    }

    /// Commits `writes`, made on the config of version `base`, for `node`.
    pub async fn commit(
        &self,
        base: u64,
        node: &str,
        description: &str,
        writes: &[ItemWrite],
    ) -> StoreResult<Committed> {
        // The store refuses the commit once this node has given up waiting for it (with a
        // margin for the clock offset's error), so a 503 never turns into a change later.
        let deadline = self.link.store_now_ms() + RESPONSE_TIMEOUT.as_millis() as u64 - 50;
        let mut cmd = fcall("thalassa_fleet_commit");
        cmd.arg(base).arg(node).arg(description).arg(deadline);
        for write in writes {
            match &write.json {
                Some(json) => cmd.arg("put").arg(&write.field).arg(json),
                None => cmd.arg("delete").arg(&write.field).arg(""),
            };
        }
        let (outcome, field, version): (String, String, u64) = self.query(&cmd).await?;
        match outcome.as_str() {
            "ok" => Ok(Committed::Version(version)),
            "conflict" => Ok(Committed::Conflict { field, version }),
            _ => Err(StoreError::Unreachable(
                "the store received the change too late and did not apply it".into(),
            )),
        }
    }

    /// Makes `items` version 1 if the store holds no config; whether it did.
    pub async fn seed(&self, node: &str, items: &[(String, String)]) -> StoreResult<bool> {
        let mut cmd = fcall("thalassa_fleet_seed");
        cmd.arg(node);
        for (field, json) in items {
            cmd.arg(field).arg(json);
        }
        let (seeded, _version): (u64, u64) = self.query(&cmd).await?;
        Ok(seeded == 1)
    }

    /// The current version and items.
    pub async fn read(&self) -> StoreResult<StoredConfig> {
        let (version, items, last_node, last_change): (u64, Vec<(String, String)>, String, String) =
            self.query(&fcall("thalassa_fleet_read")).await?;
        Ok(StoredConfig {
            version,
            items,
            last_node,
            last_change,
        })
    }

    /// The store's config version (0: none yet).
    pub async fn current_version(&self) -> StoreResult<u64> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(VERSION);
        let version: Option<u64> = self.query(&cmd).await?;
        Ok(version.unwrap_or(0))
    }

    /// Writes this node's report.
    pub async fn report(&self, node: &str, json: &str) -> StoreResult<()> {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(NODES).arg(node).arg(json);
        self.query::<u64>(&cmd).await.map(|_| ())
    }

    /// Removes this node's report (a clean shutdown: it is not shown as gone).
    pub async fn forget(&self, node: &str) -> StoreResult<()> {
        let mut cmd = redis::cmd("HDEL");
        cmd.arg(NODES).arg(node);
        self.query::<u64>(&cmd).await.map(|_| ())
    }

    /// Every node's report: `(node id, json)`.
    pub async fn reports(&self) -> StoreResult<Vec<(String, String)>> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(NODES);
        self.query(&cmd).await
    }

    /// A connection of its own for `XREAD BLOCK` (a blocking read would hold up every other
    /// command on the shared one).
    pub async fn follower_connection(&self, block: Duration) -> StoreResult<MultiplexedConnection> {
        self.link
            .dedicated(block + Duration::from_millis(500))
            .await
    }

    /// Waits up to `block` for change entries after `after` (a stream id; `$` = from now);
    /// returns the last entry's id when there were some.
    pub async fn wait_for_changes(
        &self,
        connection: &mut MultiplexedConnection,
        after: &str,
        block: Duration,
    ) -> StoreResult<Option<String>> {
        let generation = self.link.generation();
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(CHANGES)
            .arg(after);
        let reply: redis::RedisResult<Option<redis::streams::StreamReadReply>> =
            cmd.query_async(connection).await;
        match reply {
            Ok(reply) => {
                self.link.replied();
                Ok(reply.and_then(|reply| {
                    reply
                        .keys
                        .into_iter()
                        .flat_map(|key| key.ids)
                        .next_back()
                        .map(|entry| entry.id)
                }))
            }
            Err(err) => Err(self.link.failed(generation, err)),
        }
    }

    /// The stream id of the last change entry (`0-0` when there is none).
    pub async fn last_change_id(&self) -> StoreResult<String> {
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(CHANGES).arg("+").arg("-").arg("COUNT").arg(1);
        let entries: Vec<(String, std::collections::HashMap<String, redis::Value>)> =
            self.query(&cmd).await?;
        Ok(entries
            .into_iter()
            .next()
            .map_or_else(|| "0-0".to_owned(), |(id, _)| id))
    }
}

/// A store error as the API answers it (503: nothing was queued, retry after a moment).
pub fn unavailable(err: StoreError) -> crate::api_error::ApiError {
    let reason = match err {
        StoreError::Unreachable(reason) | StoreError::Unconfirmed(reason) => reason,
    };
    crate::api_error::ApiError::unavailable(format!(
        "the fleet's store is out of reach, nothing was changed: {reason}"
    ))
}
