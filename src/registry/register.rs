//! `thalassa register`: keeps registrations alive in a registry by POSTing each one every
//! `--every`, retries with backoff while the registry is down (logging each outage once), and
//! DELETEs them on SIGTERM/SIGINT (the original client forgot to, leaving them for 60 s).

use super::clock::now_ms;
use super::local_ip::first_non_loopback_ipv4;
use super::model::RegistrationKey;
use crate::BoxError;
use crate::shutdown_signal::stop_requested;
use serde_json::{Map, Value, json};
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
    /// Base URL of the registry.
    pub registry: String,
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
    let base = reqwest::Url::parse(&args.registry)
        .map_err(|err| format!("invalid --registry {:?}: {err}", args.registry))?;
    let urls = keys
        .iter()
        .map(|key| registration_url(&base, key))
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
    for (key, url) in keys.iter().zip(&urls) {
        heartbeats.push(tokio::spawn(keep_alive(
            client.clone(),
            url.clone(),
            key.id(),
            body.clone(),
            every,
            stop.clone(),
        )));
    }
    tracing::info!(registry = %base, host = %host, count = keys.len(), every = ?every, "keeping registrations alive");
    stop_requested().await;
    stop.cancel();
    for task in heartbeats {
        let _ = task.await;
    }
    for (key, url) in keys.iter().zip(urls) {
        match client.delete(url).send().await {
            Ok(response) if response.status().is_success() => {
                tracing::info!(id = %key.id(), "deregistered");
            }
            Ok(response) => {
                tracing::warn!(id = %key.id(), status = %response.status(), "deregistration refused");
            }
            Err(err) => tracing::warn!(id = %key.id(), error = %err, "cannot deregister"),
        }
    }
    Ok(())
}

/// Keeps one registration alive in the background until `stop` is cancelled, then deletes it
/// (the aqueduct announces itself this way as `thalassa-aqueduct@<version>`). `token` is the
/// registry's admin token, if it has one.
pub fn spawn_heartbeat(
    registry: &str,
    token: Option<&str>,
    key: &RegistrationKey,
    meta: Map<String, Value>,
    every: Duration,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, BoxError> {
    let base = reqwest::Url::parse(registry)
        .map_err(|err| format!("invalid registry URL {registry:?}: {err}"))?;
    let url = registration_url(&base, key)?;
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .default_headers(crate::auth::client_headers(token)?)
        .build()?;
    let id = key.id();
    Ok(tokio::spawn(async move {
        keep_alive(
            client.clone(),
            url.clone(),
            id.clone(),
            Value::Object(meta),
            every,
            stop,
        )
        .await;
        if let Err(err) = client.delete(url).send().await {
            tracing::debug!(id = %id, error = %err, "cannot deregister");
        }
    }))
}

/// POSTs one registration every `every` until `stop`, retrying failures with backoff.
async fn keep_alive(
    client: reqwest::Client,
    url: reqwest::Url,
    id: String,
    body: Value,
    every: Duration,
    stop: CancellationToken,
) {
    let mut failing = false;
    let mut registered_once = false;
    let mut retry = FIRST_RETRY;
    loop {
        let wait = match heartbeat(&client, &url, &body).await {
            Ok(()) => {
                if failing {
                    tracing::info!(id = %id, "registry reachable again: registration refreshed");
                } else if !registered_once {
                    tracing::info!(id = %id, "registered");
                }
                failing = false;
                registered_once = true;
                retry = FIRST_RETRY;
                every
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(id = %id, error = %error, "heartbeat failed; retrying with backoff");
                    failing = true;
                }
                let wait = retry;
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

async fn heartbeat(
    client: &reqwest::Client,
    url: &reqwest::Url,
    body: &Value,
) -> Result<(), String> {
    let response = client
        .post(url.clone())
        .json(body)
        .send()
        .await
        .map_err(|err| err.to_string())?;
    if response.status().is_success() {
        return Ok(());
    }
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    Err(format!("registry answered {status}: {text}"))
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
