//! A fleet of aqueducts on one shared store (`--store`): one configuration, applied by every
//! node to its own HAProxy, and one view of what each node runs.
//!
//! - **Writes** (`submit`): the node that takes a PUT/DELETE/POST checks it on its own config
//!   (`haproxy -c`, bind pre-flight), commits it to the store based on the version it runs
//!   (a Function refuses it with 409 when the same item changed since; other items' changes
//!   are rebased over), applies it, and answers once it is live here (`?wait=fleet`: once
//!   every live node applied or refused it).
//! - **Followers** ([`sync`]): every node follows the store's change stream and adopts each
//!   new version as one change of its apply pipeline: one reload at most, none when its config
//!   is already equal. A version its HAProxy refuses leaves the node on its previous config,
//!   serving, and the refusal in its report.
//! - **Reports** ([`report`]): each node writes what it runs (version, outcome, HAProxy's
//!   error lines, HAProxy version, member health) every second; `GET /fleet` reads them all.
//! - **No store**: a node that cannot reach the store keeps serving what it runs, refuses
//!   writes with 503 (nothing is queued), starts from its local `aqueduct.json` when the store
//!   is out of reach at startup, and catches up when it returns.

pub mod items;
pub mod report;
pub mod store;
pub mod sync;

use super::controller::{ApplyError, Change, Controller};
use crate::api_error::ApiError;
use crate::config::Config;
use crate::registry::redis_store::StoreUrl;
use crate::registry::redis_store::link::Link;
use report::{FleetView, NodeOutcome};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{Committed, FleetStore, ItemWrite};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

/// Longest a write waits to be live on this node (or, with `?wait=fleet`, on every node).
const LIVE_LIMIT: Duration = Duration::from_secs(30);

/// Who this node is, as the fleet shows it.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    /// `--node-id` (default: the host name).
    pub id: String,
    /// The API's address for operators (`http://host:port`).
    pub address: String,
}

/// Facts about this node that only the application knows (HAProxy's version, member health):
/// merged into each report.
pub type NodeFacts = Arc<dyn Fn() -> Value + Send + Sync>;

/// How long a write waits before it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFor {
    /// Until it is live on the node that took it.
    ThisNode,
    /// Until every live node applied or refused it.
    Fleet,
}

/// Handle to this node's membership of the fleet; cheap to clone.
#[derive(Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
}

struct Inner {
    store: FleetStore,
    node: NodeIdentity,
    controller: Controller,
    facts: NodeFacts,
    /// The store's config version this node runs (0: none yet).
    applied: watch::Sender<u64>,
    /// What happened to the last version this node tried.
    outcome: Mutex<NodeOutcome>,
    /// Held while a version is read and applied, or a write is checked, committed and applied,
    /// so a node never goes back to an older version.
    gate: tokio::sync::Mutex<()>,
    /// Wakes the follower to read the store now.
    wake: Notify,
    /// Wakes the reporter to write this node's report now.
    report_now: Notify,
    started_ms: u64,
}

/// The fleet's store before this node's pipeline runs: [`StoreStart::current_config`] gives
/// the config to start HAProxy with, so a (re)starting node reloads once at most.
pub struct StoreStart {
    store: FleetStore,
}

impl StoreStart {
    /// Starts the connection to `url` (kept until `closing`).
    pub fn connect(url: StoreUrl, closing: &CancellationToken) -> StoreStart {
        let link = Link::new(url, store::LIBRARY);
        tokio::spawn(link.clone().keep(closing.clone()));
        StoreStart {
            store: FleetStore::new(link),
        }
    }

    /// The fleet's current version and config, waiting up to `limit` for the store; `None`
    /// when it is out of reach or holds no config yet. Items that do not validate are left
    /// out (and logged).
    pub async fn current_config(&self, limit: Duration) -> Option<(u64, Config)> {
        self.store.link().wait_connected(limit).await.ok()?;
        let stored = self.store.read().await.ok()?;
        if stored.version == 0 {
            return None;
        }
        Some((stored.version, items::config_of(&stored)))
    }
}

impl Fleet {
    /// Joins the fleet on `store`: starts the follower and the reporter until `closing`.
    /// `running` is the store version the controller started with (0: its local copy).
    pub fn start(
        store: StoreStart,
        node: NodeIdentity,
        controller: Controller,
        facts: NodeFacts,
        running: u64,
        closing: CancellationToken,
    ) -> Fleet {
        let outcome = if running > 0 {
            NodeOutcome::Applied { version: running }
        } else {
            NodeOutcome::Starting
        };
        let fleet = Fleet {
            inner: Arc::new(Inner {
                store: store.store,
                node,
                controller,
                facts,
                applied: watch::channel(running).0,
                outcome: Mutex::new(outcome),
                gate: tokio::sync::Mutex::new(()),
                wake: Notify::new(),
                report_now: Notify::new(),
                started_ms: crate::registry::clock::now_ms(),
            }),
        };
        tokio::spawn(sync::follow(fleet.clone(), closing.clone()));
        tokio::spawn(report::publish(fleet.clone(), closing));
        fleet
    }

    pub fn node(&self) -> &NodeIdentity {
        &self.inner.node
    }

    /// The config version this node runs.
    pub fn applied_version(&self) -> u64 {
        *self.inner.applied.borrow()
    }

