//! One row of the original's file to an [`Item`]: the row as the PUT body it stands for (its
//! API bookkeeping dropped, numbers the original kept as strings made numbers, data whose
//! source is the registry dropped), the validation a PUT passes, and a note for each setting
//! the original rendered with an HAProxy 1.4-era line that HAProxy 2.x refuses or deprecates,
//! saying what `haproxy::render` writes instead.
//!
//! `id`, `_type` and `host: null` are dropped without a note: they carry nothing (the API
//! derives the first two from the key, and `null` is how the original wrote "no host").

use super::{Item, ItemKind, ItemState};
use crate::aqueduct::validate;
use crate::config::{Backend, Frontend, HttpVersion, Keepalive, Mode};
use serde_json::{Map, Value};

/// The rule types the original rendered; it skipped every other one silently.
const RENDERED_RULE_TYPES: &[&str] = &["path", "url", "header"];

pub(super) fn item(kind: ItemKind, position: &str, row: &Value) -> Item {
    let Value::Object(row) = row else {
        return Item::refused(
            kind,
            position.to_owned(),
            format!("{position} is not an object"),
        );
    };
    let Some(key) = row.get("key").and_then(Value::as_str) else {
        return Item::refused(
            kind,
            position.to_owned(),
            format!("{position} has no string \"key\""),
        );
    };
    let mut body = row.clone();
    for bookkeeping in ["id", "_type", "key"] {
        body.shift_remove(bookkeeping);
    }
    let mut conversions = Vec::new();
    let state = match kind {
        ItemKind::Frontend => frontend(key, body, &mut conversions),
        ItemKind::Backend => backend(key, body, &mut conversions),
    };
    if matches!(state, ItemState::Refused(_)) {
        conversions.clear();
    }
    Item {
        kind,
        key: key.to_owned(),
        conversions,
        remarks: Vec::new(),
        state,
    }
}

fn frontend(key: &str, mut body: Map<String, Value>, notes: &mut Vec<String>) -> ItemState {
    if let Some(Value::Array(rules)) = body.get_mut("rules") {
        let mut index = 0;
        rules.retain(|rule| {
            let kind = rule.get("type").and_then(Value::as_str);
            let keep = kind.is_none_or(|kind| RENDERED_RULE_TYPES.contains(&kind));
            if !keep {
                notes.push(format!(
                    "rules[{index}] (type {:?}) dropped: the original rendered only path, url \
                     and header rules and skipped it",
                    kind.unwrap_or_default()
                ));
            }
            index += 1;
            keep
        });
    }
    let frontend = match validate::frontend(key, &Value::Object(body)) {
        Ok(frontend) => frontend,
        Err(err) => return ItemState::Refused(err.to_string()),
    };
    notes.extend(keepalive_note(&frontend));
    ItemState::Frontend(frontend)
}

/// The original's keep-alive lines and what replaces them (see `haproxy::render`).
fn keepalive_note(frontend: &Frontend) -> Option<String> {
    if frontend.mode != Mode::Http {
        return None;
    }
    let pretend = "without \"option http-pretend-keepalive\", which HAProxy 2.x ignores in a \
                   frontend";
    match frontend.keepalive {
        Keepalive::Close => Some(
            "keepalive \"close\": the original rendered \"option forceclose\", removed in \
             HAProxy 2.0; rendered as \"option httpclose\", its HAProxy 2.x equivalent"
                .to_owned(),
        ),
        Keepalive::ServerClose => Some(format!(
            "keepalive \"server-close\": rendered as \"option http-server-close\" {pretend}"
        )),
        Keepalive::Default if !frontend.rules.is_empty() => Some(format!(
            "keepalive \"default\" with rules: rendered as \"option http-server-close\" \
             {pretend}"
        )),
        Keepalive::Default => None,
    }
}

fn backend(key: &str, mut body: Map<String, Value>, notes: &mut Vec<String>) -> ItemState {
    if body.get("host") == Some(&Value::Null) {
        body.shift_remove("host");
    }
    let dynamic = body.get("type").and_then(Value::as_str) == Some("dynamic");
    if dynamic {
        if let Some(Value::Array(members)) = body.get("members") {
            if !members.is_empty() {
                notes.push(format!(
                    "members: {} stored registration(s) dropped: the registry is the source \
                     of a dynamic backend's members, which join again as they register",
                    members.len()
                ));
            }
            body.shift_remove("members");
        }
    } else if let Some(Value::Array(members)) = body.get_mut("members") {
        for (index, member) in members.iter_mut().enumerate() {
            if let Some(port) = member.get_mut("port")
                && let Some(number) = numeric_string(port)
            {
                notes.push(format!(
                    "members[{index}].port {port} stored as the number {number}"
                ));
                *port = Value::from(number);
            }
        }
    }
    let had_health = matches!(body.get("health"), Some(Value::Object(_)));
    if let Some(interval) = body.get_mut("health").and_then(|h| h.get_mut("interval"))
        && let Some(number) = numeric_string(interval)
    {
        notes.push(format!(
            "health.interval {interval} stored as the number {number}"
        ));
        *interval = Value::from(number);
    }
    let backend = match validate::backend(key, &Value::Object(body)) {
        Ok(backend) => backend,
        Err(err) if is_member_host(err.field.as_deref()) && err.message.contains("address") => {
            return ItemState::Refused(format!(
                "{err} (the original let HAProxy resolve a static member's name when it \
                 loaded the config; here a static member is an address: give its address, or \
                 make the backend dynamic and register the service, by name if need be)"
            ));
        }
        Err(err) => return ItemState::Refused(err.to_string()),
    };
    if had_health && backend.health.is_none() {
        notes.push(format!(
            "health dropped: a {} backend is checked at layer 4 (the original dropped it too)",
            backend.mode.as_str()
        ));
    }
    notes.extend(rendering_notes(&backend));
    ItemState::Backend(backend)
}

/// The original's Host rewrite and HTTP/1.1 check lines, and what replaces them.
fn rendering_notes(backend: &Backend) -> Vec<String> {
    let mut notes = Vec::new();
    let Some(host) = &backend.host else {
        return notes;
    };
    if backend.mode != Mode::Http {
        notes.push(format!(
            "host {host:?} is kept but not rendered: a tcp backend does not rewrite the Host \
             header (the original's reqirep line had nothing to rewrite there)"
        ));
        return notes;
    }
    notes.push(format!(
        "host {host:?}: the original rendered \"reqirep ^Host:\\ .*  Host:\\ {host}\", removed \
         in HAProxy 2.1; rendered as \"http-request set-header Host {host}\""
    ));
    if let Some(health) = backend
        .health
        .as_ref()
        .filter(|h| h.http_version == HttpVersion::Http11)
    {
        notes.push(format!(
            "health HTTP/1.1: the original's \"option httpchk {method} {uri} \
             HTTP/1.1\\r\\nHost:\\ {host}\" is deprecated in HAProxy 2.x; rendered as \
             \"http-check send meth {method} uri {uri} ver HTTP/1.1 hdr Host {host}\"",
            method = health.method.as_str(),
            uri = health.uri,
        ));
    }
    notes
}

/// `members[<i>].host`.
fn is_member_host(field: Option<&str>) -> bool {
    field.is_some_and(|field| field.starts_with("members[") && field.ends_with("].host"))
}

/// A string of decimal digits as its number (the original accepted `"5000"` and kept it).
fn numeric_string(value: &Value) -> Option<u64> {
    match value {
        Value::String(text)
            if !text.is_empty() && text.len() <= 10 && text.bytes().all(|b| b.is_ascii_digit()) =>
        {
            text.parse().ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
