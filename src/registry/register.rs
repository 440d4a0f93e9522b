//! `thalassa register`: keeps registrations alive in a registry by POSTing each one every
//! `--every`, retries with backoff while the registry is down (logging each outage once), and
//! DELETEs them on SIGTERM/SIGINT (the original client forgot to, leaving them for 60 s).
//! Given several nodes of one registry cluster, it stays on a node while it answers and moves
//! to the next one at once when a request fails (no answer, a timeout, a 5xx), so a dead node
//! costs no lease.

use super::clock::now_ms;
use super::local_ip::first_non_loopback_ipv4;
use super::model::RegistrationKey;
use super::nodes::{NodeCursor, RegistryNodes};
use crate::BoxError;
use crate::shutdown_signal::stop_requested;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Per-request timeout (the original client used 2.5 s).
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(2500);
/// Idle connections are dropped before the registry closes them (it closes a connection that
/// sends no request head for `--header-read-timeout`, 10 s by default), so a heartbeat never
/// races a closing connection.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// First retry delay after a failed heartbeat; doubles up to `--every`.
pub const FIRST_RETRY: Duration = Duration::from_millis(100);

/// One `NAME@VERSION:PORT` from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    pub version: String,
    pub port: String,
}

/// Parses `NAME@VERSION:PORT`; the port is validated later with the rest of the key.
pub fn parse_service(text: &str) -> Result<ServiceSpec, String> {
    let text = text.trim();
    let invalid = || format!("invalid registration {text:?}: expected NAME@VERSION:PORT");
    let (name, rest) = text.split_once('@').ok_or_else(invalid)?;
    let (version, port) = rest.rsplit_once(':').ok_or_else(invalid)?;
    Ok(ServiceSpec {
        name: name.to_owned(),
        version: version.to_owned(),
        port: port.to_owned(),
    })
}

/// The keys to keep alive, validated exactly as the registry will validate them.
pub fn registration_keys(services: &[String], host: &str) -> Result<Vec<RegistrationKey>, String> {
    services
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|text| {
            let spec = parse_service(text)?;
            RegistrationKey::parse(&spec.name, &spec.version, host, &spec.port)
                .map_err(|err| format!("invalid registration {text:?}: {err}"))
        })
        .collect()
}

/// The URL of one registration: segments are percent-encoded by the URL type.
fn registration_url(base: &reqwest::Url, key: &RegistrationKey) -> Result<reqwest::Url, String> {
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| format!("{base} cannot be a base URL"))?
        .pop_if_empty()
        .extend([
            "registrations",
            &key.name,
            &key.version,
            &key.host,
            &key.port.to_string(),
        ]);
    Ok(url)
}

/// The meta every heartbeat carries: the same each time, so heartbeats are not events.
fn heartbeat_meta(secs_to_expire: u64) -> Map<String, Value> {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let mut meta = Map::new();
    meta.insert("secondsToExpire".to_owned(), json!(secs_to_expire));
    if !hostname.is_empty() {
        meta.insert("hostname".to_owned(), Value::String(hostname));
    }
    meta.insert("pid".to_owned(), json!(std::process::id()));
    meta.insert("registered".to_owned(), json!(now_ms()));
    meta
}

/// What `thalassa register` keeps alive, and where.
#[derive(Debug, Clone)]
pub struct RegisterOptions {
    /// Registrations as `NAME@VERSION:PORT`.
    pub services: Vec<String>,
    /// The registry's nodes, in failover order.
    pub registry: RegistryNodes,
    /// Address to register (default: this machine's first non-loopback IPv4).
    pub host: Option<String>,
    /// Expiry sent with every heartbeat, in seconds.
    pub secs_to_expire: u64,
    /// Heartbeat period.
    pub every: Duration,
    /// Bearer token sent to the registry.
    pub token: Option<String>,
}

