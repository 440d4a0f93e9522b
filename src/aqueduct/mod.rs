//! The aqueduct: HAProxy frontends and backends over REST, applied to a supervised HAProxy.
//!
//! Flow of a change: `routes` (HTTP) -> `validate` (JSON body -> `config`) -> `controller`
//! (queue; per batch: apply, `haproxy::render`, `ConfigTarget::check`, one
//! `ConfigTarget::reload`, `state_file::save`, swap) -> the answer to the request. In a fleet
//! (`--store`), `routes` -> `fleet` (check on this node, commit to the shared store, apply as
//! `Change::Adopt`) -> the answer; every node's `fleet::sync` adopts the versions others commit.
//! `import_original` turns the original Aqueduct's persistence file into a config, item by
//! item (`thalassa import-original`).
//!
//! Invariants:
//! - only the controller's worker changes the live config, and only after HAProxy runs it;
//! - only `state_file` writes `<data-dir>/aqueduct.json`, and only after a successful reload;
//! - the apply pipeline talks to HAProxy only through `Arc<dyn ConfigTarget>`;
//! - an unchanged rendered text never reloads; membership changes (`update_members`) never reload;
//! - nothing a client sends reaches haproxy.cfg with a control character (natives included).

pub mod apply_metrics;
pub mod bind_check;
pub mod controller;
pub mod fleet;
pub mod import_original;
pub mod member_book;
pub mod rollout;
pub mod routes;
pub mod rows;
pub mod state_file;
pub mod validate;
