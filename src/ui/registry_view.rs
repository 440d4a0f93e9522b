//! `GET /ui/api/registry`: the registry as the Registry page and the version drop-downs need
//! it. Fetches the registry's `GET /registrations` and `GET /leases` (from the first node of
//! the cluster that answers), merges each registration with its expiry, and counts instances
//! per name and version.

use crate::api_error::ApiError;
use crate::registry::nodes::{NodeCursor, RegistryNodes};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// A registry fetch slower than this is an outage as far as the page is concerned.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);

/// The registry's `GET /leases` row.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Lease {
    pub(crate) id: String,
    /// Epoch milliseconds when the registration expires.
    #[serde(rename = "expiresAt")]
    pub(crate) expires_at: Option<u64>,
}

/// What the page receives.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct RegistryView {
    /// The aqueduct's clock (epoch ms), so a page can count down against server time.
    now: u64,
    /// Every registration as the registry returns it, plus `expiresAt` (ms or null), sorted by
    /// name, version, host and port.
    registrations: Vec<Map<String, Value>>,
    /// Name -> version -> number of registered instances.
    versions: BTreeMap<String, BTreeMap<String, usize>>,
    /// Set when expiries could not be fetched: registrations are shown without countdown.
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
}

#[derive(Clone)]
pub(crate) struct RegistryClient {
    nodes: RegistryNodes,
    /// The node that answered last: asked first next time.
    cursor: Arc<NodeCursor>,
    http: reqwest::Client,
}

impl RegistryClient {
    /// A client of the registry `nodes`, sending `token` as a bearer token if given (an
    /// invalid token is left out; the registry then answers 401, shown as an outage).
    pub(crate) fn new(nodes: RegistryNodes, token: Option<&str>) -> RegistryClient {
        let headers = crate::auth::client_headers(token).unwrap_or_default();
        RegistryClient {
            cursor: Arc::new(NodeCursor::new(nodes.len())),
            nodes,
            http: reqwest::Client::builder()
                .timeout(FETCH_TIMEOUT)
                .default_headers(headers)
                .build()
                .unwrap_or_default(),
        }
    }

    /// Both lists, fetched concurrently from one node: the node that answered last, else the
    /// next ones in turn. The registrations are required (no node answering is a 502); the
    /// leases only add countdowns, so their failure becomes a warning.
    pub(crate) async fn view(&self) -> Result<RegistryView, ApiError> {
        let mut tries = 0;
        let (registrations, leases) = loop {
            let node = self.cursor.current();
            let (registrations, leases) = tokio::join!(
                self.get::<Vec<Map<String, Value>>>(node, "/registrations"),
                self.get::<Vec<Lease>>(node, "/leases"),
            );
            match registrations {
                Ok(registrations) => break (registrations, leases),
                Err(err) => {
                    tracing::warn!(registry = %self.nodes.name(node), error = %err, "registry unavailable");
                    self.cursor.advance_from(node);
                    tries += 1;
                    if tries >= self.nodes.len() {
                        return Err(ApiError::new(
                            axum::http::StatusCode::BAD_GATEWAY,
                            format!("registry unavailable: {err}"),
                        ));
                    }
                }
            }
        };
        let (leases, warning) = match leases {
            Ok(leases) => (leases, None),
            Err(err) => (Vec::new(), Some(format!("expiries unavailable: {err}"))),
        };
        Ok(merge(
            registrations,
            &leases,
            warning,
            crate::status::now_ms(),
        ))
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        node: usize,
        path: &str,
    ) -> Result<T, String> {
        let url = self.nodes.endpoint(node, path);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|err| format!("GET {url}: {}", error_chain(&err)))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", response.status()));
        }
        response
            .json::<T>()
            .await
            .map_err(|err| format!("GET {url}: {}", error_chain(&err)))
    }
}

/// reqwest's top-level message ("error sending request") hides the cause; show the chain.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub(crate) fn merge(
    mut registrations: Vec<Map<String, Value>>,
    leases: &[Lease],
    warning: Option<String>,
    now: u64,
) -> RegistryView {
    let expiries: HashMap<&str, Option<u64>> = leases
        .iter()
        .map(|lease| (lease.id.as_str(), lease.expires_at))
        .collect();
    let mut versions: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for registration in &mut registrations {
        let text = |field: &str| {
            registration
                .get(field)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let (id, name, version) = (text("id"), text("name"), text("version"));
        *versions
            .entry(name)
            .or_default()
            .entry(version)
            .or_default() += 1;
        let expires_at = expiries.get(id.as_str()).copied().flatten();
        registration.insert("expiresAt".to_owned(), expires_at.into());
    }
    registrations.sort_by_key(sort_key);
    RegistryView {
        now,
        registrations,
        versions,
        warning,
    }
}

fn sort_key(registration: &Map<String, Value>) -> (String, String, String, u64) {
    let text = |field: &str| {
        registration
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let port = registration
        .get("port")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    (text("name"), text("version"), text("host"), port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn registration(name: &str, version: &str, host: &str, port: u16) -> Map<String, Value> {
        let value = json!({
            "name": name, "version": version, "host": host, "port": port,
            "lastKnown": 1, "meta": {"hostname": host},
            "id": format!("/{name}/{version}/{host}/{port}"),
        });
        value.as_object().unwrap().clone()
    }

    fn check(registrations: Vec<Map<String, Value>>, leases: &[Lease], expected: Value) {
        let view = merge(registrations, leases, None, 99);
        let mut actual = serde_json::to_value(&view).unwrap();
        // Only the parts under test: ids with expiries, and the version counts.
        let ids: Vec<Value> = actual["registrations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| json!([r["id"], r["expiresAt"]]))
            .collect();
        actual = json!({"ids": ids, "versions": actual["versions"], "now": actual["now"]});
        assert_eq!(actual, expected);
    }

    #[test]
    fn merges_expiries_and_counts_versions() {
        check(
            vec![
                registration("web", "2.0.0", "127.0.0.1", 8081),
                registration("web", "1.0.0", "127.0.0.1", 8080),
                registration("db", "1.0.0", "127.0.0.2", 3306),
                registration("web", "1.0.0", "127.0.0.1", 80),
            ],
            &[
                Lease {
                    id: "/web/1.0.0/127.0.0.1/8080".into(),
                    expires_at: Some(5000),
                },
                Lease {
                    id: "/gone/1/127.0.0.1/1".into(),
                    expires_at: Some(1),
                },
            ],
            json!({
                "ids": [
                    ["/db/1.0.0/127.0.0.2/3306", null],
                    ["/web/1.0.0/127.0.0.1/80", null],
                    ["/web/1.0.0/127.0.0.1/8080", 5000],
                    ["/web/2.0.0/127.0.0.1/8081", null],
                ],
                "versions": {"db": {"1.0.0": 1}, "web": {"1.0.0": 2, "2.0.0": 1}},
                "now": 99,
            }),
        );
    }

    #[test]
    fn odd_registrations_do_not_break_the_view() {
        let mut odd = Map::new();
        odd.insert("name".into(), json!(7));
        check(
            vec![odd],
            &[],
            json!({"ids": [[null, null]], "versions": {"": {"": 1}}, "now": 99}),
        );
    }
}
