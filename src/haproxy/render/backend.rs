//! One `backend` section, or the placeholder of a backend a frontend waits for.

use super::{HEALTH_RING, RenderMember, RenderMembers, Waiting, line, server_address, server_name};
use crate::config::rollout::DEFAULT_WEIGHT;
use crate::config::{Backend, BackendType, HttpVersion, Mode};

pub(super) fn render(out: &mut String, backend: &Backend, members: &RenderMembers) {
    out.push_str(&format!("backend {}\n", backend.key));
    line(out, format_args!("mode {}", backend.mode.as_str()));
    line(out, format_args!("balance {}", backend.balance.as_str()));
    // Health-check results go to the ring the membership manager streams (see
    // haproxy/base.cfg); HAProxy prints them to the supervisor's log as warnings as well.
    line(out, format_args!("log ring@{HEALTH_RING} local0 info"));
    line(out, format_args!("option log-health-checks"));
    if let (Mode::Http, Some(cookie)) = (backend.mode, &backend.sticky_cookie) {
        // One cookie value per server address, derived from this key: every node of a fleet
        // (and every reload) gives a server the same value, so a client stays where it was.
        line(
            out,
            format_args!("cookie {cookie} insert indirect nocache dynamic"),
        );
        line(
            out,
            format_args!("dynamic-cookie-key thalassa-{}", backend.key),
        );
    }
    if backend.balance.needs_consistent_hashing() {
        // Map-based hashing refuses `add server`; consistent hashing lets members join live.
        line(out, format_args!("hash-type consistent"));
    }
    if backend.mode == Mode::Http {
        if let Some(host) = &backend.host {
            line(out, format_args!("http-request set-header Host {host}"));
        }
        if let Some(health) = &backend.health {
            match (health.http_version, &backend.host) {
                (HttpVersion::Http11, Some(host)) => {
                    line(out, format_args!("option httpchk"));
                    line(
                        out,
                        format_args!(
                            "http-check send meth {} uri {} ver HTTP/1.1 hdr Host {host}",
                            health.method.as_str(),
                            health.uri
                        ),
                    );
                }
                (version, _) => line(
                    out,
                    format_args!(
                        "option httpchk {} {} {}",
                        health.method.as_str(),
                        health.uri,
                        version.as_str()
                    ),
                ),
            }
        }
    }
    for native in &backend.natives {
        line(out, format_args!("{native}"));
    }
    let interval = backend.check_interval_ms();
    let explicit_ids = backend.balance.needs_explicit_server_ids();
    let servers: Vec<RenderMember> = match backend.kind {
        BackendType::Static => backend
            .static_members
            .iter()
            .map(|m| RenderMember {
                host: m.host,
                port: m.port,
                id: None,
                weight: DEFAULT_WEIGHT,
            })
            .collect(),
        BackendType::Dynamic => members.get(&backend.key).to_vec(),
    };
    let leaving: Vec<RenderMember> = match backend.kind {
        BackendType::Static => Vec::new(),
        BackendType::Dynamic => members
            .leaving(&backend.key)
            .iter()
            .filter(|l| !servers.iter().any(|m| (m.host, m.port) == (l.host, l.port)))
            .copied()
            .collect(),
    };
    for (index, server) in servers.iter().chain(&leaving).enumerate() {
        if index == servers.len() {
            line(
                out,
                format_args!("# leaving: kept in service until removed"),
            );
        }
        let id = match server.id {
            Some(id) if explicit_ids => format!(" id {id}"),
            _ => String::new(),
        };
        let name = server_name(&backend.key, server.host, server.port);
        let disabled = if index < servers.len() && members.is_joining(&name) {
            " disabled"
        } else {
            ""
        };
        let weight = if server.weight == DEFAULT_WEIGHT {
            String::new()
        } else {
            format!(" weight {}", server.weight)
        };
        line(
            out,
            format_args!(
                "server {name} {} check inter {interval}{weight}{id}{disabled}",
                server_address(server.host, server.port),
            ),
        );
    }
}

/// A frontend may name a backend before it exists (the walkthrough PUTs frontends first). It
/// still binds: its traffic goes to this empty backend, which answers 503 (HTTP) or closes
/// the connection (TCP) until the real backend replaces it under the same name.
pub(super) fn render_placeholder(out: &mut String, name: &str, waiting: &Waiting) {
    out.push_str(&format!(
        "# waiting for backend {name}: used by frontend {}, not created yet\n",
        waiting.frontends.join(", ")
    ));
    out.push_str(&format!("backend {name}\n"));
    line(out, format_args!("mode {}", waiting.mode.as_str()));
}
