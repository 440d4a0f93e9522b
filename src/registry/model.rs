//! The Registration: what a service announces (`name/version/host/port` plus free-form `meta`),
//! with the original Thalassa's JSON shape and key order.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One service instance, exactly as the original serialised it:
/// keys `name, version, host, port, lastKnown, meta, id` in that order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    pub name: String,
    pub version: String,
    pub host: String,
    pub port: u16,
    /// Epoch milliseconds of the most recent POST (server clock).
    #[serde(rename = "lastKnown")]
    pub last_known: u64,
    /// The POST body, stored verbatim; `hostname` defaults to `host`.
    pub meta: Map<String, Value>,
    /// `/<name>/<version>/<host>/<port>`.
    pub id: String,
    /// Set by the aqueduct only, for a `host` that is a DNS name: the address it resolved to
    /// (what HAProxy's server uses). Never stored or sent by the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Box<str>>,
    /// Set by the aqueduct only: why a `host` that is a DNS name has no address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unresolved: Option<Box<str>>,
}

impl Registration {
    /// Builds a registration the way the original did: `meta.hostname` falls back to the host
    /// when it is missing or falsy.
    pub fn new(key: RegistrationKey, last_known: u64, mut meta: Map<String, Value>) -> Self {
        default_hostname(&mut meta, &key.host);
        let id = key.id();
        Registration {
            name: key.name,
            version: key.version,
            host: key.host,
            port: key.port,
            last_known,
            meta,
            id,
            address: None,
            unresolved: None,
        }
    }

    /// The IP address HAProxy's server uses: `host` itself, or what the aqueduct resolved a
    /// DNS name to; `None` for a name not (yet) resolved.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.address.as_deref().unwrap_or(&self.host).parse().ok()
    }

    pub fn key(&self) -> RegistrationKey {
        RegistrationKey {
            name: self.name.clone(),
            version: self.version.clone(),
            host: self.host.clone(),
            port: self.port,
        }
    }
}

/// Sets `meta.hostname` to `host` when it is missing or falsy (JavaScript's notion), as the
/// original did.
pub fn default_hostname(meta: &mut Map<String, Value>, host: &str) {
    let hostname_missing = match meta.get("hostname") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(_) => false,
    };
    if hostname_missing {
        meta.insert("hostname".to_owned(), Value::String(host.to_owned()));
    }
}

/// The identity of a registration, validated from the four path segments.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistrationKey {
    pub name: String,
    pub version: String,
    pub host: String,
    pub port: u16,
}

/// Why a path segment was refused; `field` is one of `name`, `version`, `host`, `port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidSegment {
    pub field: &'static str,
    pub message: String,
}

/// Longest accepted name, version or host, in bytes (a DNS name's limit).
pub const MAX_SEGMENT_BYTES: usize = 253;

impl RegistrationKey {
    /// Validates the four path segments. The port is parsed base 10, so `03306` is `3306`
    /// (as the original's `parseInt`), but trailing garbage such as `80abc` is refused.
    pub fn parse(
        name: &str,
        version: &str,
        host: &str,
        port: &str,
    ) -> Result<Self, InvalidSegment> {
        validate_segment("name", name)?;
        validate_segment("version", version)?;
        validate_segment("host", host)?;
        Ok(RegistrationKey {
            name: name.to_owned(),
            version: version.to_owned(),
            host: host.to_owned(),
            port: parse_port(port)?,
        })
    }

    /// `/<name>/<version>/<host>/<port>`.
    pub fn id(&self) -> String {
        format!(
            "/{}/{}/{}/{}",
            self.name, self.version, self.host, self.port
        )
    }

    /// Parses an id produced by [`RegistrationKey::id`].
    pub fn from_id(id: &str) -> Option<Self> {
        let rest = id.strip_prefix('/')?;
        let mut parts = rest.split('/');
        let (name, version, host, port) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        Self::parse(name, version, host, port).ok()
    }
}

/// A name, version or host: non-empty, at most 253 bytes, no `/`, whitespace or control
/// characters (they would break ids, haproxy server names and log lines).
pub fn validate_segment(field: &'static str, value: &str) -> Result<(), InvalidSegment> {
    let fail = |message: &str| {
        Err(InvalidSegment {
            field,
            message: message.to_owned(),
        })
    };
    if value.is_empty() {
        return fail("must not be empty");
    }
    if value.len() > MAX_SEGMENT_BYTES {
        return fail("must be at most 253 bytes");
    }
    if value.contains('/') {
        return fail("must not contain '/'");
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return fail("must not contain whitespace or control characters");
    }
    Ok(())
}

fn parse_port(port: &str) -> Result<u16, InvalidSegment> {
    let invalid = |message: &str| InvalidSegment {
        field: "port",
        message: message.to_owned(),
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("must be a base-10 integer between 1 and 65535"));
    }
    let trimmed = port.trim_start_matches('0');
    if trimmed.len() > 5 {
        return Err(invalid("must be between 1 and 65535"));
    }
    match trimmed.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        _ => Err(invalid("must be between 1 and 65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(segments: [&str; 4], expected: Result<&str, &str>) {
        let got = RegistrationKey::parse(segments[0], segments[1], segments[2], segments[3]);
        match (got, expected) {
            (Ok(key), Ok(id)) => assert_eq!(key.id(), id),
            (Err(err), Err(field)) => assert_eq!(err.field, field, "{err}"),
            (got, expected) => panic!("{segments:?}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn keys() {
        check(
            ["mysql-backend", "1.0.0", "10.0.0.1", "3306"],
            Ok("/mysql-backend/1.0.0/10.0.0.1/3306"),
        );
        check(["a", "1", "h", "03306"], Ok("/a/1/h/3306"));
        check(["a", "1", "h", "80abc"], Err("port"));
        check(["a", "1", "h", "0"], Err("port"));
        check(["a", "1", "h", "65536"], Err("port"));
        check(["a", "1", "h", "-1"], Err("port"));
        check(["a", "1", "h", "000000000080"], Ok("/a/1/h/80"));
        check(["a b", "1", "h", "80"], Err("name"));
        check(["a", "1\n", "h", "80"], Err("version"));
        check(["a", "1", "", "80"], Err("host"));
        check(["a", "1", &"h".repeat(254), "80"], Err("host"));
    }

    #[test]
    fn hostname_defaults_to_host_and_key_order_is_the_originals() {
        let key = RegistrationKey::parse("a", "1", "10.0.0.1", "80").expect("valid");
        let mut meta = Map::new();
        meta.insert("secondsToExpire".into(), Value::String("10000".into()));
        let reg = Registration::new(key, 1_700_000_000_000, meta);
        assert_eq!(
            serde_json::to_string(&reg).expect("serialise"),
            r#"{"name":"a","version":"1","host":"10.0.0.1","port":80,"lastKnown":1700000000000,"meta":{"secondsToExpire":"10000","hostname":"10.0.0.1"},"id":"/a/1/10.0.0.1/80"}"#
        );
    }

    #[test]
    fn ids_round_trip() {
        let key = RegistrationKey::parse("a", "1", "h", "80").expect("valid");
        assert_eq!(RegistrationKey::from_id(&key.id()), Some(key));
        assert_eq!(RegistrationKey::from_id("/a/1/h"), None);
        assert_eq!(RegistrationKey::from_id("/a/1/h/80/x"), None);
    }
}
