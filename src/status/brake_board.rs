//! The mass-expiry brake as the API sees it: which backends are degraded (published by the
//! membership manager after every round that changed it) and the operators' removal
//! confirmations (queued here, carried out by the manager on its next round).

use super::sample::DegradedSample;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::Notify;

/// `confirm` on a backend with nothing held.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("backend {0} holds no expired members")]
pub struct NothingHeld(pub String);

/// A cheap handle; clones share it.
#[derive(Clone, Default)]
pub struct BrakeBoard {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    degraded: RwLock<BTreeMap<String, DegradedSample>>,
    /// Backends an operator confirmed the removal of, not yet carried out.
    confirmations: Mutex<BTreeSet<String>>,
    confirmed: Notify,
}

impl BrakeBoard {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the degraded backends (the manager's view after a round).
    pub fn publish(&self, degraded: BTreeMap<String, DegradedSample>) {
        *self
            .inner
            .degraded
            .write()
            .unwrap_or_else(|p| p.into_inner()) = degraded;
    }

    pub fn degraded(&self, backend: &str) -> Option<DegradedSample> {
        self.all().remove(backend)
    }

    pub fn all(&self) -> BTreeMap<String, DegradedSample> {
        self.inner
            .degraded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Queues the removal of `backend`'s held members; returns them (`host:port`). The
    /// manager removes whatever is still held when it gets to it (a member that registered
    /// again in between stays).
    pub fn confirm_removal(&self, backend: &str) -> Result<Vec<String>, NothingHeld> {
        let held = self
            .degraded(backend)
            .map(|d| d.held)
            .filter(|held| !held.is_empty())
            .ok_or_else(|| NothingHeld(backend.to_owned()))?;
        self.inner
            .confirmations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(backend.to_owned());
        self.inner.confirmed.notify_one();
        Ok(held)
    }

    /// Resolves once a confirmation is queued (at once if one is already waiting).
    pub async fn confirmation_queued(&self) {
        self.inner.confirmed.notified().await;
    }

    /// The queued confirmations, emptying the queue.
    pub fn take_confirmations(&self) -> BTreeSet<String> {
        std::mem::take(
            &mut *self
                .inner
                .confirmations
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_degraded_backend_can_be_confirmed() {
        let board = BrakeBoard::new();
        assert_eq!(board.confirm_removal("web"), Err(NothingHeld("web".into())));
        let held = vec!["127.0.0.1:1".to_owned()];
        board.publish(BTreeMap::from([(
            "web".to_owned(),
            DegradedSample {
                since: 1,
                reason: "r".into(),
                held: held.clone(),
            },
        )]));
        assert_eq!(board.confirm_removal("web"), Ok(held));
        assert_eq!(board.confirm_removal("api"), Err(NothingHeld("api".into())));
        assert_eq!(
            board.take_confirmations(),
            BTreeSet::from(["web".to_owned()])
        );
        assert!(board.take_confirmations().is_empty());
    }
}
