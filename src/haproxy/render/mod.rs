//! Model to haproxy.cfg text. Rendering is a pure function and byte-for-byte deterministic:
//! sections sorted by key, ACL names derived from each rule's position, servers sorted, so an
//! unchanged model renders an unchanged config and causes no reload. Natives and rule values
//! are emitted verbatim (never escaped); validation has already refused control characters.

mod backend;
mod frontend;

use crate::config::{Config, Mode};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The ring HAProxy writes health-check results to (declared in haproxy/base.cfg).
pub const HEALTH_RING: &str = "thalassa-health";

/// The fixed `global` and `defaults` sections, with `{{placeholders}}` for [`RenderSettings`].
pub const BASE_TEMPLATE: &str = include_str!("../../../haproxy/base.cfg");

/// What the rendered config needs to know about the process that will run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderSettings {
    /// The admin-level stats socket (the runtime API).
    pub stats_socket: PathBuf,
    /// Where the supervisor dumps `show servers state` before a reload.
    pub server_state_file: PathBuf,
    /// Address of a `listen stats` page, e.g. `127.0.0.1:1988`; none when unset.
    pub stats_bind: Option<String>,
    /// How long an old worker may keep serving its clients after a reload.
    pub hard_stop_after: Duration,
    /// Arguments of the global `log` line. `stdout` writes are non-blocking in HAProxy, so a
    /// slow reader loses log lines rather than stalling traffic.
    pub log_target: String,
    /// `--bind-address`: the host this node's HAProxy listens on where a frontend binds a
    /// wildcard (`*:80`, `:80`, `0.0.0.0:80`), so several nodes of a fleet can share one
    /// configuration on one host, each on its own address. Explicit addresses are kept.
    pub wildcard_bind_host: Option<IpAddr>,
}

impl RenderSettings {
    pub fn new(stats_socket: PathBuf, server_state_file: PathBuf) -> Self {
        RenderSettings {
            stats_socket,
            server_state_file,
            stats_bind: None,
            hard_stop_after: Duration::from_secs(30),
            log_target: "stdout format raw local0".to_owned(),
            wildcard_bind_host: None,
        }
    }
}

/// A frontend's `bind` value as this node renders it: with `wildcard_host`, each wildcard
/// address (`*:80`, `:80`, `0.0.0.0:80`, also after `ipv4@`) of the address list names that
/// host instead; options after the address list are kept.
pub fn effective_bind(bind: &str, wildcard_host: Option<IpAddr>) -> Cow<'_, str> {
    let Some(host) = wildcard_host else {
        return Cow::Borrowed(bind);
    };
    let (addresses, options) = match bind.split_once(char::is_whitespace) {
        Some((addresses, options)) => (addresses, Some(options)),
        None => (bind, None),
    };
    let host = match host {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    let rewritten: Vec<String> = addresses
        .split(',')
        .map(|address| {
            let (prefix, rest) = match address.split_once('@') {
                Some((prefix @ ("ipv4" | "tcp" | "tcp4"), rest)) => (Some(prefix), rest),
                _ => (None, address),
            };
            match rest.rsplit_once(':') {
                Some(("" | "*" | "0.0.0.0", port)) => match prefix {
                    Some(prefix) => format!("{prefix}@{host}:{port}"),
                    None => format!("{host}:{port}"),
                },
                _ => address.to_owned(),
            }
        })
        .collect();
    Cow::Owned(match options {
        Some(options) => format!("{} {options}", rewritten.join(",")),
        None => rewritten.join(","),
    })
}

/// A member of a dynamic backend, as it must appear in the config so that a structural
/// reload keeps every server added at runtime under the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RenderMember {
    pub host: IpAddr,
    pub port: u16,
    /// Explicit server id, for algorithms that need one (random, consistent hashing).
    pub id: Option<u32>,
    /// Rendered when not HAProxy's default (a rollout's split survives a reload).
    pub weight: u16,
}

/// The current members of each dynamic backend, by backend key. Static backends list their
/// members in the config itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderMembers {
    by_backend: BTreeMap<String, Vec<RenderMember>>,
    /// Server names of members still waiting for their first passing health check. They are
    /// rendered `disabled` so that a reload never puts an unchecked member into service.
    joining: BTreeSet<String>,
    /// Servers of each dynamic backend that are not members any more but still in service
    /// (an old version's kept until the new one serves, a leaver draining): rendered after
    /// the members, never `disabled`, so a reload keeps them for the manager to remove.
    leaving: BTreeMap<String, Vec<RenderMember>>,
}

