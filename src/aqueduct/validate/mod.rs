//! Request bodies to model values. Every refusal is a 400 naming the field at fault with a
//! dotted path (`health.interval`, `rules[0].value`), so clients can fix their request. This is
//! also where config injection is stopped: nothing that reaches haproxy.cfg may carry a newline
//! or another control character, and names are limited to HAProxy's proxy-name characters.

use crate::api_error::ApiError;
use crate::config::balance::Balance;
use crate::config::{
    Backend, BackendType, Frontend, Health, HealthMethod, HttpVersion, Keepalive, Mode, Rule,
    RuleKind, StaticMember,
};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::net::IpAddr;

mod fields;
mod rollout;
#[cfg(test)]
mod tests;

pub use rollout::{RolloutRequest, rollout_request, stored_backend};

use fields::Fields;

/// Body fields that a GET returns but a PUT ignores, so a GET-then-PUT round trip works. The
/// path key always wins over a body `key`. Add read-only fields a GET grows here, nowhere else.
pub const READ_ONLY_FIELDS: &[&str] = &["key", "id", "_type", "waitingForBackend", "rollout"];

/// Fields a GET adds to each member (live status); dropped from static members on PUT.
pub const MEMBER_READ_ONLY_FIELDS: &[&str] = &[
    "status",
    "check_status",
    "check_duration_ms",
    "last_change",
    "sessions",
    "server",
];

/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 128;

/// Longest health-check interval, in milliseconds (one day).
pub const MAX_INTERVAL_MS: u64 = 86_400_000;

/// Words that open a new section in haproxy.cfg: a native line starting with one of them
/// would move every following line of the section into a section of the client's choosing.
const SECTION_KEYWORDS: &[&str] = &[
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "userlist",
    "peers",
    "resolvers",
    "mailers",
    "program",
    "http-errors",
    "ring",
    "cache",
    "fcgi-app",
    "log-forward",
];

const PATH_OPERATIONS: &[&str] = &[
    "path", "path_beg", "path_dir", "path_dom", "path_end", "path_len", "path_reg", "path_sub",
    "url", "url_beg", "url_dir", "url_dom", "url_end", "url_len", "url_reg", "url_sub",
];

const HEADER_OPERATIONS: &[&str] = &[
    "hdr", "hdr_beg", "hdr_dir", "hdr_dom", "hdr_end", "hdr_len", "hdr_reg", "hdr_sub",
];

/// Validates a frontend or backend key (from the path): HAProxy proxy-name characters only.
pub fn key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(ApiError::bad_field(
            "key",
            format!("key must be 1 to {MAX_KEY_BYTES} characters"),
        ));
    }
    if !key.chars().all(is_name_char) {
        return Err(ApiError::bad_field(
            "key",
            "key may only contain letters, digits and _ . : -",
        ));
    }
    Ok(())
}

/// `PUT /frontends/{key}`.
pub fn frontend(path_key: &str, body: &Value) -> Result<Frontend, ApiError> {
    key(path_key)?;
    let mut fields = Fields::top_level(body)?;
    let bind = fields.required_string("bind")?;
    if bind.trim().is_empty() {
        return Err(ApiError::bad_field("bind", "bind must not be empty"));
    }
    let backend = fields.required_name("backend")?;
    let mode = fields.mode()?;
    let keepalive = match fields.string("keepalive")?.as_deref() {
        None | Some("default") => Keepalive::Default,
        Some("close") => Keepalive::Close,
        Some("server-close") => Keepalive::ServerClose,
        Some(_) => return Err(fields.one_of("keepalive", &["default", "close", "server-close"])),
    };
    let rules = fields.array("rules")?;
    let rules = rules
        .iter()
        .enumerate()
        .map(|(i, rule)| parse_rule(&format!("rules[{i}]"), rule))
        .collect::<Result<Vec<_>, _>>()?;
    if mode == Mode::Tcp && !rules.is_empty() {
        return Err(ApiError::bad_field(
            "rules",
            "rules match HTTP requests and need mode http",
        ));
    }
    let natives = fields.natives()?;
    fields.finish()?;
    Ok(Frontend {
        key: path_key.to_owned(),
        bind,
        backend,
        mode,
        keepalive,
        rules,
        natives,
    })
}

