//! The configuration model: frontends and backends as validated values, and the rules of
//! their balance algorithms. The bottom of the aqueduct's layers: it imports nothing of the
//! crate, so the renderer (`haproxy::render`), the REST API (`aqueduct`, which also owns the
//! JSON rows of these values) and membership all read one model.

pub mod balance;
pub mod rollout;

use balance::Balance;
use rollout::Rollout;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Every frontend and backend, by key. BTreeMaps give the byte-order sorting of ids the
/// original used for list endpoints and for the rendered config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    pub frontends: BTreeMap<String, Frontend>,
    pub backends: BTreeMap<String, Backend>,
}

impl Config {
    /// Backends a frontend names (default and rules) that do not exist yet, sorted, no repeats.
    pub fn missing_backends_of(&self, frontend: &Frontend) -> Vec<String> {
        let mut missing: Vec<String> = frontend
            .referenced_backends()
            .filter(|name| !self.backends.contains_key(*name))
            .map(str::to_owned)
            .collect();
        missing.sort();
        missing.dedup();
        missing
    }

    /// Every backend HAProxy's config has: the configured ones and the empty placeholders of
    /// backends that frontends name but that do not exist (yet, or any more).
    pub fn rendered_backend_names(&self) -> std::collections::BTreeSet<String> {
        let mut names: std::collections::BTreeSet<String> = self.backends.keys().cloned().collect();
        for frontend in self.frontends.values() {
            names.extend(self.missing_backends_of(frontend));
        }
        names
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Http,
    Tcp,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Http => "http",
            Mode::Tcp => "tcp",
        }
    }
}

/// How an HTTP frontend treats client keep-alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Keepalive {
    #[default]
    Default,
    Close,
    ServerClose,
}

impl Keepalive {
    pub fn as_str(self) -> &'static str {
        match self {
            Keepalive::Default => "default",
            Keepalive::Close => "close",
            Keepalive::ServerClose => "server-close",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Frontend {
    pub key: String,
    /// Verbatim `bind` arguments, e.g. `*:3306` or `127.0.0.1:80,127.0.0.1:81`.
    pub bind: String,
    /// Key of the default backend (need not exist yet).
    pub backend: String,
    pub mode: Mode,
    pub keepalive: Keepalive,
    pub rules: Vec<Rule>,
    /// Raw config lines, emitted verbatim in the frontend section.
    pub natives: Vec<String>,
}

impl Frontend {
    pub fn referenced_backends(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.backend.as_str()).chain(self.rules.iter().map(|r| r.backend.as_str()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    Path,
    Url,
    Header,
}

impl RuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Path => "path",
            RuleKind::Url => "url",
            RuleKind::Header => "header",
        }
    }
}

/// A routing rule of an HTTP frontend: requests matching it go to `backend`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub kind: RuleKind,
    /// Header name, for header rules only.
    pub header: Option<String>,
    /// ACL match method, e.g. `path_beg` or `hdr_dom`.
    pub operation: String,
    /// Pattern(s), emitted verbatim.
    pub value: String,
    pub backend: String,
}

/// Where a backend's members come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendType {
    /// Members are the registry's registrations of `name@version`.
    Dynamic,
    /// Members are listed in the backend itself.
    Static,
}

impl BackendType {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendType::Dynamic => "dynamic",
            BackendType::Static => "static",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    pub key: String,
    pub kind: BackendType,
    /// Registry service name (dynamic backends).
    pub name: Option<String>,
    /// Registry service version (dynamic backends).
    pub version: Option<String>,
    pub balance: Balance,
    /// Host header set on requests and HTTP/1.1 health checks.
    pub host: Option<String>,
    pub mode: Mode,
    /// Members of a static backend; always empty for a dynamic one.
    pub static_members: Vec<StaticMember>,
    pub natives: Vec<String>,
    /// HTTP health check; only ever set in HTTP mode.
    pub health: Option<Health>,
    /// Cookie name that keeps HTTP clients on one server (HAProxy's dynamic cookies, one
    /// value per server address): what makes a rollout sticky on a non-hash balance.
    pub sticky_cookie: Option<String>,
    /// A rollout to another version, active or the last one ended (kept to show why).
    pub rollout: Option<Box<Rollout>>,
}

impl Backend {
    /// A dynamic backend of `name@version` with every other setting at its default, as a
    /// PUT of `{"type":"dynamic","name":..,"version":..}` makes it.
    pub fn dynamic(key: &str, name: &str, version: &str) -> Backend {
        Backend {
            key: key.to_owned(),
            kind: BackendType::Dynamic,
            name: Some(name.to_owned()),
            version: Some(version.to_owned()),
            balance: Balance::default(),
            host: None,
            mode: Mode::Http,
            static_members: Vec::new(),
            natives: Vec::new(),
            health: None,
            sticky_cookie: None,
            rollout: None,
        }
    }

    /// A static backend with these members and every other setting at its default.
    pub fn with_static_members(key: &str, members: &[(IpAddr, u16)]) -> Backend {
        let static_members = members
            .iter()
            .map(|&(host, port)| {
                let mut as_sent = Map::new();
                as_sent.insert("host".to_owned(), Value::from(host.to_string()));
                as_sent.insert("port".to_owned(), Value::from(port));
                StaticMember {
                    host,
                    port,
                    as_sent,
                }
            })
            .collect();
        Backend {
            kind: BackendType::Static,
            name: None,
            version: None,
            static_members,
            ..Backend::dynamic(key, "", "")
        }
    }

    /// The rollout in progress (running or paused), if any.
    pub fn active_rollout(&self) -> Option<&Rollout> {
        self.rollout.as_deref().filter(|r| r.is_active())
    }

    /// Whether this dynamic backend's members include registrations of `version`: its own
    /// version, and during a rollout the version it moves to.
    pub fn follows_version(&self, version: &str) -> bool {
        self.version.as_deref() == Some(version)
            || self.active_rollout().is_some_and(|r| r.version == version)
    }

    /// Check interval of every server, in milliseconds.
    pub fn check_interval_ms(&self) -> u32 {
        self.health
            .as_ref()
            .map_or(Health::DEFAULT_INTERVAL_MS, |h| h.interval_ms)
    }
}

/// A member listed in a static backend.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticMember {
    pub host: IpAddr,
    pub port: u16,
    /// The object as the client sent it (`port` may be a string), returned unchanged by GET.
    pub as_sent: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HealthMethod {
    #[default]
    Get,
    Post,
}

impl HealthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthMethod::Get => "GET",
            HealthMethod::Post => "POST",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HttpVersion {
    #[default]
    Http10,
    Http11,
}

impl HttpVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpVersion::Http10 => "HTTP/1.0",
            HttpVersion::Http11 => "HTTP/1.1",
        }
    }
}

/// An HTTP health check of every server of a backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub method: HealthMethod,
    pub uri: String,
    pub http_version: HttpVersion,
    /// Milliseconds between checks.
    pub interval_ms: u32,
}

impl Health {
    pub const DEFAULT_INTERVAL_MS: u32 = 2000;
}

impl Default for Health {
    fn default() -> Self {
        Health {
            method: HealthMethod::Get,
            uri: "/".to_owned(),
            http_version: HttpVersion::Http10,
            interval_ms: Self::DEFAULT_INTERVAL_MS,
        }
    }
}