impl RenderMembers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces a backend's members; duplicates of one address keep the first.
    pub fn set(&mut self, backend_key: &str, members: Vec<RenderMember>) {
        replace_sorted(&mut self.by_backend, backend_key, members);
    }

    pub fn get(&self, backend_key: &str) -> &[RenderMember] {
        self.by_backend.get(backend_key).map_or(&[], Vec::as_slice)
    }

    /// Replaces a backend's leaving servers that are still in service.
    pub fn set_leaving(&mut self, backend_key: &str, servers: Vec<RenderMember>) {
        replace_sorted(&mut self.leaving, backend_key, servers);
    }

    pub fn leaving(&self, backend_key: &str) -> &[RenderMember] {
        self.leaving.get(backend_key).map_or(&[], Vec::as_slice)
    }

    /// Replaces the set of joining members (by server name).
    pub fn set_joining(&mut self, joining: BTreeSet<String>) {
        self.joining = joining;
    }

    pub fn is_joining(&self, server_name: &str) -> bool {
        self.joining.contains(server_name)
    }

    /// Adds one member (by server name) to the joining set.
    pub fn mark_joining(&mut self, server_name: String) {
        self.joining.insert(server_name);
    }
}

/// Sets `backend_key`'s servers in `map`, sorted by address with one per address (the first);
/// none removes the entry.
fn replace_sorted(
    map: &mut BTreeMap<String, Vec<RenderMember>>,
    backend_key: &str,
    mut servers: Vec<RenderMember>,
) {
    servers.sort_by_key(|m| (m.host, m.port));
    servers.dedup_by_key(|m| (m.host, m.port));
    if servers.is_empty() {
        map.remove(backend_key);
    } else {
        map.insert(backend_key.to_owned(), servers);
    }
}

/// A member's server name (see `haproxy::server_name`).
pub use super::server_name::server_name;

/// The server address: `10.0.0.1:80`, or `[::1]:80` for IPv6.
pub fn server_address(host: IpAddr, port: u16) -> String {
    SocketAddr::new(host, port).to_string()
}

/// Renders the whole haproxy.cfg.
pub fn render(config: &Config, members: &RenderMembers, settings: &RenderSettings) -> String {
    let mut out = fill_base(settings);
    if let Some(bind) = &settings.stats_bind {
        out.push_str("\nlisten stats\n");
        line(&mut out, format_args!("bind {bind}"));
        line(&mut out, format_args!("mode http"));
        line(&mut out, format_args!("stats enable"));
        line(&mut out, format_args!("stats uri /"));
        line(&mut out, format_args!("stats refresh 2s"));
    }
    for frontend in config.frontends.values() {
        out.push('\n');
        frontend::render(&mut out, frontend, settings.wildcard_bind_host);
    }
    let placeholders = placeholders(config);
    let mut backend_names: Vec<&str> = config
        .backends
        .keys()
        .chain(placeholders.keys())
        .map(String::as_str)
        .collect();
    backend_names.sort_unstable();
    for name in backend_names {
        out.push('\n');
        match (config.backends.get(name), placeholders.get(name)) {
            (Some(backend), _) => backend::render(&mut out, backend, members),
            (None, Some(waiting)) => backend::render_placeholder(&mut out, name, waiting),
            (None, None) => {}
        }
    }
    out
}

/// Frontends waiting for a backend that does not exist yet, by that backend's name.
pub(crate) struct Waiting {
    /// Mode of the first (sorted) frontend that names it: a backend must match its frontend.
    pub mode: Mode,
    pub frontends: Vec<String>,
}

fn placeholders(config: &Config) -> BTreeMap<String, Waiting> {
    let mut waiting: BTreeMap<String, Waiting> = BTreeMap::new();
    for frontend in config.frontends.values() {
        for name in config.missing_backends_of(frontend) {
            let entry = waiting.entry(name).or_insert_with(|| Waiting {
                mode: frontend.mode,
                frontends: Vec::new(),
            });
            entry.frontends.push(frontend.key.clone());
        }
    }
    waiting
}

fn fill_base(settings: &RenderSettings) -> String {
    BASE_TEMPLATE
        .replace("{{log_target}}", &settings.log_target)
        .replace("{{stats_socket}}", &config_path(&settings.stats_socket))
        .replace(
            "{{server_state_file}}",
            &config_path(&settings.server_state_file),
        )
        .replace(
            "{{hard_stop_after}}",
            &config_duration(settings.hard_stop_after),
        )
}