/// `PUT /backends/{key}`.
pub fn backend(path_key: &str, body: &Value) -> Result<Backend, ApiError> {
    key(path_key)?;
    let mut fields = Fields::top_level(body)?;
    let kind = match fields.string("type")?.as_deref() {
        None => return Err(ApiError::bad_field("type", "type is required")),
        Some("dynamic") => BackendType::Dynamic,
        Some("static") => BackendType::Static,
        Some(_) => return Err(fields.one_of("type", &["dynamic", "static"])),
    };
    let name = fields.registry_segment("name")?;
    let version = fields.registry_segment("version")?;
    let mode = fields.mode()?;
    let balance = match fields.string("balance")? {
        None => Balance::default(),
        Some(text) => Balance::parse(&text).map_err(|msg| ApiError::bad_field("balance", msg))?,
    };
    if balance.needs_http_mode() && mode != Mode::Http {
        return Err(ApiError::bad_field(
            "balance",
            format!("balance {} needs mode http", balance.as_str()),
        ));
    }
    let host = match fields.string("host")? {
        None => None,
        Some(host) if host.is_empty() => None,
        Some(host) => {
            if host.len() > 253 || !host.chars().all(is_host_char) {
                return Err(ApiError::bad_field(
                    "host",
                    "host must be a host name or address (letters, digits and . - : [ ])",
                ));
            }
            Some(host)
        }
    };
    let members = fields.array("members")?;
    let static_members = match kind {
        // A dynamic backend's members come from the registry; the ones in the body (a GET
        // round trip) are ignored.
        BackendType::Dynamic => Vec::new(),
        BackendType::Static => parse_static_members(&members)?,
    };
    let natives = fields.natives()?;
    let health = match fields.take("health") {
        None | Some(Value::Null) => None,
        Some(value) => Some(parse_health(&value)?),
    };
    let sticky_cookie = match fields.string("stickyCookie")? {
        None => None,
        Some(name) if name.is_empty() => None,
        Some(_) if mode != Mode::Http => {
            return Err(ApiError::bad_field(
                "stickyCookie",
                "stickyCookie needs mode http (a TCP backend has no cookies)",
            ));
        }
        Some(name) => {
            if name.len() > 64
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(ApiError::bad_field(
                    "stickyCookie",
                    "stickyCookie must be a cookie name of at most 64 letters, digits, _ and -",
                ));
            }
            Some(name)
        }
    };
    fields.finish()?;
    // Checked whatever the mode, as the original did (checklist 26).
    if health
        .as_ref()
        .is_some_and(|h| h.http_version == HttpVersion::Http11)
        && host.is_none()
    {
        return Err(ApiError::bad_field(
            "host",
            "host is required with health check with httpVersion=HTTP/1.1",
        ));
    }
    Ok(Backend {
        key: path_key.to_owned(),
        kind,
        name,
        version,
        balance,
        host,
        mode,
        static_members,
        natives,
        // A TCP backend checks at layer 4 (or through its natives); an HTTP check is dropped.
        health: if mode == Mode::Http { health } else { None },
        sticky_cookie,
        // Rollouts are started through their own endpoint; a PUT keeps the one in progress
        // (see the controller) and a stored one is read by `stored_backend`.
        rollout: None,
    })
}

/// The body of `POST /backends/{key}`: switch a dynamic backend to another version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionSwitch {
    pub name: Option<String>,
    pub version: String,
}

pub fn version_switch(body: &Value) -> Result<VersionSwitch, ApiError> {
    let mut fields = Fields::top_level(body)?;
    let version = fields
        .registry_segment("version")?
        .ok_or_else(|| ApiError::bad_field("version", "version is required"))?;
    let name = fields.registry_segment("name")?;
    fields.finish()?;
    Ok(VersionSwitch { name, version })
}

fn parse_rule(path: &str, value: &Value) -> Result<Rule, ApiError> {
    let mut fields = Fields::nested(path, value)?;
    let kind = match fields.string("type")?.as_deref() {
        None => return Err(fields.required("type")),
        Some("path") => RuleKind::Path,
        Some("url") => RuleKind::Url,
        Some("header") => RuleKind::Header,
        Some(_) => return Err(fields.one_of("type", &["path", "url", "header"])),
    };
    let header = match (kind, fields.string("header")?) {
        (RuleKind::Header, None) => return Err(fields.required("header")),
        (RuleKind::Header, Some(header)) => {
            if header.is_empty() || !header.chars().all(is_token_char) {
                return Err(ApiError::bad_field(
                    fields.field("header"),
                    "header must be a header name (letters, digits, - and _)",
                ));
            }
            Some(header)
        }
        (_, None) => None,
        (_, Some(_)) => {
            return Err(ApiError::bad_field(
                fields.field("header"),
                "header is only allowed in header rules",
            ));
        }
    };
    let operations = match kind {
        RuleKind::Path | RuleKind::Url => PATH_OPERATIONS,
        RuleKind::Header => HEADER_OPERATIONS,
    };
    let operation = match fields.string("operation")? {
        None => return Err(fields.required("operation")),
        Some(op) if operations.contains(&op.as_str()) => op,
        Some(_) => return Err(fields.one_of("operation", operations)),
    };
    let value = match fields.string("value")? {
        None => return Err(fields.required("value")),
        Some(v) if v.trim().is_empty() => {
            return Err(ApiError::bad_field(
                fields.field("value"),
                "value must not be empty",
            ));
        }
        Some(v) => v,
    };
    let backend = fields.required_name("backend")?;
    fields.finish()?;
    Ok(Rule {
        kind,
        header,
        operation,
        value,
        backend,
    })
}

