//! One `frontend` section.

use super::{effective_bind, line};
use crate::config::{Frontend, Keepalive, Mode, Rule, RuleKind};
use std::net::IpAddr;

pub(super) fn render(out: &mut String, frontend: &Frontend, wildcard_host: Option<IpAddr>) {
    out.push_str(&format!("frontend {}\n", frontend.key));
    line(
        out,
        format_args!("bind {}", effective_bind(&frontend.bind, wildcard_host)),
    );
    line(out, format_args!("mode {}", frontend.mode.as_str()));
    line(out, format_args!("default_backend {}", frontend.backend));
    if frontend.mode == Mode::Http {
        line(out, format_args!("option httplog"));
        // An old worker answers the request in flight and then closes, instead of closing
        // idle keep-alive connections a client already wrote to: reloads drop no requests.
        line(out, format_args!("option idle-close-on-response"));
        keepalive(out, frontend);
    }
    for (index, rule) in frontend.rules.iter().enumerate() {
        line(
            out,
            format_args!("acl {} {}", acl_name(index, rule), acl_criterion(rule)),
        );
    }
    for (index, rule) in frontend.rules.iter().enumerate() {
        line(
            out,
            format_args!("use_backend {} if {}", rule.backend, acl_name(index, rule)),
        );
    }
    for native in &frontend.natives {
        line(out, format_args!("{native}"));
    }
}

/// `server-close` (and `default` with rules, as the original did) closes the server side after
/// each response; `close` closes both sides (`option httpclose`, HAProxy 2.x's forceclose).
/// `http-pretend-keepalive` is left out: HAProxy 2.6 ignores it in a frontend, with a warning.
fn keepalive(out: &mut String, frontend: &Frontend) {
    match frontend.keepalive {
        Keepalive::ServerClose => line(out, format_args!("option http-server-close")),
        Keepalive::Default if !frontend.rules.is_empty() => {
            line(out, format_args!("option http-server-close"))
        }
        Keepalive::Default => {}
        Keepalive::Close => line(out, format_args!("option httpclose")),
    }
}

/// Stable and unique within the frontend: the rule's position and type. The original used
/// random names, so every render differed and every change reloaded.
fn acl_name(index: usize, rule: &Rule) -> String {
    format!("rule{index}_{}", rule.kind.as_str())
}

fn acl_criterion(rule: &Rule) -> String {
    match (&rule.kind, &rule.header) {
        (RuleKind::Header, Some(header)) => {
            format!("{}({header}) {}", rule.operation, rule.value)
        }
        _ => format!("{} {}", rule.operation, rule.value),
    }
}
