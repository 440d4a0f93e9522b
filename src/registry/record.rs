//! [`RegistrationRecord`]: a registration as the store keeps it, compact enough for 100,000 of
//! them in a few tens of megabytes. The identity is one shared `/name/version/host/port`
//! string (the other segments are offsets into it) and `meta` is its JSON text, never re-parsed
//! on the heartbeat path. Records clone in two reference-count bumps and write themselves as
//! the original's Registration JSON without building a [`Registration`].

use super::model::{Registration, RegistrationKey};
use serde_json::{Map, Value};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationRecord {
    /// `/<name>/<version>/<host>/<port>`.
    id: Arc<str>,
    /// Byte offsets of the ends of the name, version and host segments in `id`. Segments are
    /// at most 253 bytes, so an id is well under `u16::MAX`.
    name_end: u16,
    version_end: u16,
    host_end: u16,
    port: u16,
    /// Epoch ms of the most recent upsert.
    pub last_known: u64,
    /// Epoch ms after which the registration expires.
    pub expires_at: u64,
    /// The meta as a JSON object text (with the `hostname` default applied).
    meta_json: Arc<str>,
}

impl RegistrationRecord {
    /// `meta` must already have its `hostname` default applied (see
    /// [`super::model::default_hostname`]).
    pub fn new(
        key: &RegistrationKey,
        meta: &Map<String, Value>,
        last_known: u64,
        expires_at: u64,
    ) -> Self {
        Self::with_meta_json(key, meta_text(meta), last_known, expires_at)
    }

    /// Builds a record from already-serialised meta (a JSON object text).
    pub fn with_meta_json(
        key: &RegistrationKey,
        meta_json: Arc<str>,
        last_known: u64,
        expires_at: u64,
    ) -> Self {
        let id = key.id();
        // "/" + name, "/" + version, "/" + host.
        let name_end = 1 + key.name.len();
        let version_end = name_end + 1 + key.version.len();
        let host_end = version_end + 1 + key.host.len();
        RegistrationRecord {
            id: Arc::from(id),
            name_end: name_end as u16,
            version_end: version_end as u16,
            host_end: host_end as u16,
            port: key.port,
            last_known,
            expires_at,
            meta_json,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The id as a shared string (for indexes that must not copy it).
    pub fn shared_id(&self) -> &Arc<str> {
        &self.id
    }

    pub fn name(&self) -> &str {
        self.id.get(1..self.name_end as usize).unwrap_or("")
    }

    pub fn version(&self) -> &str {
        self.id
            .get(self.name_end as usize + 1..self.version_end as usize)
            .unwrap_or("")
    }

    pub fn host(&self) -> &str {
        self.id
            .get(self.version_end as usize + 1..self.host_end as usize)
            .unwrap_or("")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn meta_json(&self) -> &Arc<str> {
        &self.meta_json
    }

    /// The full model value (parses the meta).
    pub fn to_registration(&self) -> Registration {
        // The text was produced by serde_json from a Map, so it parses back; an empty map is
        // only a defensive fallback.
        let meta: Map<String, Value> = serde_json::from_str(&self.meta_json).unwrap_or_default();
        Registration {
            name: self.name().to_owned(),
            version: self.version().to_owned(),
            host: self.host().to_owned(),
            port: self.port,
            last_known: self.last_known,
            meta,
            id: self.id.to_string(),
            address: None,
            unresolved: None,
        }
    }

    /// Appends the original's Registration JSON: keys `name, version, host, port, lastKnown,
    /// meta, id`, byte-identical to serialising [`Self::to_registration`].
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"name\":");
        write_json_string(out, self.name());
        out.extend_from_slice(b",\"version\":");
        write_json_string(out, self.version());
        out.extend_from_slice(b",\"host\":");
        write_json_string(out, self.host());
        out.extend_from_slice(
            format!(",\"port\":{},\"lastKnown\":{}", self.port, self.last_known).as_bytes(),
        );
        out.extend_from_slice(b",\"meta\":");
        out.extend_from_slice(self.meta_json.as_bytes());
        out.extend_from_slice(b",\"id\":");
        write_json_string(out, &self.id);
        out.push(b'}');
    }
}

/// Serialises a meta object the one canonical way records store it.
pub fn meta_text(meta: &Map<String, Value>) -> Arc<str> {
    Arc::from(meta_string(meta))
}

/// [`meta_text`] as a plain `String`, to compare before deciding to keep it.
pub fn meta_string(meta: &Map<String, Value>) -> String {
    // Serialising a Map of Values cannot fail (keys are strings, no I/O).
    serde_json::to_string(meta).unwrap_or_else(|_| "{}".to_owned())
}

fn write_json_string(out: &mut Vec<u8>, text: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// A JSON array of records, e.g. a `GET /registrations` body.
pub fn json_array(records: &[RegistrationRecord]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + records.len() * 256);
    out.push(b'[');
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        record.write_json(&mut out);
    }
    out.push(b']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::model::default_hostname;
    use serde_json::json;

    fn record(segments: [&str; 4], meta: Value) -> RegistrationRecord {
        let key =
            RegistrationKey::parse(segments[0], segments[1], segments[2], segments[3]).unwrap();
        let mut meta = meta.as_object().cloned().unwrap();
        default_hostname(&mut meta, &key.host);
        RegistrationRecord::new(&key, &meta, 1_700_000_000_000, 1_700_000_010_000)
    }

    fn check(segments: [&str; 4], meta: Value) {
        let r = record(segments, meta);
        assert_eq!(
            (r.name(), r.version(), r.host(), r.port().to_string()),
            (
                segments[0],
                segments[1],
                segments[2],
                segments[3].trim_start_matches('0').to_string()
            )
        );
        let mut written = Vec::new();
        r.write_json(&mut written);
        let expected = serde_json::to_string(&r.to_registration()).unwrap();
        assert_eq!(String::from_utf8(written).unwrap(), expected);
    }

    #[test]
    fn segments_and_json_match_the_model() {
        check(
            ["mysql-backend", "1.0.0", "10.0.0.1", "3306"],
            json!({"secondsToExpire": "10000"}),
        );
        check(["a", "1", "h", "080"], json!({}));
        check(
            ["n\"q", "v\\", "é", "1"],
            json!({"hostname": "x", "nested": {"a": [1, 2.5, null]}}),
        );
        check(
            [
                &"n".repeat(253),
                &"v".repeat(253),
                &"h".repeat(253),
                "65535",
            ],
            json!({}),
        );
    }

    #[test]
    fn the_originals_example_is_byte_identical() {
        let r = record(
            ["mysql-backend", "1.0.0", "10.0.0.1", "3306"],
            json!({"secondsToExpire": "10000"}),
        );
        assert_eq!(
            String::from_utf8(json_array(&[r])).unwrap(),
            r#"[{"name":"mysql-backend","version":"1.0.0","host":"10.0.0.1","port":3306,"lastKnown":1700000000000,"meta":{"secondsToExpire":"10000","hostname":"10.0.0.1"},"id":"/mysql-backend/1.0.0/10.0.0.1/3306"}]"#
        );
        assert_eq!(json_array(&[]), b"[]");
    }
}