fn parse_health(value: &Value) -> Result<Health, ApiError> {
    let mut fields = Fields::nested("health", value)?;
    let defaults = Health::default();
    let method = match fields.string("method")?.as_deref() {
        None | Some("GET") => HealthMethod::Get,
        Some("POST") => HealthMethod::Post,
        Some(_) => return Err(fields.one_of("method", &["GET", "POST"])),
    };
    let uri = match fields.string("uri")? {
        None => defaults.uri,
        Some(uri) => {
            if uri.is_empty() || !uri.chars().all(is_uri_char) {
                return Err(ApiError::bad_field(
                    "health.uri",
                    "uri must be non-empty printable ASCII without spaces, quotes, \\ or #",
                ));
            }
            uri
        }
    };
    let http_version = match fields.string("httpVersion")?.as_deref() {
        None | Some("HTTP/1.0") => HttpVersion::Http10,
        Some("HTTP/1.1") => HttpVersion::Http11,
        Some(_) => return Err(fields.one_of("httpVersion", &["HTTP/1.0", "HTTP/1.1"])),
    };
    let interval_ms = match fields.take("interval") {
        None | Some(Value::Null) => defaults.interval_ms,
        Some(value) => match number(&value) {
            Some(n) if (1..=MAX_INTERVAL_MS).contains(&n) => n as u32,
            Some(_) => {
                return Err(ApiError::bad_field(
                    "health.interval",
                    format!("interval must be between 1 and {MAX_INTERVAL_MS} milliseconds"),
                ));
            }
            None => {
                return Err(ApiError::bad_field(
                    "health.interval",
                    "interval must be a number",
                ));
            }
        },
    };
    fields.finish()?;
    Ok(Health {
        method,
        uri,
        http_version,
        interval_ms,
    })
}

fn parse_static_members(members: &[Value]) -> Result<Vec<StaticMember>, ApiError> {
    let mut seen = BTreeSet::new();
    let mut parsed = Vec::with_capacity(members.len());
    for (i, member) in members.iter().enumerate() {
        let path = format!("members[{i}]");
        let Value::Object(object) = member else {
            return Err(ApiError::bad_field(path, "member must be an object"));
        };
        let host = match object.get("host") {
            Some(Value::String(host)) => host.parse::<IpAddr>().map_err(|_| {
                ApiError::bad_field(
                    format!("{path}.host"),
                    "host must be an IPv4 or IPv6 address",
                )
            })?,
            Some(_) => {
                return Err(ApiError::bad_field(
                    format!("{path}.host"),
                    "host must be a string",
                ));
            }
            None => {
                return Err(ApiError::bad_field(
                    format!("{path}.host"),
                    "host is required",
                ));
            }
        };
        let port = match object.get("port").and_then(number) {
            Some(port @ 1..=65535) => port as u16,
            _ => {
                return Err(ApiError::bad_field(
                    format!("{path}.port"),
                    "port must be a number between 1 and 65535",
                ));
            }
        };
        if !seen.insert((host, port)) {
            return Err(ApiError::bad_field(
                path,
                format!("member {host}:{port} is listed twice"),
            ));
        }
        let mut as_sent = Map::new();
        for (name, value) in object {
            if MEMBER_READ_ONLY_FIELDS.contains(&name.as_str()) {
                continue;
            }
            check_no_control_chars(&format!("{path}.{name}"), value)?;
            as_sent.insert(name.clone(), value.clone());
        }
        parsed.push(StaticMember {
            host,
            port,
            as_sent,
        });
    }
    Ok(parsed)
}

/// A JSON number, or a string of decimal digits (the original accepted `"5000"`).
fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u32::MAX as f64)
                .map(|f| f as u64)
        }),
        Value::String(s)
            if !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit()) =>
        {
            s.parse().ok()
        }
        _ => None,
    }
}

/// Recursively refuses control characters in any string (keys included) of a stored value.
fn check_no_control_chars(path: &str, value: &Value) -> Result<(), ApiError> {
    match value {
        Value::String(s) if s.chars().any(char::is_control) => Err(control_chars(path)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| check_no_control_chars(&format!("{path}[{i}]"), item)),
        Value::Object(object) => object.iter().try_for_each(|(name, item)| {
            let path = format!("{path}.{name}");
            if name.chars().any(char::is_control) {
                return Err(control_chars(&path));
            }
            check_no_control_chars(&path, item)
        }),
        _ => Ok(()),
    }
}

fn control_chars(path: &str) -> ApiError {
    ApiError::bad_field(
        path,
        format!(
            "{} must not contain newlines or other control characters",
            leaf(path)
        ),
    )
}

/// The last segment of a dotted path, for Joi-style messages (`interval must be a number`).
fn leaf(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_.:-".contains(c)
}

fn is_host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || ".-:[]_".contains(c)
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_".contains(c)
}

fn is_uri_char(c: char) -> bool {
    c.is_ascii_graphic() && !"\"'\\#".contains(c)
}