/// A path as a config word: bare when it is plain, single-quoted otherwise (HAProxy expands
/// nothing inside single quotes).
fn config_path(path: &Path) -> String {
    let text = path.to_string_lossy();
    if text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+@:".contains(c))
    {
        text.into_owned()
    } else {
        format!("'{}'", text.replace(['\'', '\n', '\r'], "_"))
    }
}

/// A duration in HAProxy's time format: whole seconds as `30s`, otherwise milliseconds.
fn config_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

/// Writes one indented line of a section body.
fn line(out: &mut String, args: std::fmt::Arguments<'_>) {
    out.push_str("    ");
    let _ = out.write_fmt(args);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_binds_take_the_node_address() {
        let host = Some("127.0.0.3".parse().unwrap());
        for (bind, expected) in [
            ("*:80", "127.0.0.3:80"),
            (":80", "127.0.0.3:80"),
            ("0.0.0.0:80", "127.0.0.3:80"),
            ("ipv4@*:80", "ipv4@127.0.0.3:80"),
            ("10.0.0.1:80", "10.0.0.1:80"),
            (
                "*:80,10.0.0.1:81 ssl crt /x.pem",
                "127.0.0.3:80,10.0.0.1:81 ssl crt /x.pem",
            ),
            ("unix@/run/x.sock", "unix@/run/x.sock"),
        ] {
            assert_eq!(effective_bind(bind, host), expected, "{bind}");
            assert_eq!(effective_bind(bind, None), bind);
        }
    }

    #[test]
    fn paths_and_durations() {
        assert_eq!(
            config_path(Path::new("/tmp/x/admin.sock")),
            "/tmp/x/admin.sock"
        );
        assert_eq!(config_path(Path::new("/tmp/a b/s")), "'/tmp/a b/s'");
        assert_eq!(config_path(Path::new("/tmp/$HOME/s")), "'/tmp/$HOME/s'");
        assert_eq!(config_duration(Duration::from_secs(30)), "30s");
        assert_eq!(config_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn names_and_addresses() {
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(server_address(v4, 3306), "10.0.0.1:3306");
        assert_eq!(server_address(v6, 80), "[::1]:80");
    }

    #[test]
    fn members_are_sorted_and_deduplicated() {
        let m = |host: &str, port, id| RenderMember {
            host: host.parse().unwrap(),
            port,
            id,
            weight: 1,
        };
        let mut members = RenderMembers::new();
        members.set(
            "be",
            vec![
                m("10.0.0.2", 1, None),
                m("10.0.0.1", 2, Some(7)),
                m("10.0.0.2", 1, Some(3)),
            ],
        );
        assert_eq!(
            members.get("be"),
            &[m("10.0.0.1", 2, Some(7)), m("10.0.0.2", 1, None)]
        );
        members.set("be", Vec::new());
        assert!(members.get("be").is_empty());
    }

    #[test]
    fn leaving_servers_in_service_are_rendered_enabled_after_the_members() {
        let m = |host: &str, id| RenderMember {
            host: host.parse().unwrap(),
            port: 80,
            id: Some(id),
            weight: 1,
        };
        let mut config = Config::default();
        let backend = crate::config::Backend {
            balance: crate::config::balance::Balance::parse("source").unwrap(),
            ..crate::config::Backend::dynamic("be", "svc", "2")
        };
        config.backends.insert("be".to_owned(), backend);
        let mut members = RenderMembers::new();
        members.set("be", vec![m("10.0.0.3", 3)]);
        members.mark_joining("be_10.0.0.3:80".to_owned());
        // An old version's server, kept while 10.0.0.3 joins; a duplicate of a member is not
        // rendered twice.
        members.set_leaving("be", vec![m("10.0.0.1", 1), m("10.0.0.3", 3)]);
        let settings = RenderSettings::new("/run/a.sock".into(), "/run/state".into());
        let text = render(&config, &members, &settings);
        let servers: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("server ") || l.starts_with("# leaving"))
            .collect();
        assert_eq!(
            servers,
            [
                "server be_10.0.0.3:80 10.0.0.3:80 check inter 2000 id 3 disabled",
                "# leaving: kept in service until removed",
                "server be_10.0.0.1:80 10.0.0.1:80 check inter 2000 id 1",
            ],
            "{text}"
        );
    }
}
