//! What membership needs of the control plane that holds the configuration and renders it:
//! the config (and its changes), and the member book kept under the control plane's apply
//! lock. Narrow on purpose: membership never sees the REST layer; the application implements
//! this for the aqueduct's controller (`app::control_plane`).

use super::members::OthersJoining;
use crate::config::Config;
use crate::haproxy::render::RenderMembers;
use crate::haproxy::stat::ServerStateRow;
use crate::registry::model::Registration;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::watch;

/// A boxed future, so the trait can be held as `Arc<dyn ControlPlane>`.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Server names by backend key.
pub type ServersByBackend = BTreeMap<String, BTreeSet<String>>;

/// The control plane as membership sees it. The `async` methods change the member book under
/// the apply lock (a reload rendered before has finished before they return, none starts
/// meanwhile), and never reload HAProxy, except `reload_members`.
pub trait ControlPlane: Send + Sync {
    /// The configuration HAProxy runs now.
    fn config(&self) -> Arc<Config>;
    /// The configuration, and every change of it.
    fn subscribe(&self) -> watch::Receiver<Arc<Config>>;
    /// Replaces the members of these dynamic backends (see `DynamicMembers::set`).
    fn set_members_of(&self, changes: Vec<(String, Vec<Registration>)>) -> Pending<'_, ()>;
    /// Tells which servers HAProxy holds in the dynamic backends among `backends`, so server
    /// ids are allocated against all of them (see `DynamicMembers::observe`).
    fn observe_servers<'a>(
        &'a self,
        backends: &'a BTreeSet<String>,
        rows: &'a [ServerStateRow],
    ) -> Pending<'a, ()>;
    /// Servers about to be taken out of service (maintenance, deletion): from now on no
    /// reload renders them, so none comes back.
    fn out_of_service<'a>(&'a self, servers: &'a ServersByBackend) -> Pending<'a, ()>;
    /// Which servers are still waiting for a first passing check and which serve, so a
    /// reload renders every dynamic member not known to serve `disabled`.
    fn set_phases(&self, joining: BTreeSet<String>, serving: BTreeSet<String>) -> Pending<'_, ()>;
    /// Members of the dynamic backends with their server ids, as the config renders them.
    fn render_members(&self) -> RenderMembers;
    /// The dynamic backends that hold members now.
    fn backends_with_members(&self) -> BTreeSet<String>;
    /// The server may still be waiting for a first passing check.
    fn may_be_joining(&self, server: &str) -> bool;
    /// Whether the members of a backend other than `except` are all still joining.
    fn others_joining(&self, backend_key: &str, except: &str) -> OthersJoining;
    /// Re-renders the config with the current members and reloads HAProxy with it (the
    /// `--membership reload` baseline only); the error in words.
    fn reload_members<'a>(&'a self, reason: &'a str) -> Pending<'a, Result<(), String>>;
}
