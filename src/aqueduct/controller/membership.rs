//! The controller's side of live membership: what the membership manager and the fast lane
//! record (members, the servers HAProxy holds, which are joining or going out of service) and
//! read back (what to render, whether a server may still be joining). Nothing here reloads,
//! except [`Controller::reload_members`] for the `--membership reload` baseline.

use super::{ApplyError, Controller, HeldServer, OthersJoining};
use crate::config::BackendType;
use crate::haproxy::render::{RenderMembers, render};
use crate::haproxy::stat::{AdminState, ServerStateRow};
use crate::registry::model::Registration;
use std::collections::BTreeSet;
use tokio::sync::watch;

impl Controller {
    /// Records the current members of a dynamic backend. This never reloads HAProxy: the
    /// caller applies membership at runtime (`add server` / `del server`, with the ids from
    /// [`Controller::render_members`]); the next structural reload renders these members under
    /// the same server names and ids, so nothing is lost.
    pub async fn set_members(&self, backend_key: &str, registrations: Vec<Registration>) {
        self.set_members_of(vec![(backend_key.to_owned(), registrations)])
            .await;
    }

    /// [`Controller::set_members`] for several backends at once: one render for all of them.
    pub async fn set_members_of(&self, changes: Vec<(String, Vec<Registration>)>) {
        let shared = &self.shared;
        let _guard = shared.apply_lock.lock().await;
        let mut live = shared.write_live();
        for (backend_key, registrations) in changes {
            live.members.set(&backend_key, registrations);
        }
        live.text_stale = true;
        drop(live);
        shared.members_tx.send_modify(|generation| *generation += 1);
    }

    /// Tells the member store which servers HAProxy holds in the dynamic backends among
    /// `backends` (from `show servers state` rows), so server ids are allocated against all of
    /// them: see [`DynamicMembers::observe`]. Never reloads.
    ///
    /// [`DynamicMembers::observe`]: crate::aqueduct::members::DynamicMembers::observe
    pub async fn observe_servers(&self, backends: &BTreeSet<String>, rows: &[ServerStateRow]) {
        let shared = &self.shared;
        let _guard = shared.apply_lock.lock().await;
        let mut live = shared.write_live();
        let dynamic: Vec<String> = backends
            .iter()
            .filter(|key| {
                live.config
                    .backends
                    .get(*key)
                    .is_some_and(|b| b.kind == BackendType::Dynamic)
            })
            .cloned()
            .collect();
        let mut by_backend: std::collections::BTreeMap<&str, Vec<HeldServer>> =
            std::collections::BTreeMap::new();
        for row in rows {
            if let (Some(host), Some(port)) = (row.addr, row.port) {
                by_backend
                    .entry(row.backend.as_str())
                    .or_default()
                    .push(HeldServer {
                        host,
                        port,
                        id: row.server_id,
                        in_service: row.admin_state() != AdminState::Maint,
                    });
            }
        }
        let mut changed = false;
        for key in dynamic {
            let servers = by_backend.get(key.as_str()).map_or(&[][..], Vec::as_slice);
            changed |= live.members.observe(&key, servers);
        }
        if changed {
            live.text_stale = true;
        }
    }

    /// Servers (by name, per backend) the membership manager is about to take out of service
    /// (maintenance, deletion): from now on no reload renders them, so none comes back. Taken
    /// under the apply lock: a reload rendered before this has finished before the caller's
    /// commands reach HAProxy.
    pub async fn out_of_service(
        &self,
        servers: &std::collections::BTreeMap<String, BTreeSet<String>>,
    ) {
        let shared = &self.shared;
        let _guard = shared.apply_lock.lock().await;
        let mut live = shared.write_live();
        let mut changed = false;
        for (backend_key, names) in servers {
            changed |= live.members.out_of_service(backend_key, names);
        }
        if changed {
            live.text_stale = true;
        }
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

    /// Records which members (by server name) are still waiting for a first passing check and
    /// which serve, so a structural reload renders every dynamic member not known to serve
    /// `disabled` (see [`DynamicMembers::may_be_joining`]). Never reloads.
    ///
    /// [`DynamicMembers::may_be_joining`]: crate::aqueduct::members::DynamicMembers::may_be_joining
    pub async fn set_phases(&self, joining: BTreeSet<String>, serving: BTreeSet<String>) {
        let shared = &self.shared;
        let _guard = shared.apply_lock.lock().await;
        let mut live = shared.write_live();
        live.members.set_phases(joining, serving);
        // Even when the sets look the same: a static member a reload rendered `disabled`
        // was never in them, and is now ready; the served text must say so.
        live.text_stale = true;
    }

    /// The server (by name) may still be waiting for a first passing check, by what the
    /// membership manager last published: see [`DynamicMembers::may_be_joining`].
    ///
    /// [`DynamicMembers::may_be_joining`]: crate::aqueduct::members::DynamicMembers::may_be_joining
    pub fn may_be_joining(&self, server: &str) -> bool {
        self.shared.read_live().members.may_be_joining(server)
    }

    /// Whether the other members of a dynamic backend are all still joining: see
    /// [`DynamicMembers::others_joining`]. One read of the live state.
    ///
    /// [`DynamicMembers::others_joining`]: crate::aqueduct::members::DynamicMembers::others_joining
    pub fn others_joining(&self, backend_key: &str, except: &str) -> OthersJoining {
        self.shared
            .read_live()
            .members
            .others_joining(backend_key, except)
    }

    /// Members of the dynamic backends with their server ids, as the config renders them.
    pub fn render_members(&self) -> RenderMembers {
        let live = self.shared.read_live();
        live.members.render_members(&live.config)
    }

    /// The dynamic backends that hold members now. Deleting a backend drops its members here;
    /// a caller that remembers what it handed to [`Controller::set_members_of`] checks this
    /// after a config change, because a backend deleted and re-created between two of its
    /// looks has the same name and definition but no members any more.
    pub fn backends_with_members(&self) -> BTreeSet<String> {
        let live = self.shared.read_live();
        live.members.backend_keys().map(str::to_owned).collect()
    }
}
