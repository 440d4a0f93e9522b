//! The controller's side of live membership: the membership side changes and reads the
//! member book (see [`MemberBook`]) through these, under the apply lock, so a reload never
//! renders a book half changed and never misses a change. Nothing here reloads, except
//! [`Controller::reload_members`] for the `--membership reload` baseline.

use super::{ApplyError, Controller};
use crate::aqueduct::member_book::{BookChange, MemberBook};
use crate::config::Config;
use crate::haproxy::render::render;
use std::collections::BTreeSet;
use tokio::sync::watch;

impl Controller {
    /// Changes the member book under the apply lock: a reload rendered before this has
    /// finished before it returns, and none starts until it has. `change` says what it did:
    /// a stale text is rendered again when next read; changed members notify
    /// [`Controller::subscribe_members`]. Never reloads.
    pub async fn update_members(
        &self,
        change: impl FnOnce(&mut dyn MemberBook, &Config) -> BookChange,
    ) {
        let shared = &self.shared;
        let _guard = shared.apply_lock.lock().await;
        let mut live = shared.write_live();
        let config = live.config.clone();
        let what = change(live.members.as_mut(), &config);
        if what.text_stale {
            live.text_stale = true;
        }
        drop(live);
        if what.members_changed {
            shared.members_tx.send_modify(|generation| *generation += 1);
        }
    }

    /// Reads the member book with the config it renders with, in one moment (no apply lock:
    /// never waits for a reload).
    pub fn read_members<R>(&self, read: impl FnOnce(&dyn MemberBook, &Config) -> R) -> R {
        let live = self.shared.read_live();
        read(live.members.as_ref(), &live.config)
    }

    /// Notified after dynamic members changed (for views that show them, like the UI).
    pub fn subscribe_members(&self) -> watch::Receiver<u64> {
        self.shared.members_tx.subscribe()
    }

    /// Re-renders the live config with the current members and reloads HAProxy with it. Only
    /// the `--membership reload` baseline uses this; normal membership never reloads.
    pub async fn reload_members(&self, reason: &str) -> Result<(), ApplyError> {
        let shared = &self.shared;
        let _guard = shared.apply_lock.lock().await;
        let text = {
            let live = shared.read_live();
            render(
                &live.config,
                &live.members.render_members(&live.config),
                &shared.options.render,
            )
        };
        if *shared.loaded_text.lock().unwrap_or_else(|p| p.into_inner()) == text {
            return Ok(());
        }
        shared.reload(&text, reason).await?;
        {
            let mut live = shared.write_live();
            live.text = text;
            live.text_stale = false;
        }
        Ok(())
    }

    /// The dynamic backends that hold members now. Deleting a backend drops its members here;
    /// a caller that remembers what it handed over checks this after a config change, because
    /// a backend deleted and re-created between two of its looks has the same name and
    /// definition but no members any more.
    pub fn backends_with_members(&self) -> BTreeSet<String> {
        self.shared
            .read_live()
            .members
            .backend_keys()
            .into_iter()
            .collect()
    }
}
