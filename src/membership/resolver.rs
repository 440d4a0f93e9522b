//! Members registered by DNS name (`webapp:8080` in a compose network): HAProxy never resolves
//! the names of servers added at runtime, so the membership manager resolves them with the
//! system resolver and hands HAProxy the address. Each name is looked up on a task of its own,
//! again every `REFRESH` (a container that restarts may come back with another address), and
//! after a failure with a backoff from `FIRST_RETRY` to `REFRESH`. A member uses the first
//! address the resolver answers (IPv4 first): one server per member, as with an IP host.
//!
//! Until a name resolves, its members are listed with `unresolved` saying why, and rendered
//! nowhere; the metric `thalassa_members_unresolved` counts them.

use crate::registry::model::Registration;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const REFRESH: Duration = Duration::from_secs(30);
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// A name no member has used for this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(300);
/// A lookup the system resolver has not answered in this long counts as failed.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// What a finished lookup says.
#[derive(Debug)]
pub struct Lookup {
    pub name: String,
    pub result: Result<IpAddr, String>,
}

#[derive(Debug)]
struct NameState {
    address: Option<IpAddr>,
    error: Option<String>,
    in_flight: bool,
    next_lookup: Instant,
    retry: Duration,
    last_used: Instant,
}

impl NameState {
    fn new(now: Instant) -> Self {
        NameState {
            address: None,
            error: None,
            in_flight: false,
            next_lookup: now,
            retry: FIRST_RETRY,
            last_used: now,
        }
    }
}

pub struct Resolver {
    names: BTreeMap<String, NameState>,
    tx: mpsc::Sender<Lookup>,
    rx: mpsc::Receiver<Lookup>,
}

impl Default for Resolver {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(256);
        Resolver {
            names: BTreeMap::new(),
            tx,
            rx,
        }
    }
}

/// True when `host` is a DNS name rather than an IP address.
pub fn is_name(host: &str) -> bool {
    host.parse::<IpAddr>().is_err()
}

impl Resolver {
    /// The registrations with each DNS-name host's address (`address`), or why it has none
    /// (`unresolved`); names seen for the first time are looked up.
    pub fn addressed(
        &mut self,
        registrations: Vec<Registration>,
        now: Instant,
    ) -> Vec<Registration> {
        let mut new_names = false;
        let addressed = registrations
            .into_iter()
            .map(|mut registration| {
                if !is_name(&registration.host) {
                    return registration;
                }
                let state = self
                    .names
                    .entry(registration.host.clone())
                    .or_insert_with(|| {
                        new_names = true;
                        NameState::new(now)
                    });
                state.last_used = now;
                match (state.address, &state.error) {
                    (Some(address), _) => registration.address = Some(address.to_string().into()),
                    (None, Some(error)) => registration.unresolved = Some(error.as_str().into()),
                    (None, None) => registration.unresolved = Some("resolving".into()),
                }
                registration
            })
            .collect();
        if new_names {
            self.start_due(now);
        }
        addressed
    }

    /// Starts the lookups that are due and forgets names nobody used for a while.
    pub fn start_due(&mut self, now: Instant) {
        self.names.retain(|_, state| {
            state.in_flight || now.duration_since(state.last_used) < FORGET_AFTER
        });
        for (name, state) in &mut self.names {
            if state.in_flight || state.next_lookup > now {
                continue;
            }
            state.in_flight = true;
            let (name, tx) = (name.clone(), self.tx.clone());
            tokio::spawn(async move {
                let result = lookup(&name).await;
                let _ = tx.send(Lookup { name, result }).await;
            });
        }
    }

    /// The next finished lookup (cancel-safe: for a `select!`).
    pub async fn finished(&mut self) -> Option<Lookup> {
        self.rx.recv().await
    }

    /// Records a finished lookup; true when what members of that name resolve to changed.
    pub fn record(&mut self, lookup: Lookup, now: Instant) -> bool {
        let Some(state) = self.names.get_mut(&lookup.name) else {
            return false;
        };
        state.in_flight = false;
        let before = (state.address, state.error.clone());
        match lookup.result {
            Ok(address) => {
                state.address = Some(address);
                state.error = None;
                state.retry = FIRST_RETRY;
                state.next_lookup = now + REFRESH;
            }
            Err(error) => {
                tracing::warn!(name = %lookup.name, %error, retry_in = ?state.retry,
                    "cannot resolve a member's host name");
                // A name that resolved before keeps its address until it resolves again: a
                // resolver hiccup does not take members out of service.
                state.error = Some(error);
                state.next_lookup = now + state.retry;
                state.retry = (state.retry * 2).min(REFRESH);
            }
        }
        (state.address, state.error.clone()) != before
    }

    /// Names currently without an address.
    pub fn unresolved_names(&self) -> usize {
        self.names.values().filter(|s| s.address.is_none()).count()
    }
}

async fn lookup(name: &str) -> Result<IpAddr, String> {
    let answer = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((name, 0))).await;
    let addresses: Vec<IpAddr> = match answer {
        Err(_) => {
            return Err(format!(
                "cannot resolve {name}: no answer within {LOOKUP_TIMEOUT:?}"
            ));
        }
        Ok(Err(err)) => return Err(format!("cannot resolve {name}: {err}")),
        Ok(Ok(addresses)) => addresses.map(|a| a.ip()).collect(),
    };
    addresses
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addresses.first())
        .copied()
        .ok_or_else(|| format!("cannot resolve {name}: no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(host: &str) -> Registration {
        Registration {
            name: "web".into(),
            version: "1".into(),
            host: host.into(),
            port: 8080,
            last_known: 0,
            meta: Default::default(),
            id: format!("/web/1/{host}/8080"),
            address: None,
            unresolved: None,
        }
    }

    #[tokio::test]
    async fn names_resolve_ips_pass_through_and_failures_are_told() {
        let mut resolver = Resolver::default();
        let now = Instant::now();
        let regs = vec![
            registration("127.0.0.1"),
            registration("localhost"),
            registration("no-such-host.invalid"),
        ];
        let first = resolver.addressed(regs.clone(), now);
        assert_eq!(first[0], regs[0], "an IP host is left as it is");
        assert_eq!(first[1].unresolved.as_deref(), Some("resolving"));
        for _ in 0..2 {
            let lookup = resolver.finished().await.unwrap();
            assert!(resolver.record(lookup, Instant::now()));
        }
        let second = resolver.addressed(regs, Instant::now());
        assert_eq!(second[1].address.as_deref(), Some("127.0.0.1"));
        assert_eq!(second[1].ip(), Some("127.0.0.1".parse().unwrap()));
        assert!(second[2].address.is_none());
        assert!(
            second[2]
                .unresolved
                .as_deref()
                .unwrap()
                .contains("no-such-host.invalid"),
            "{second:?}"
        );
        assert_eq!(second[2].ip(), None);
        assert_eq!(resolver.unresolved_names(), 1);
    }
}
