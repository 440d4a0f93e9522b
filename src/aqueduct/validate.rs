//! Request bodies to model values. Every refusal is a 400 naming the field at fault with a
//! dotted path (`health.interval`, `rules[0].value`), so clients can fix their request. This is
//! also where config injection is stopped: nothing that reaches haproxy.cfg may carry a newline
//! or another control character, and names are limited to HAProxy's proxy-name characters.

use super::balance::Balance;
use super::model::{
    Backend, BackendType, Frontend, Health, HealthMethod, HttpVersion, Keepalive, Mode, Rule,
    RuleKind, StaticMember,
};
use crate::api_error::ApiError;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// Body fields that a GET returns but a PUT ignores, so a GET-then-PUT round trip works. The
/// path key always wins over a body `key`. Add read-only fields a GET grows here, nowhere else.
pub const READ_ONLY_FIELDS: &[&str] = &["key", "id", "_type", "waitingForBackend"];

/// Fields a GET adds to each member (live status); dropped from static members on PUT.
pub const MEMBER_READ_ONLY_FIELDS: &[&str] = &["status"];

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

/// The fields of one JSON object being validated: each is taken once, and whatever is left
/// at the end (other than read-only fields) is an unknown field.
struct Fields {
    prefix: String,
    object: Map<String, Value>,
    ignore: &'static [&'static str],
}

impl Fields {
    fn top_level(body: &Value) -> Result<Self, ApiError> {
        let object = match body {
            Value::Null => Map::new(),
            Value::Object(object) => object.clone(),
            _ => return Err(ApiError::bad_field("body", "body must be a JSON object")),
        };
        Ok(Fields {
            prefix: String::new(),
            object,
            ignore: READ_ONLY_FIELDS,
        })
    }

    fn nested(path: &str, value: &Value) -> Result<Self, ApiError> {
        let Value::Object(object) = value else {
            return Err(ApiError::bad_field(
                path,
                format!("{} must be an object", leaf(path)),
            ));
        };
        Ok(Fields {
            prefix: format!("{path}."),
            object: object.clone(),
            ignore: &[],
        })
    }

    fn field(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Removes a field, so that `finish` sees only what nobody asked for.
    fn take(&mut self, name: &str) -> Option<Value> {
        self.object.shift_remove(name)
    }

    fn required(&self, name: &str) -> ApiError {
        ApiError::bad_field(self.field(name), format!("{name} is required"))
    }

    fn one_of(&self, name: &str, allowed: &[&str]) -> ApiError {
        ApiError::bad_field(
            self.field(name),
            format!("{name} must be one of {}", allowed.join(", ")),
        )
    }

    /// An optional string without control characters; `null` counts as absent.
    fn string(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        let field = self.field(name);
        match self.take(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.chars().any(char::is_control) => Err(control_chars(&field)),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::bad_field(
                field,
                format!("{name} must be a string"),
            )),
        }
    }

    fn required_string(&mut self, name: &str) -> Result<String, ApiError> {
        self.string(name)?.ok_or_else(|| self.required(name))
    }

    /// A required frontend or backend name.
    fn required_name(&mut self, name: &str) -> Result<String, ApiError> {
        let value = self.required_string(name)?;
        key(&value).map_err(|err| {
            ApiError::bad_field(self.field(name), err.message.replace("key", name))
        })?;
        Ok(value)
    }

    /// A registry name or version: the same rules as the registry's path segments.
    fn registry_segment(&mut self, name: &'static str) -> Result<Option<String>, ApiError> {
        let Some(value) = self.string(name)? else {
            return Ok(None);
        };
        crate::registry::model::validate_segment(name, &value).map_err(|err| {
            ApiError::bad_field(self.field(name), format!("{name} {}", err.message))
        })?;
        Ok(Some(value))
    }

    fn mode(&mut self) -> Result<Mode, ApiError> {
        match self.string("mode")?.as_deref() {
            None | Some("http") => Ok(Mode::Http),
            Some("tcp") => Ok(Mode::Tcp),
            Some(_) => Err(self.one_of("mode", &["http", "tcp"])),
        }
    }

