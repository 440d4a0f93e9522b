//! # Thalassa: a service registry and an HAProxy runtime-API controller
//!
//! A wire-compatible replacement for Thalassa (registry, port 9000) and Thalassa Aqueduct
//! (HAProxy control plane + UI, port 10000). Services register `name/version/host/port` with a
//! lease; the aqueduct turns frontends and backends (REST) into haproxy.cfg, and keeps each
//! dynamic backend's servers equal to the registrations of its `name@version` through HAProxy's
//! runtime API.
//!
//! ## Bird's-eye view
//!
//! ```text
//!  curl / thalassa register          curl (frontends, backends)          browser
//!        |  POST/DELETE                    |  PUT/DELETE/POST               |  /overview ...
//!        v                                 v                                v
//!  registry (:9000) --feed--> aqueduct (:10000): controller -------> ui (hub, SSE /events)
//!   store + expiry   (SSE or     |            (render, check,            ^
//!   + event log      in-process) |             ONE reload per batch)     | stats, activity
//!                                v                 |                     |
//!                      membership::fast_lane       |                     |
//!                      (add joins, drain deletions |                     |
//!                       the moment they arrive)    |                     |
//!                                v                 |                     |
//!                     membership::manager ---------+---------------------+
//!                     (plan: add/ready/drain/del)  |
//!                                |  runtime API    |  master CLI reload
//!                                v                 v
//!                            HAProxy (master-worker, supervised child)
//! ```
//!
//! Threads: the registry, the API, the fast lane and the supervisor share the main runtime;
//! the manager's reconcile rounds, the stats poll and the UI's config view (CPU work in
//! chunks of milliseconds) run on [`background`]'s lower-priority thread, so a registration
//! is answered and its server added without waiting behind them.
//!
//! Entry points to read first: [`registry`] (its module doc has a map), [`aqueduct::controller`]
//! (the apply pipeline), [`membership::plan`] (the member state machine),
//! [`membership::manager`] (the loop that applies it), [`membership::members`] (member
//! identity: server ids, takeover inheritance), [`haproxy::supervisor`], and [`app`] (how
//! everything is wired; `thalassa up` is [`app::up`]).
//!
//! ## Invariants
//!
//! - **Membership changes never reload HAProxy.** Registrations, expiries, static member edits
//!   and version switches become `add server` / `set server ... state` / `del server` commands;
//!   only frontend/backend structure (binds, rules, balance, health, natives) reloads.
//! - **A rollout moves traffic by weight, live.** While a dynamic backend rolls out to another
//!   version, HAProxy holds exactly the members of both versions, each with the weight that gives
//!   the new version its share (`config::rollout::split_weights`); outside a rollout every member
//!   has weight 1. Steps, pauses, aborts and promotions are `set server ... weight` and member
//!   changes, never a reload; a plan's decision about a step that has moved on is refused.
//! - **No traffic before a passing check.** A new member is added in maintenance with health
//!   checks on and set `ready` only after HAProxy reports a passing check; a member the manager
//!   has not seen serving is rendered `disabled` so a reload or restart cannot put it into
//!   service early.
//! - **No in-flight request is cut.** A leaving member is drained until its connections end
//!   (bounded by `--drain-timeout`), then put in maintenance and deleted; a version switch keeps
//!   the old members until a new one serves.
//! - **A rejected change changes nothing.** Every candidate config passes `haproxy -c` before it
//!   is applied; a failed reload is rolled back; state files are only written after success.
//! - **No runtime command reaches an old worker after a reload saved its state.** Every
//!   `RuntimeClient` on the admin socket passes a gate the reload closes, and reconnects to
//!   the new worker after it.
//! - **Only `haproxy::runtime::RuntimeClient` writes to the admin socket; only the supervisor
//!   talks to the master CLI; only `aqueduct::controller` changes the live config and only
//!   `aqueduct::state_file` writes `aqueduct.json`.** Opening a Unix socket and starting a
//!   program are `disallowed-methods` in `clippy.toml`; the few places allowed to say why.
//! - **Nothing from the network reaches haproxy.cfg or a socket command with a newline or a
//!   control character** (natives are verbatim single lines; names use HAProxy's charset).
//! - **A registry outage never removes members**: followers wait and resume (or resync from a
//!   snapshot); only `offline` events remove members.
//! - **A killed aqueduct costs no request**: its HAProxy keeps serving, and the restarted
//!   aqueduct takes it over (listening sockets, members and server states) instead of
//!   replacing it; exactly one HAProxy per data dir remains.
//!
//! ## Layers
//!
//! Modules import only downward: a module may `use crate::` modules of a lower layer, never
//! of its own layer or a higher one (`tests/layering.rs` reads every `crate::` path in `src/`
//! and this table, and fails on an import against it). `main` -> `app` -> the rest.
//!
//! | layer | modules | what they are |
//! |---|---|---|
//! | 7 | `app` | the wiring: starts and connects every subsystem, the only module that knows them all |
//! | 6 | `cli` | the flags, and their conversion to each subsystem's options |
//! | 5 | `aqueduct`, `membership`, `ui` | REST + apply pipeline; live membership; the web UI |
//! | 4 | `status` | samples, activities and boards that membership writes and the API and UI read |
//! | 3 | `haproxy`, `registry` | HAProxy (render, runtime API, stats, supervisor); the registry |
//! | 2 | `config` | the frontend/backend model and balance rules |
//! | 1 | `auth`, `http_server`, `json_body` | HTTP plumbing shared by the two APIs |
//! | 0 | `api_error`, `atomic_file`, `background`, `metrics`, `openapi`, `shutdown_signal` | leaves |
//!
//! Where two layers must cooperate without importing each other, the lower one states what it
//! needs as a trait and `app` implements it: membership drives the controller through
//! [`membership::control_plane::ControlPlane`], the controller keeps membership's members as an
//! [`aqueduct::member_book::MemberBook`], membership reports to the UI through
//! [`status::StatusSink`].
//!
//! ## Scale-out
//!
//! The registry's storage sits behind [`registry::store::RegistrationStore`] (async upsert,
//! remove, list, expiry rounds, the event log). The embedded [`registry::memory_store`] is the
//! default; [`registry::redis_store`] shares one state and one event stream between several
//! registry nodes on Redis or Valkey (`--store`). Its promises, checked by
//! `tests/registry_cluster*.rs` against real Redis and Sentinel processes:
//!
//! - **Every change and its event are one atomic step on the store** (a Redis Function), so
//!   every node serves the same events with the same ids, and a follower resumes on any node.
//! - **Each registration expires once**, within a few milliseconds of its deadline on the
//!   store's clock, by whichever node reaps first; a stall of the whole cluster or of the store
//!   holds the leases that ran out meanwhile instead of mass-expiring them.
//! - **A node that cannot reach the store refuses writes (503) and invents nothing**: reads
//!   and followers are served from its local copy, marked stale; no `offline` event is ever
//!   issued by a node, only by the store.
//!
//! Several aqueducts can follow one registry (or a cluster, `--registry A,B`): each keeps its
//! own HAProxy. With `--store` they form a fleet ([`aqueduct::fleet`]) sharing one
//! configuration, checked by `tests/aqueduct_fleet*.rs`:
//!
//! - **A change is committed once, on a version, or not at all**: a Function writes the items,
//!   the version and the change entry in one step, refuses a change to an item written after
//!   the version its node ran (409), and refuses a commit that arrives after its node answered
//!   503, so a refused write never applies later.
//! - **Every node runs the store's latest version or says why not**: it adopts each version as
//!   one change of its own apply pipeline (one reload at most), and a version its HAProxy
//!   refuses leaves it on its previous config with the refusal in its report.
//! - **The store out of reach stops changes, never traffic**: nodes keep serving what they
//!   run; writes are 503; nothing is queued.

pub mod api_error;
pub mod app;
pub mod aqueduct;
pub mod atomic_file;
pub mod auth;
pub mod background;
pub mod cli;
pub mod config;
pub mod haproxy;
pub mod http_server;
pub mod json_body;
pub mod membership;
pub mod metrics;
pub mod openapi;
pub mod registry;
pub mod shutdown_signal;
pub mod status;
pub mod ui;

/// The error type of a whole subcommand run: reported once by `main`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