pub async fn run(args: RegisterOptions) -> Result<(), BoxError> {
    let host = match &args.host {
        Some(host) => host.clone(),
        None => first_non_loopback_ipv4()
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| {
                tracing::warn!("no non-loopback IPv4 address found: registering 127.0.0.1");
                "127.0.0.1".to_owned()
            }),
    };
    let keys = registration_keys(&args.services, &host)?;
    if keys.is_empty() {
        return Err("nothing to register: give NAME@VERSION:PORT".into());
    }
    // Every registration of this process moves to the next node together.
    let cursor = Arc::new(NodeCursor::new(args.registry.len()));
    let targets = keys
        .iter()
        .map(|key| Target::new(&args.registry, key, cursor.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    // `--token` / THALASSA_TOKEN, else the registry's own admin token from the environment
    // (one secret for a whole compose stack).
    let token = args
        .token
        .clone()
        .or_else(|| std::env::var("THALASSA_ADMIN_TOKEN").ok());
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .default_headers(crate::auth::client_headers(token.as_deref())?)
        .build()?;
    let body = Value::Object(heartbeat_meta(args.secs_to_expire));
    let every = args.every.max(Duration::from_millis(10));

    let stop = CancellationToken::new();
    let mut heartbeats = Vec::new();
    for target in &targets {
        heartbeats.push(tokio::spawn(keep_alive(
            client.clone(),
            target.clone(),
            body.clone(),
            every,
            stop.clone(),
        )));
    }
    tracing::info!(registry = %args.registry, host = %host, count = keys.len(), every = ?every, "keeping registrations alive");
    stop_requested().await;
    stop.cancel();
    for task in heartbeats {
        let _ = task.await;
    }
    for target in &targets {
        match target.delete(&client).await {
            Ok((node, status)) if status.is_success() => {
                tracing::info!(id = %target.id, node = %target.nodes.name(node), "deregistered");
            }
            Ok((node, status)) => {
                tracing::warn!(id = %target.id, node = %target.nodes.name(node), status = %status, "deregistration refused");
            }
            Err(failure) => {
                tracing::warn!(id = %target.id, error = %failure.error, "cannot deregister")
            }
        }
    }
    Ok(())
}

/// Keeps one registration alive in the background until `stop` is cancelled, then deletes it
/// (the aqueduct announces itself this way as `thalassa-aqueduct@<version>`). `token` is the
/// registry's admin token, if it has one.
pub fn spawn_heartbeat(
    registry: &RegistryNodes,
    token: Option<&str>,
    key: &RegistrationKey,
    meta: Map<String, Value>,
    every: Duration,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, BoxError> {
    let target = Target::new(registry, key, Arc::new(NodeCursor::new(registry.len())))?;
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .default_headers(crate::auth::client_headers(token)?)
        .build()?;
    Ok(tokio::spawn(async move {
        keep_alive(
            client.clone(),
            target.clone(),
            Value::Object(meta),
            every,
            stop,
        )
        .await;
        if let Err(failure) = target.delete(&client).await {
            tracing::debug!(id = %target.id, error = %failure.error, "cannot deregister");
        }
    }))
}

/// One registration on every node of the registry: its URL on each, and the cursor (shared
/// by the registrations of one process) on the node in use.
#[derive(Clone)]
struct Target {
    id: String,
    nodes: RegistryNodes,
    /// The registration's URL on each node, in the nodes' order.
    urls: Arc<[reqwest::Url]>,
    cursor: Arc<NodeCursor>,
}

/// A request a node did not serve.
#[derive(Debug)]
struct NodeFailure {
    error: String,
    /// The node is down or overloaded (no answer, a timeout, a 5xx), so another node may
    /// serve the request; a 4xx would be the same everywhere.
    node_down: bool,
    /// The node's `Retry-After`, in seconds.
    retry_after: Option<Duration>,
}

impl Target {
    fn new(
        nodes: &RegistryNodes,
        key: &RegistrationKey,
        cursor: Arc<NodeCursor>,
    ) -> Result<Target, String> {
        let urls = (0..nodes.len())
            .map(|node| registration_url(nodes.url(node), key))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Target {
            id: key.id(),
            nodes: nodes.clone(),
            urls: urls.into(),
            cursor,
        })
    }

    /// POSTs the heartbeat to the node in use, and at once to the next ones while they fail
    /// as down (each node at most once). Returns the node that took it. `quiet` (during an
    /// outage of every node) logs the nodes' failures at debug level only.
    async fn heartbeat(
        &self,
        client: &reqwest::Client,
        body: &Value,
        quiet: bool,
    ) -> Result<usize, NodeFailure> {
        let mut tries = 0;
        loop {
            let node = self.cursor.current();
            let failure = match post(client, &self.urls[node % self.urls.len()], body).await {
                Ok(()) => return Ok(node),
                Err(failure) => failure,
            };
            if !failure.node_down {
                return Err(failure);
            }
            // The next attempt, now or after the backoff, goes to the next node.
            let next = self.cursor.advance_from(node);
            tries += 1;
            if tries >= self.urls.len() {
                return Err(failure);
            }
            if quiet {
                tracing::debug!(id = %self.id, node = %self.nodes.name(node), error = %failure.error, "registry node failed");
            } else {
                tracing::warn!(
                    id = %self.id,
                    node = %self.nodes.name(node),
                    next = %self.nodes.name(next),
                    error = %failure.error,
                    "registry node failed; trying the next one"
                );
            }
        }
    }

    /// DELETEs the registration from the node in use, else from the next ones, until one
    /// answers with anything but a 5xx. Returns that node and its answer.
    async fn delete(
        &self,
        client: &reqwest::Client,
    ) -> Result<(usize, reqwest::StatusCode), NodeFailure> {
        let mut tries = 0;
        loop {
            let node = self.cursor.current();
            let failure = match client
                .delete(self.urls[node % self.urls.len()].clone())
                .send()
                .await
            {
                Ok(response) if !response.status().is_server_error() => {
                    return Ok((node, response.status()));
                }
                Ok(response) => node_failure(response).await,
                Err(err) => NodeFailure {
                    error: err.to_string(),
                    node_down: true,
                    retry_after: None,
                },
            };
            self.cursor.advance_from(node);
            tries += 1;
            if tries >= self.urls.len() {
                return Err(failure);
            }
            tracing::debug!(id = %self.id, node = %self.nodes.name(node), error = %failure.error, "registry node failed to deregister; trying the next one");
        }
    }
}

/// POSTs one registration every `every` until `stop`. A node that fails is replaced by the
/// next one at once; when every node failed, retries with backoff (doubling up to `every`,
/// at least a node's `Retry-After`).
async fn keep_alive(
    client: reqwest::Client,
    target: Target,
    body: Value,
    every: Duration,
    stop: CancellationToken,
) {
    let id = &target.id;
    let mut failing = false;
    let mut registered_on: Option<usize> = None;
    let mut retry = FIRST_RETRY;
    loop {
        let wait = match target.heartbeat(&client, &body, failing).await {
            Ok(node) => {
                let name = target.nodes.name(node);
                if failing {
                    tracing::info!(id = %id, node = %name, "registry reachable again: registration refreshed");
                } else if registered_on.is_none() {
                    tracing::info!(id = %id, node = %name, "registered");
                } else if registered_on != Some(node) {
                    tracing::info!(id = %id, node = %name, "registration refreshed on another registry node");
                }
                failing = false;
                registered_on = Some(node);
                retry = FIRST_RETRY;
                every
            }
            Err(failure) => {
                if !failing {
                    tracing::warn!(id = %id, error = %failure.error, "heartbeat failed; retrying with backoff");
                    failing = true;
                }
                let wait = retry.max(failure.retry_after.unwrap_or_default().min(every));
                retry = (retry * 2).min(every);
                wait
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn post(
    client: &reqwest::Client,
    url: &reqwest::Url,
    body: &Value,
) -> Result<(), NodeFailure> {
    let response = client
        .post(url.clone())
        .json(body)
        .send()
        .await
        .map_err(|err| NodeFailure {
            error: err.to_string(),
            node_down: true,
            retry_after: None,
        })?;
    if response.status().is_success() {
        return Ok(());
    }
    Err(node_failure(response).await)
}

/// What an answer other than a success says about the node.
async fn node_failure(response: reqwest::Response) -> NodeFailure {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = response.text().await.unwrap_or_default();
    NodeFailure {
        error: format!("registry answered {status}: {text}"),
        node_down: status.is_server_error(),
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<(&str, &str, &str), ()>) {
        let got = parse_service(text)
            .map(|s| (s.name, s.version, s.port))
            .map_err(|_| ());
        let expected = expected.map(|(n, v, p)| (n.to_owned(), v.to_owned(), p.to_owned()));
        assert_eq!(got, expected, "{text:?}");
    }

    #[test]
    fn service_specs() {
        check("web@1.0.0:8080", Ok(("web", "1.0.0", "8080")));
        check(" web@1:80 ", Ok(("web", "1", "80")));
        check("web@1:2:80", Ok(("web", "1:2", "80")));
        check("web:80", Err(()));
        check("web@1", Err(()));
    }

    #[test]
    fn keys_are_validated_like_the_registry_does() {
        let services = vec!["a@1:80".to_owned(), "b@2:9090".to_owned()];
        let keys = registration_keys(&services, "127.0.0.1").unwrap();
        let ids: Vec<String> = keys.iter().map(RegistrationKey::id).collect();
        assert_eq!(ids, ["/a/1/127.0.0.1/80", "/b/2/127.0.0.1/9090"]);
        assert!(registration_keys(&["a@1:http".to_owned()], "h").is_err());
        assert!(registration_keys(&["a b@1:80".to_owned()], "h").is_err());
        assert!(registration_keys(&["a@1:80".to_owned()], "bad host").is_err());
    }

    #[test]
    fn urls_encode_segments_and_keep_a_base_path() {
        let key = RegistrationKey::parse("a%b", "1?x", "h", "80").unwrap();
        let check = |base: &str, expected: &str| {
            let url = registration_url(&reqwest::Url::parse(base).unwrap(), &key).unwrap();
            assert_eq!(url.as_str(), expected);
        };
        check(
            "http://127.0.0.1:9000",
            "http://127.0.0.1:9000/registrations/a%25b/1%3Fx/h/80",
        );
        check(
            "http://127.0.0.1:9000/",
            "http://127.0.0.1:9000/registrations/a%25b/1%3Fx/h/80",
        );
        check(
            "http://127.0.0.1:9000/reg/",
            "http://127.0.0.1:9000/reg/registrations/a%25b/1%3Fx/h/80",
        );
    }
}
