//! Runtime commands HAProxy refused, per server: what it said, and when to try again. A
//! member whose `add server` HAProxy refuses (a backend whose algorithm takes no runtime
//! servers, an address it rejects...) is retried with backoff instead of every round, logged
//! once per cause instead of per retry, and shown with HAProxy's own message in the API.

use super::plan::ServerRef;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// First retry after a refusal; each further refusal doubles it, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct Refusals {
    by_server: BTreeMap<ServerRef, Refusal>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal {
    /// HAProxy's answer, as it gave it.
    message: String,
    /// The refused command was the `add server`: the refusal is over once the server exists,
    /// however it came to (a reload rendering it, another writer).
    add: bool,
    attempts: u32,
    retry_at: Instant,
}

/// HAProxy's refusal messages by backend, then server name: what the API shows.
pub use crate::status::RefusedByBackend;

impl Refusals {
    /// Records that HAProxy refused a command for `server`; true when this is a new cause for
    /// it (the first refusal, or a different message): the caller logs it then, not on each
    /// retry.
    pub fn refused(&mut self, server: &ServerRef, message: &str, add: bool, now: Instant) -> bool {
        let previous = self.by_server.get(server);
        let new_cause = previous.is_none_or(|r| r.message != message);
        let attempts = previous.map_or(1, |r| r.attempts.saturating_add(1));
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << attempts.saturating_sub(1).min(5))
            .min(MAX_BACKOFF);
        self.by_server.insert(
            server.clone(),
            Refusal {
                message: message.to_owned(),
                add,
                attempts,
                retry_at: now + backoff,
            },
        );
        new_cause
    }

    /// A command for `server` went through: whatever HAProxy refused before is over.
    pub fn accepted(&mut self, server: &ServerRef) -> bool {
        self.by_server.remove(server).is_some()
    }

    /// Whether a command for `server` may be sent now (not refused, or its backoff is over).
    pub fn may_send(&self, server: &ServerRef, now: Instant) -> bool {
        self.by_server.get(server).is_none_or(|r| now >= r.retry_at)
    }

    /// Forgets refusals that are over: of servers `wanted` says nobody wants any more (their
    /// member left, their backend is gone), and refused adds of servers that `exists` says
    /// HAProxy now has.
    pub fn retain(
        &mut self,
        wanted: impl Fn(&ServerRef) -> bool,
        exists: impl Fn(&ServerRef) -> bool,
    ) {
        self.by_server
            .retain(|server, refusal| wanted(server) && !(refusal.add && exists(server)));
    }

    pub fn len(&self) -> usize {
        self.by_server.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_server.is_empty()
    }

    pub fn by_backend(&self) -> RefusedByBackend {
        let mut out = RefusedByBackend::new();
        for (server, refusal) in &self.by_server {
            out.entry(server.backend.clone())
                .or_default()
                .insert(server.server.clone(), refusal.message.clone());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> ServerRef {
        ServerRef {
            backend: "be".into(),
            server: "be_10.0.0.1:80".into(),
        }
    }

    #[test]
    fn a_refusal_backs_off_and_is_new_only_when_its_cause_changes() {
        let mut refusals = Refusals::default();
        let (s, t0) = (server(), Instant::now());
        assert!(refusals.may_send(&s, t0));
        assert!(refusals.refused(&s, "Backend must use a dynamic load balancing", true, t0));
        assert!(!refusals.may_send(&s, t0 + Duration::from_millis(999)));
        assert!(refusals.may_send(&s, t0 + Duration::from_secs(1)));
        let t1 = t0 + Duration::from_secs(1);
        assert!(!refusals.refused(&s, "Backend must use a dynamic load balancing", true, t1));
        assert!(!refusals.may_send(&s, t1 + Duration::from_millis(1999)));
        assert!(refusals.may_send(&s, t1 + Duration::from_secs(2)));
        for _ in 0..10 {
            refusals.refused(&s, "Backend must use a dynamic load balancing", true, t1);
        }
        assert!(refusals.may_send(&s, t1 + MAX_BACKOFF));
        assert!(
            refusals.refused(&s, "another cause", false, t1),
            "a new cause"
        );
        assert_eq!(
            refusals.by_backend()["be"]["be_10.0.0.1:80"],
            "another cause"
        );
        assert!(refusals.accepted(&s));
        assert!(refusals.is_empty() && refusals.may_send(&s, t1));
    }

    #[test]
    fn a_refused_add_is_over_once_the_server_exists_a_refused_state_change_is_not() {
        let mut refusals = Refusals::default();
        let (s, now) = (server(), Instant::now());
        refusals.refused(&s, "no", false, now);
        refusals.retain(|_| true, |_| true);
        assert_eq!(
            refusals.len(),
            1,
            "a refused state change of a present server"
        );
        refusals.refused(&s, "no", true, now);
        refusals.retain(|_| true, |_| false);
        assert_eq!(refusals.len(), 1, "still absent");
        refusals.retain(|_| true, |_| true);
        assert!(refusals.is_empty(), "exists now");
        refusals.refused(&s, "no", true, now);
        refusals.retain(|_| false, |_| false);
        assert!(refusals.is_empty(), "nobody wants it");
    }
}