    fn array(&mut self, name: &str) -> Result<Vec<Value>, ApiError> {
        let field = self.field(name);
        match self.take(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items),
            Some(_) => Err(ApiError::bad_field(
                field,
                format!("{name} must be an array"),
            )),
        }
    }

    /// Raw config lines: strings, each a single line that does not open a new section.
    fn natives(&mut self) -> Result<Vec<String>, ApiError> {
        let items = self.array("natives")?;
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let field = format!("{}natives[{i}]", self.prefix);
                let Value::String(line) = item else {
                    return Err(ApiError::bad_field(field, "natives must be strings"));
                };
                if line.chars().any(char::is_control) {
                    return Err(ApiError::bad_field(
                        field,
                        "a native must be a single line without control characters",
                    ));
                }
                let first_word = line.split_whitespace().next().unwrap_or("");
                if SECTION_KEYWORDS.contains(&first_word) {
                    return Err(ApiError::bad_field(
                        field,
                        format!("a native must not open a new section ({first_word})"),
                    ));
                }
                Ok(line.clone())
            })
            .collect()
    }

    /// Refuses whatever field nobody took.
    fn finish(self) -> Result<(), ApiError> {
        match self
            .object
            .keys()
            .find(|k| !self.ignore.contains(&k.as_str()))
        {
            Some(unknown) => Err(ApiError::bad_field(
                self.field(unknown),
                format!("{unknown} is not allowed"),
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `Ok(row)` is the expected GET row; `Err((field, message fragment))` the expected 400.
    fn check_backend(body: Value, expected: Result<Value, (&str, &str)>) {
        match (backend("be", &body), expected) {
            (Ok(got), Ok(row)) => assert_eq!(got.to_row(&[]), row, "{body}"),
            (Err(err), Err((field, fragment))) => {
                assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST);
                assert_eq!(err.field.as_deref(), Some(field), "{body}: {err}");
                assert!(err.message.contains(fragment), "{body}: {err}");
            }
            (got, expected) => panic!("{body}: got {got:?}, expected {expected:?}"),
        }
    }

    fn check_frontend(body: Value, expected: Result<Value, (&str, &str)>) {
        match (frontend("fe", &body), expected) {
            (Ok(got), Ok(row)) => assert_eq!(got.to_row(false), row, "{body}"),
            (Err(err), Err((field, fragment))) => {
                assert_eq!(err.field.as_deref(), Some(field), "{body}: {err}");
                assert!(err.message.contains(fragment), "{body}: {err}");
            }
            (got, expected) => panic!("{body}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn walkthrough_frontends_get_defaults() {
        check_frontend(
            json!({"bind":"*:3306","backend":"mysql-backend","mode":"tcp"}),
            Ok(
                json!({"id":"frontend/fe","_type":"frontend","key":"fe","bind":"*:3306",
                "backend":"mysql-backend","mode":"tcp","keepalive":"default","rules":[],"natives":[]}),
            ),
        );
        check_frontend(
            json!({"bind":"*:80","backend":"webapp-backend"}),
            Ok(
                json!({"id":"frontend/fe","_type":"frontend","key":"fe","bind":"*:80",
                "backend":"webapp-backend","mode":"http","keepalive":"default","rules":[],"natives":[]}),
            ),
        );
    }

    #[test]
    fn walkthrough_backends_get_defaults() {
        check_backend(
            json!({"type":"dynamic","name":"mysql-backend","version":"1.0.0","balance":"source",
                "mode":"tcp","natives":["option mysql-check"]}),
            Ok(
                json!({"id":"backend/be","_type":"backend","key":"be","type":"dynamic",
                "name":"mysql-backend","version":"1.0.0","balance":"source","host":null,"mode":"tcp",
                "members":[],"natives":["option mysql-check"]}),
            ),
        );
        check_backend(
            json!({"type":"dynamic","name":"webapp-backend","version":"1.0.0","balance":"source",
                "mode":"http","health":{"interval":"5000"}}),
            Ok(
                json!({"id":"backend/be","_type":"backend","key":"be","type":"dynamic",
                "name":"webapp-backend","version":"1.0.0","balance":"source","host":null,"mode":"http",
                "members":[],"natives":[],
                "health":{"method":"GET","uri":"/","httpVersion":"HTTP/1.0","interval":5000}}),
            ),
        );
        check_backend(
            json!({"type":"static"}),
            Ok(
                json!({"id":"backend/be","_type":"backend","key":"be","type":"static",
                "balance":"roundrobin","host":null,"mode":"http","members":[],"natives":[]}),
            ),
        );
    }

    #[test]
    fn http11_health_needs_host_in_any_mode() {
        let msg = "host is required with health check with httpVersion=HTTP/1.1";
        check_backend(
            json!({"type":"dynamic","name":"a","version":"1","health":{"httpVersion":"HTTP/1.1"}}),
            Err(("host", msg)),
        );
        check_backend(
            json!({"type":"dynamic","mode":"tcp","health":{"httpVersion":"HTTP/1.1"}}),
            Err(("host", msg)),
        );
        check_backend(
            json!({"type":"dynamic","host":"","health":{"httpVersion":"HTTP/1.1"}}),
            Err(("host", msg)),
        );
        let ok = backend(
            "be",
            &json!({"type":"dynamic","host":"example.com","health":{"httpVersion":"HTTP/1.1"}}),
        )
        .unwrap();
        assert_eq!(ok.host.as_deref(), Some("example.com"));
        assert_eq!(ok.health.unwrap().http_version, HttpVersion::Http11);
    }

    #[test]
    fn tcp_backends_drop_health() {
        let be = backend(
            "be",
            &json!({"type":"static","mode":"tcp","health":{"interval":9}}),
        )
        .unwrap();
        assert_eq!(be.health, None);
        assert_eq!(be.check_interval_ms(), 2000);
    }

    #[test]
    fn checklist_27_refusals() {
        check_backend(json!({}), Err(("type", "type is required")));
        check_backend(json!(null), Err(("type", "type is required")));
        check_backend(json!({"type":"foo"}), Err(("type", "type must be one of")));
        check_backend(
            json!({"type":"static","mode":"udp"}),
            Err(("mode", "mode must be one of")),
        );
        check_backend(
            json!({"type":"static","health":{"method":"PUT"}}),
            Err(("health.method", "method must be one of GET, POST")),
        );
        check_backend(
            json!({"type":"static","health":{"interval":0}}),
            Err(("health.interval", "between 1 and")),
        );
        check_backend(
            json!({"type":"static","health":{"interval":"abc"}}),
            Err(("health.interval", "interval must be a number")),
        );
        check_backend(
            json!({"type":"static","health":{"interval":1.5}}),
            Err(("health.interval", "interval must be a number")),
        );
        check_backend(
            json!({"type":"static","health":{"httpVersion":"HTTP/2"}}),
            Err(("health.httpVersion", "must be one of")),
        );
        check_backend(
            json!({"type":"static","role":"x"}),
            Err(("role", "role is not allowed")),
        );
        check_backend(
            json!({"type":"static","health":{"id":"x"}}),
            Err(("health.id", "id is not allowed")),
        );
        check_backend(
            json!({"type":"static","health":"x"}),
            Err(("health", "must be an object")),
        );
        check_backend(json!([1]), Err(("body", "JSON object")));
        check_frontend(json!({"backend":"b"}), Err(("bind", "bind is required")));
        check_frontend(
            json!({"bind":"  ","backend":"b"}),
            Err(("bind", "must not be empty")),
        );
        check_frontend(
            json!({"bind":":80"}),
            Err(("backend", "backend is required")),
        );
        check_frontend(
            json!({"bind":":80","backend":"b","keepalive":"x"}),
            Err(("keepalive", "must be one of")),
        );
        check_frontend(
            json!({"bind":":80","backend":"b","mode":"udp"}),
            Err(("mode", "must be one of")),
        );
        check_frontend(
            json!({"bind":":80","backend":"b","extra":1}),
            Err(("extra", "extra is not allowed")),
        );
        check_frontend(
            json!({"bind":80,"backend":"b"}),
            Err(("bind", "bind must be a string")),
        );
    }

    #[test]
    fn round_trip_fields_are_ignored_and_the_path_key_wins() {
        let body = json!({"id":"frontend/other","_type":"frontend","key":"other",
            "waitingForBackend":true,"bind":":80","backend":"b"});
        let fe = frontend("fe", &body).unwrap();
        assert_eq!(fe.key, "fe");
        let row = fe.to_row(false);
        assert_eq!(frontend("fe", &row).unwrap(), fe);

        let be = backend(
            "be",
            &json!({"type":"static","health":{},"host":null,"members":[{"host":"10.10.10.10","port":"80","status":"UP"}]}),
        )
        .unwrap();
        let row = be.to_row(&[]);
        assert_eq!(row["members"], json!([{"host":"10.10.10.10","port":"80"}]));
        assert_eq!(backend("be", &row).unwrap(), be);
    }

    #[test]
    fn string_numbers_and_nulls() {
        let be = backend(
            "be",
            &json!({"type":"static","name":null,"health":{"interval":"5000"}}),
        )
        .unwrap();
        assert_eq!(be.check_interval_ms(), 5000);
        assert_eq!(be.name, None);
        check_backend(
            json!({"type":"static","health":{"interval":"5000ms"}}),
            Err(("health.interval", "must be a number")),
        );
    }

    #[test]
    fn static_members() {
        let be = backend(
            "be",
            &json!({"type":"static","members":[{"host":"10.10.10.10","port":"80"},{"host":"::1","port":8080}]}),
        )
        .unwrap();
        assert_eq!(be.static_members.len(), 2);
        assert_eq!(be.static_members[1].port, 8080);
        check_backend(
            json!({"type":"static","members":[{"host":"example.com","port":80}]}),
            Err(("members[0].host", "IPv4 or IPv6")),
        );
        check_backend(
            json!({"type":"static","members":[{"port":80}]}),
            Err(("members[0].host", "required")),
        );
        check_backend(
            json!({"type":"static","members":[{"host":"10.0.0.1","port":0}]}),
            Err(("members[0].port", "between 1 and 65535")),
        );
        check_backend(
            json!({"type":"static","members":[{"host":"10.0.0.1","port":"65536"}]}),
            Err(("members[0].port", "between 1 and 65535")),
        );
        check_backend(
            json!({"type":"static","members":[{"host":"10.0.0.1","port":1},{"host":"10.0.0.1","port":"1"}]}),
            Err(("members[1]", "listed twice")),
        );
        check_backend(
            json!({"type":"static","members":["x"]}),
            Err(("members[0]", "must be an object")),
        );
        check_backend(
            json!({"type":"static","members":[{"host":"10.0.0.1","port":1,"note":"a\nb"}]}),
            Err(("members[0].note", "control characters")),
        );
        // A dynamic backend ignores members sent in the body (they come from the registry).
        let dynamic = backend("be", &json!({"type":"dynamic","members":[{"anything":1}]})).unwrap();
        assert!(dynamic.static_members.is_empty());
    }

    #[test]
    fn rules() {
        let fe = frontend(
            "fe",
            &json!({"bind":":80","backend":"b","rules":[
                {"type":"path","operation":"path_beg","value":"/api","backend":"api"},
                {"type":"header","header":"host","operation":"hdr_dom","value":"example.com","backend":"web"}]}),
        )
        .unwrap();
        assert_eq!(
            fe.to_row(false)["rules"],
            json!([{"type":"path","operation":"path_beg","value":"/api","backend":"api"},
                {"type":"header","header":"host","operation":"hdr_dom","value":"example.com","backend":"web"}])
        );
        let rule = |r: Value| json!({"bind":":80","backend":"b","rules":[r]});
        check_frontend(
            rule(json!({"operation":"path","value":"/","backend":"x"})),
            Err(("rules[0].type", "required")),
        );
        check_frontend(
            rule(json!({"type":"cookie","operation":"path","value":"/","backend":"x"})),
            Err(("rules[0].type", "must be one of")),
        );
        check_frontend(
            rule(json!({"type":"path","operation":"hdr_dom","value":"/","backend":"x"})),
            Err(("rules[0].operation", "must be one of")),
        );
        check_frontend(
            rule(json!({"type":"path","operation":"path","value":"","backend":"x"})),
            Err(("rules[0].value", "must not be empty")),
        );
        check_frontend(
            rule(json!({"type":"path","operation":"path","value":"/"})),
            Err(("rules[0].backend", "required")),
        );
        check_frontend(
            rule(json!({"type":"path","operation":"path","value":"/","backend":"x y"})),
            Err(("rules[0].backend", "backend may only contain")),
        );
        check_frontend(
            rule(json!({"type":"header","operation":"hdr","value":"/","backend":"x"})),
            Err(("rules[0].header", "required")),
        );
        check_frontend(
            rule(
                json!({"type":"header","header":"a b","operation":"hdr","value":"/","backend":"x"}),
            ),
            Err(("rules[0].header", "header name")),
        );
        check_frontend(
            rule(json!({"type":"path","header":"h","operation":"path","value":"/","backend":"x"})),
            Err(("rules[0].header", "only allowed")),
        );
        check_frontend(
            rule(json!({"type":"path","operation":"path","value":"/","backend":"x","weight":1})),
            Err(("rules[0].weight", "not allowed")),
        );
        check_frontend(rule(json!("x")), Err(("rules[0]", "must be an object")));
        check_frontend(
            json!({"bind":":80","backend":"b","mode":"tcp","rules":[{"type":"path","operation":"path","value":"/","backend":"x"}]}),
            Err(("rules", "need mode http")),
        );
    }

    #[test]
    fn keys_are_proxy_names() {
        assert!(key("mysql-backend_1.0:a").is_ok());
        for bad in ["", "a b", "a\nb", "a/b", "a#b", "é", &"k".repeat(129)] {
            assert_eq!(
                key(bad).unwrap_err().field.as_deref(),
                Some("key"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn newlines_are_refused_in_every_string_field() {
        let frontend_base = json!({"bind":":80","backend":"b","mode":"http","keepalive":"default",
            "natives":["option forwardfor"],
            "rules":[{"type":"header","header":"host","operation":"hdr_dom","value":"v","backend":"r"}]});
        for field in [
            "bind",
            "backend",
            "mode",
            "keepalive",
            "natives[0]",
            "rules[0].type",
            "rules[0].header",
            "rules[0].operation",
            "rules[0].value",
            "rules[0].backend",
        ] {
            for smuggled in ["\n", "\r", "\u{0}", "\t", "\u{85}"] {
                let body = poison(&frontend_base, field, smuggled);
                let err = frontend("fe", &body).unwrap_err();
                assert_eq!(err.field.as_deref(), Some(field), "{body}");
            }
        }
        let backend_base = json!({"type":"static","name":"n","version":"1","balance":"roundrobin",
            "host":"h","mode":"http","natives":["option forwardfor"],
            "members":[{"host":"10.0.0.1","port":"80"}],
            "health":{"method":"GET","uri":"/","httpVersion":"HTTP/1.0","interval":"5"}});
        for field in [
            "type",
            "name",
            "version",
            "balance",
            "host",
            "mode",
            "natives[0]",
            "members[0].host",
            "members[0].port",
            "health.method",
            "health.uri",
            "health.httpVersion",
            "health.interval",
        ] {
            let body = poison(&backend_base, field, "\nbackend evil");
            let err = backend("be", &body).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(field), "{body}");
        }
        let err = version_switch(&json!({"version":"1\n"})).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("version"));
    }

    /// Appends `suffix` to the string at a dotted path such as `rules[0].value`.
    fn poison(base: &Value, path: &str, suffix: &str) -> Value {
        let mut body = base.clone();
        let mut target = &mut body;
        for part in path.split('.') {
            let (name, index) = match part.split_once('[') {
                Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
                None => (part, None),
            };
            target = &mut target[name];
            if let Some(i) = index {
                target = &mut target[i];
            }
        }
        let text = target.as_str().unwrap().to_owned();
        *target = Value::String(format!("{text}{suffix}"));
        body
    }

    #[test]
    fn natives_are_single_lines_that_open_no_section() {
        let fe =
            |natives: Value| frontend("fe", &json!({"bind":":80","backend":"b","natives":natives}));
        assert_eq!(
            fe(json!(["http-request set-header X-Foo \"bar\" # & < >"]))
                .unwrap()
                .natives,
            vec!["http-request set-header X-Foo \"bar\" # & < >"]
        );
        assert_eq!(
            fe(json!(["  backend evil"])).unwrap_err().field.as_deref(),
            Some("natives[0]")
        );
        assert_eq!(
            fe(json!(["ok", "listen x"])).unwrap_err().field.as_deref(),
            Some("natives[1]")
        );
        assert_eq!(
            fe(json!([1])).unwrap_err().field.as_deref(),
            Some("natives[0]")
        );
        assert_eq!(
            fe(json!("x")).unwrap_err().field.as_deref(),
            Some("natives")
        );
    }

    #[test]
    fn balance_and_host() {
        check_backend(
            json!({"type":"static","balance":"fastest"}),
            Err(("balance", "not one of")),
        );
        check_backend(
            json!({"type":"static","balance":"uri","mode":"tcp"}),
            Err(("balance", "needs mode http")),
        );
        check_backend(
            json!({"type":"static","host":"a b"}),
            Err(("host", "host name")),
        );
        check_backend(
            json!({"type":"static","host":"a\"b"}),
            Err(("host", "host name")),
        );
        check_backend(
            json!({"type":"static","health":{"uri":"/a b"}}),
            Err(("health.uri", "uri must be")),
        );
        check_backend(
            json!({"type":"static","health":{"uri":"/#x"}}),
            Err(("health.uri", "uri must be")),
        );
        check_backend(
            json!({"type":"dynamic","name":"a/b"}),
            Err(("name", "name must not contain '/'")),
        );
    }

    #[test]
    fn version_switches() {
        assert_eq!(
            version_switch(&json!({"version":"2.0.0","key":"ignored"})).unwrap(),
            VersionSwitch {
                name: None,
                version: "2.0.0".into()
            }
        );
        assert_eq!(
            version_switch(&json!({"name":"other","version":"1.0.0"}))
                .unwrap()
                .name
                .as_deref(),
            Some("other")
        );
        assert_eq!(
            version_switch(&json!({})).unwrap_err().field.as_deref(),
            Some("version")
        );
        assert_eq!(
            version_switch(&json!({"version":"1","x":1}))
                .unwrap_err()
                .field
                .as_deref(),
            Some("x")
        );
    }

    fn arbitrary_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            "[ -~\n\t\u{0}é]{0,12}".prop_map(Value::from),
            prop_oneof![
                Just("dynamic"),
                Just("static"),
                Just("http"),
                Just("tcp"),
                Just("HTTP/1.1"),
                Just("5000"),
                Just("10.0.0.1"),
                Just("source"),
                Just("path"),
                Just("header"),
                Just("hdr_dom"),
                Just("path_beg")
            ]
            .prop_map(Value::from),
        ];
        let names = prop_oneof![
            Just("type"),
            Just("bind"),
            Just("backend"),
            Just("mode"),
            Just("keepalive"),
            Just("rules"),
            Just("natives"),
            Just("name"),
            Just("version"),
            Just("balance"),
            Just("host"),
            Just("members"),
            Just("health"),
            Just("method"),
            Just("uri"),
            Just("httpVersion"),
            Just("interval"),
            Just("port"),
            Just("operation"),
            Just("value"),
            Just("header"),
            Just("key"),
            Just("id"),
            Just("zz")
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec((names.clone(), inner), 0..7).prop_map(|pairs| {
                    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                }),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(body in arbitrary_json()) {
            // Whatever the outcome, an accepted value renders without control characters.
            if let Ok(fe) = frontend("fe", &body) {
                let row = fe.to_row(false).to_string();
                proptest::prop_assert!(!row.contains('\n'));
            }
            if let Ok(be) = backend("be", &body) {
                proptest::prop_assert!(be.natives.iter().all(|n| !n.contains('\n')));
            }
            let _ = version_switch(&body);
        }
    }
}