    fn outcome(&self) -> NodeOutcome {
        self.inner
            .outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_outcome(&self, outcome: NodeOutcome) {
        *self.inner.outcome.lock().unwrap_or_else(|p| p.into_inner()) = outcome;
        self.inner.report_now.notify_one();
    }

    fn mark_applied(&self, version: u64) {
        self.inner.applied.send_if_modified(|applied| {
            let newer = version > *applied;
            if newer {
                *applied = version;
            }
            newer
        });
        self.set_outcome(NodeOutcome::Applied { version });
    }

    /// Takes a change from the API: checks it here, commits it to the store, applies it, and
    /// answers with the fleet's state once it is live (see [`WaitFor`]).
    pub async fn submit(&self, change: Change, wait: WaitFor) -> Result<Value, ApiError> {
        let version = {
            let _gate = self.inner.gate.lock().await;
            let base = self.applied_version();
            let candidate = self.inner.controller.check(&change).await?;
            let writes = writes_of(&change, &candidate);
            let committed = self
                .inner
                .store
                .commit(base, &self.inner.node.id, &change.describe(), &writes)
                .await
                .map_err(store::unavailable)?;
            let version = match committed {
                Committed::Version(version) => version,
                Committed::Conflict { field, version } => {
                    return Err(conflict(&field, version, base));
                }
            };
            if version == base + 1 {
                // Nothing else was committed in between: the candidate is exactly the
                // store's new version, apply it now instead of reading it back.
                self.adopt(candidate, version, &self.inner.node.id, &change.describe())
                    .await;
            }
            version
        };
        self.inner.wake.notify_one();
        self.wait_live_here(version).await?;
        if wait == WaitFor::Fleet {
            report::wait_fleet(self, version, LIVE_LIMIT).await;
        }
        let view = self.view().await.ok();
        Ok(report::write_answer(version, view.as_ref()))
    }

    /// Waits until this node runs `version` or later; a refusal here is the answer's error.
    async fn wait_live_here(&self, version: u64) -> Result<(), ApiError> {
        let mut applied = self.inner.applied.subscribe();
        let reached = tokio::time::timeout(LIVE_LIMIT, async {
            loop {
                if *applied.borrow_and_update() >= version {
                    return Ok(());
                }
                if let NodeOutcome::Refused {
                    version: refused,
                    error,
                    ..
                } = self.outcome()
                    && refused >= version
                {
                    return Err(ApiError::new(
                        axum::http::StatusCode::CONFLICT,
                        format!(
                            "the change was committed to the fleet as version {version}, but \
                             this node could not apply it: {error}"
                        ),
                    ));
                }
                tokio::select! {
                    changed = applied.changed() => if changed.is_err() { return Ok(()); },
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        })
        .await;
        reached.unwrap_or_else(|_| {
            Err(ApiError::unavailable(format!(
                "the change was committed as version {version} but is not live on this node \
                 after {} s",
                LIVE_LIMIT.as_secs()
            )))
        })
    }

    /// Applies the fleet's `config` of `version` through the apply pipeline (one reload at
    /// most, none when it is what runs already) and records the outcome.
    async fn adopt(&self, config: Config, version: u64, origin: &str, reason: &str) {
        let controller = &self.inner.controller;
        if *controller.config() == config {
            self.mark_applied(version);
            return;
        }
        let change = Change::Adopt {
            config: Box::new(config),
            version,
            origin: origin.to_owned(),
            reason: reason.to_owned(),
        };
        match controller.submit(change).await {
            Ok(()) => {
                tracing::info!(version, origin, reason, "applied the fleet's config");
                self.mark_applied(version);
            }
            Err(err) => {
                let lines = match &err {
                    ApplyError::Rejected(rejected) => rejected.lines.clone(),
                    _ => Vec::new(),
                };
                tracing::warn!(version, origin, error = %err,
                    "this node refused the fleet's config; it keeps serving its previous one");
                self.set_outcome(NodeOutcome::Refused {
                    version,
                    error: err.to_string(),
                    lines,
                });
            }
        }
    }

    /// `GET /fleet`.
    pub async fn view(&self) -> Result<FleetView, ApiError> {
        report::view(self).await
    }
}

/// The store writes of `change`, whose result is `candidate`.
fn writes_of(change: &Change, candidate: &Config) -> Vec<ItemWrite> {
    let (field, json) = match change {
        Change::PutFrontend(f) => items::frontend_item(candidate, &f.key),
        Change::DeleteFrontend(key) => items::frontend_item(candidate, key),
        Change::PutBackend(b) => items::backend_item(candidate, &b.key),
        Change::DeleteBackend(key)
        | Change::SwitchVersion { key, .. }
        | Change::Rollout { key, .. } => items::backend_item(candidate, key),
        Change::Adopt { .. } => return Vec::new(),
    };
    vec![ItemWrite { field, json }]
}

fn conflict(field: &str, version: u64, base: u64) -> ApiError {
    let (kind, key) = field.split_once(':').unwrap_or(("item", field));
    ApiError {
        status: axum::http::StatusCode::CONFLICT,
        message: format!(
            "{kind} {key} was changed by another node of the fleet (version {version}) after \
             the version this node runs ({base}); read it again and retry"
        ),
        field: Some("key".to_owned()),
    }
}
