//! What each node runs, as the fleet sees it: every node writes its report to the store every
//! second (and at once after each apply); `GET /fleet` reads all of them and says which node
//! lags, which refused a version, and which stopped reporting (gone).

use super::Fleet;
use crate::api_error::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a node reports when nothing changes.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// A node whose last report is older than this is shown as gone.
pub const GONE_AFTER_MS: u64 = 5_000;

/// What happened to the last version a node tried.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeOutcome {
    /// No version from the store applied yet (the node runs its local copy).
    Starting,
    Applied {
        version: u64,
    },
    /// HAProxy on this node refused `version` (`haproxy -c`, a bind in use, a failed reload):
    /// the node keeps serving its previous config.
    Refused {
        version: u64,
        error: String,
        lines: Vec<String>,
    },
}

/// One node's report, as stored (JSON) and as `GET /fleet` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    pub id: String,
    pub address: String,
    /// The config version the node runs.
    pub version: u64,
    /// `starting`, `applied` or `refused`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// HAProxy's own lines about the refusal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_lines: Vec<String>,
    pub started_ms: u64,
    /// The store's clock when the report was written.
    pub last_seen_ms: u64,
    /// Node facts: `haproxyVersion`, `members` (health).
    #[serde(flatten)]
    pub facts: Map<String, Value>,
}

/// A node's row in `GET /fleet`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    #[serde(flatten)]
    pub report: NodeReport,
    /// Versions behind the store's.
    pub lag: u64,
    /// No report for [`GONE_AFTER_MS`].
    pub gone: bool,
    /// The node that answered this request.
    #[serde(rename = "self")]
    pub is_self: bool,
}

/// `GET /fleet`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FleetView {
    /// The store's config version.
    pub version: u64,
    /// The node that answered.
    pub node: String,
    pub nodes: Vec<NodeRow>,
}

impl FleetView {
    /// Whether every live node applied `version` (or later) or refused it.
    fn settled(&self, version: u64) -> bool {
        self.nodes
            .iter()
            .filter(|row| !row.gone)
            .all(|row| row.report.version >= version || row.report.refused_version >= Some(version))
    }
}

fn own_report(fleet: &Fleet) -> NodeReport {
    let (outcome, refused_version, error, error_lines) = match fleet.outcome() {
        NodeOutcome::Starting => ("starting", None, None, Vec::new()),
        NodeOutcome::Applied { .. } => ("applied", None, None, Vec::new()),
        NodeOutcome::Refused {
            version,
            error,
            lines,
        } => ("refused", Some(version), Some(error), lines),
    };
    let facts = match (fleet.inner.facts)() {
        Value::Object(facts) => facts,
        _ => Map::new(),
    };
    NodeReport {
        id: fleet.inner.node.id.clone(),
        address: fleet.inner.node.address.clone(),
        version: fleet.applied_version(),
        outcome: outcome.to_owned(),
        refused_version,
        error,
        error_lines,
        started_ms: fleet.inner.started_ms,
        last_seen_ms: fleet.inner.store.link().store_now_ms(),
        facts,
    }
}

/// Writes this node's report until `closing`, then removes it (a clean stop is not "gone").
pub async fn publish(fleet: Fleet, closing: CancellationToken) {
    loop {
        let report = own_report(&fleet);
        if let Ok(text) = serde_json::to_string(&report) {
            let _ = fleet.inner.store.report(&report.id, &text).await;
        }
        tokio::select! {
            _ = closing.cancelled() => break,
            _ = fleet.inner.report_now.notified() => {}
            _ = tokio::time::sleep(REPORT_EVERY) => {}
        }
    }
    let forget = fleet.inner.store.forget(&fleet.inner.node.id);
    let _ = tokio::time::timeout(Duration::from_millis(300), forget).await;
}

/// Every node's report with its lag and liveness.
pub async fn view(fleet: &Fleet) -> Result<FleetView, ApiError> {
    let store = &fleet.inner.store;
    let stored_version = store
        .current_version()
        .await
        .map_err(super::store::unavailable)?;
    let reports = store.reports().await.map_err(super::store::unavailable)?;
    let now = store.link().store_now_ms();
    let own_id = &fleet.inner.node.id;
    let mut nodes: Vec<NodeRow> = reports
        .into_iter()
        .filter_map(|(_, text)| serde_json::from_str::<NodeReport>(&text).ok())
        .map(|report| {
            // This node's own row is always current, whatever its last write said.
            let report = if report.id == *own_id {
                own_report(fleet)
            } else {
                report
            };
            NodeRow {
                lag: stored_version.saturating_sub(report.version),
                gone: now.saturating_sub(report.last_seen_ms) > GONE_AFTER_MS,
                is_self: report.id == *own_id,
                report,
            }
        })
        .collect();
    if !nodes.iter().any(|row| row.is_self) {
        let report = own_report(fleet);
        nodes.push(NodeRow {
            lag: stored_version.saturating_sub(report.version),
            gone: false,
            is_self: true,
            report,
        });
    }
    nodes.sort_by(|a, b| a.report.id.cmp(&b.report.id));
    Ok(FleetView {
        version: stored_version,
        node: own_id.clone(),
        nodes,
    })
}

/// Waits up to `limit` until every live node applied or refused `version`.
pub async fn wait_fleet(fleet: &Fleet, version: u64, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if view(fleet).await.is_ok_and(|view| view.settled(version)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The answer to a write: its version and each node's state for it.
pub fn write_answer(version: u64, view: Option<&FleetView>) -> Value {
    let nodes: Vec<Value> = view
        .map(|view| {
            view.nodes
                .iter()
                .map(|row| {
                    let state = if row.report.version >= version {
                        "applied"
                    } else if row.report.refused_version >= Some(version) {
                        "refused"
                    } else if row.gone {
                        "gone"
                    } else {
                        "pending"
                    };
                    let mut node = json!({"id": row.report.id, "state": state});
                    if state == "refused" {
                        node["error"] = json!(row.report.error);
                    }
                    node
                })
                .collect()
        })
        .unwrap_or_default();
    json!({"version": version, "nodes": nodes})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, version: u64, refused: Option<u64>, gone: bool) -> NodeRow {
        NodeRow {
            report: NodeReport {
                id: id.into(),
                address: String::new(),
                version,
                outcome: "applied".into(),
                refused_version: refused,
                error: refused.map(|_| "port in use".into()),
                error_lines: Vec::new(),
                started_ms: 0,
                last_seen_ms: 0,
                facts: Map::new(),
            },
            lag: 0,
            gone,
            is_self: false,
        }
    }

    #[test]
    fn a_write_is_settled_when_every_live_node_applied_or_refused_it() {
        let mut view = FleetView {
            version: 5,
            node: "a".into(),
            nodes: vec![row("a", 5, None, false), row("b", 4, None, false)],
        };
        assert!(!view.settled(5));
        view.nodes[1] = row("b", 4, Some(5), false);
        assert!(view.settled(5));
        view.nodes[1] = row("b", 3, None, true);
        assert!(view.settled(5), "a gone node is not waited for");
        let answer = write_answer(5, Some(&view));
        assert_eq!(answer["nodes"][0]["state"], "applied");
        assert_eq!(answer["nodes"][1]["state"], "gone");
    }
}
