//! Persistence of the frontends and backends in `<data-dir>/aqueduct.json`, written atomically.
//!
//! The file has a format of its own, versioned, so that what the API answers can change without
//! changing what is on disk:
//! - **version 2** (written): `{"version":2,"frontends":[...],"backends":[...]}`, each entry the
//!   canonical body a PUT of it would send (no ids, no live members: the registry is their
//!   source), typed by `FrontendRecord` and `BackendRecord` below;
//! - **version 1** (read): the original Aqueduct's file, rows as its GET returned them
//!   (`id`, `_type`, registrations as `members` of dynamic backends), which data dirs of
//!   earlier releases and of the original hold.
//!
//! Every entry of either version goes through the same validation as a PUT. A file that cannot
//! be read back is an error naming it: it is never replaced by an empty config behind the
//! operator's back.

use super::validate;
use crate::atomic_file::write_atomic;
use crate::config::rollout::Rollout;
use crate::config::{Backend, Config, Frontend, Health};
use serde::Serialize;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The version [`save`] writes.
pub const VERSION: u64 = 2;

/// The file name inside the data dir.
pub const FILE_NAME: &str = "aqueduct.json";

pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("cannot read the aqueduct state file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the aqueduct state file {path} is corrupt ({reason}); fix or move it away, \
         it is never replaced by an empty config"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write the aqueduct state file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Loads the file; `Ok(None)` when there is none yet. Each row goes through the same
/// validation as a PUT. Dynamic members in the file are not restored: the registry is their
/// source and refreshes them.
pub fn load(path: &Path) -> Result<Option<Config>, StateFileError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateFileError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    parse(&bytes)
        .map(Some)
        .map_err(|reason| StateFileError::Corrupt {
            path: path.to_owned(),
            reason,
        })
}

/// Writes the file atomically.
pub fn save(path: &Path, config: &Config) -> Result<(), StateFileError> {
    write_atomic(path, to_text(config).as_bytes()).map_err(|source| StateFileError::Write {
        path: path.to_owned(),
        source,
    })
}

/// The file as [`save`] writes it.
pub fn to_text(config: &Config) -> String {
    let file = StateFile {
        version: VERSION,
        frontends: config
            .frontends
            .values()
            .map(FrontendRecord::from)
            .collect(),
        backends: config.backends.values().map(BackendRecord::from).collect(),
    };
    let mut text = serde_json::to_string(&file).unwrap_or_else(|_| unreachable_text());
    text.push('\n');
    text
}

/// One frontend as its record (the fields of its PUT body), the form the fleet's store keeps.
pub fn frontend_value(frontend: &Frontend) -> Value {
    serde_json::to_value(FrontendRecord::from(frontend)).unwrap_or(Value::Null)
}

/// One backend as its record (static members as sent, dynamic ones not at all).
pub fn backend_value(backend: &Backend) -> Value {
    serde_json::to_value(BackendRecord::from(backend)).unwrap_or(Value::Null)
}

/// Serialising plain strings, numbers and maps of JSON values cannot fail; should it ever,
/// an empty version-2 file is written rather than a panic in the apply pipeline.
fn unreachable_text() -> String {
    format!("{{\"version\":{VERSION},\"frontends\":[],\"backends\":[]}}")
}

#[derive(Serialize)]
struct StateFile {
    version: u64,
    frontends: Vec<FrontendRecord>,
    backends: Vec<BackendRecord>,
}

/// A frontend on disk (version 2): the fields of its PUT body.
#[derive(Serialize)]
struct FrontendRecord {
    key: String,
    bind: String,
    backend: String,
    mode: String,
    keepalive: String,
    rules: Vec<RuleRecord>,
    natives: Vec<String>,
}

#[derive(Serialize)]
struct RuleRecord {
    #[serde(rename = "type")]
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<String>,
    operation: String,
    value: String,
    backend: String,
}

/// A backend on disk (version 2): the fields of its PUT body; static members as the client
/// sent them, dynamic ones not at all.
#[derive(Serialize)]
struct BackendRecord {
    key: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    balance: String,
    host: Option<String>,
    mode: String,
    members: Vec<Map<String, Value>>,
    natives: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    health: Option<HealthRecord>,
    #[serde(rename = "stickyCookie", skip_serializing_if = "Option::is_none")]
    sticky_cookie: Option<String>,
    /// Not part of a PUT body: read back by `validate::stored_backend`.
    #[serde(skip_serializing_if = "Option::is_none")]
    rollout: Option<Box<Rollout>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HealthRecord {
    method: String,
    uri: String,
    http_version: String,
    interval: u32,
}

impl From<&Frontend> for FrontendRecord {
    fn from(frontend: &Frontend) -> Self {
        FrontendRecord {
            key: frontend.key.clone(),
            bind: frontend.bind.clone(),
            backend: frontend.backend.clone(),
            mode: frontend.mode.as_str().to_owned(),
            keepalive: frontend.keepalive.as_str().to_owned(),
            rules: frontend
                .rules
                .iter()
                .map(|rule| RuleRecord {
                    kind: rule.kind.as_str().to_owned(),
                    header: rule.header.clone(),
                    operation: rule.operation.clone(),
                    value: rule.value.clone(),
                    backend: rule.backend.clone(),
                })
                .collect(),
            natives: frontend.natives.clone(),
        }
    }
}

impl From<&Backend> for BackendRecord {
    fn from(backend: &Backend) -> Self {
        BackendRecord {
            key: backend.key.clone(),
            kind: backend.kind.as_str().to_owned(),
            name: backend.name.clone(),
            version: backend.version.clone(),
            balance: backend.balance.as_str().to_owned(),
            host: backend.host.clone(),
            mode: backend.mode.as_str().to_owned(),
            members: backend
                .static_members
                .iter()
                .map(|m| m.as_sent.clone())
                .collect(),
            natives: backend.natives.clone(),
            health: backend.health.as_ref().map(HealthRecord::from),
            sticky_cookie: backend.sticky_cookie.clone(),
            rollout: backend.rollout.clone(),
        }
    }
}

impl From<&Health> for HealthRecord {
    fn from(health: &Health) -> Self {
        HealthRecord {
            method: health.method.as_str().to_owned(),
            uri: health.uri.clone(),
            http_version: health.http_version.as_str().to_owned(),
            interval: health.interval_ms,
        }
    }
}

fn parse(bytes: &[u8]) -> Result<Config, String> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|err| format!("not valid JSON: {err}"))?;
    let Value::Object(top) = value else {
        return Err("the top level is not a JSON object".to_owned());
    };
    // Version 1 rows and version 2 records are both PUT bodies with a `key` (version 1's
    // extra fields, `id`, `_type` and dynamic `members`, are ignored by validation), so one
    // reader serves both; the version says which writer made the file.
    match top.get("version") {
        Some(v) if matches!(v.as_u64(), Some(1 | VERSION)) => {}
        Some(v) => return Err(format!("unsupported version {v}, expected 1 or {VERSION}")),
        None => return Err("no \"version\" field".to_owned()),
    }
    let mut config = Config::default();
    for (i, row) in rows(&top, "frontends")?.iter().enumerate() {
        let key = row_key(row).ok_or_else(|| format!("frontends[{i}] has no string \"key\""))?;
        let frontend =
            validate::frontend(key, row).map_err(|err| format!("frontends[{i}] ({key}): {err}"))?;
        if config.frontends.insert(key.to_owned(), frontend).is_some() {
            return Err(format!("frontends[{i}]: frontend {key} appears twice"));
        }
    }
    for (i, row) in rows(&top, "backends")?.iter().enumerate() {
        let key = row_key(row).ok_or_else(|| format!("backends[{i}] has no string \"key\""))?;
        let backend = validate::stored_backend(key, row)
            .map_err(|err| format!("backends[{i}] ({key}): {err}"))?;
        if config.backends.insert(key.to_owned(), backend).is_some() {
            return Err(format!("backends[{i}]: backend {key} appears twice"));
        }
    }
    Ok(config)
}

fn rows<'a>(top: &'a serde_json::Map<String, Value>, name: &str) -> Result<&'a [Value], String> {
    match top.get(name) {
        None => Ok(&[]),
        Some(Value::Array(rows)) => Ok(rows),
        Some(_) => Err(format!("\"{name}\" is not an array")),
    }
}

fn row_key(row: &Value) -> Option<&str> {
    row.get("key").and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Config {
        let mut config = Config::default();
        let fe = validate::frontend(
            "fe",
            &json!({"bind":":80","backend":"be","natives":["x \"y\""]}),
        )
        .unwrap();
        config.frontends.insert("fe".into(), fe);
        let be = validate::backend(
            "be",
            &json!({"type":"static","health":{"interval":"5000"},"members":[{"host":"10.0.0.1","port":"80"}]}),
        )
        .unwrap();
        config.backends.insert("be".into(), be);
        let dynamic =
            validate::backend("dyn", &json!({"type":"dynamic","name":"d","version":"1"})).unwrap();
        config.backends.insert("dyn".into(), dynamic);
        config
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        assert!(load(&path).unwrap().is_none());
        let config = sample();
        save(&path, &config).unwrap();
        assert_eq!(load(&path).unwrap(), Some(config));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with(r#"{"version":2,"frontends":[{"key":"fe","bind":":80""#),
            "{text}"
        );
        assert!(
            !text.contains("\"id\""),
            "no API row fields on disk: {text}"
        );
    }

    fn check_corrupt(contents: &str, fragment: &str) {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        std::fs::write(&path, contents).unwrap();
        let err = load(&path).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, StateFileError::Corrupt { .. }), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains(fragment), "{contents}: {message}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            contents,
            "left untouched"
        );
    }

    #[test]
    fn corrupt_files_are_errors_naming_the_file() {
        check_corrupt("", "not valid JSON");
        check_corrupt("{\"version\":1,\"frontends\":[", "not valid JSON");
        check_corrupt("[]", "not a JSON object");
        check_corrupt("{\"frontends\":[]}", "no \"version\"");
        check_corrupt("{\"version\":3}", "unsupported version 3");
        check_corrupt(
            "{\"version\":1,\"frontends\":{}}",
            "\"frontends\" is not an array",
        );
        check_corrupt(
            "{\"version\":1,\"frontends\":[{\"bind\":\":80\"}]}",
            "frontends[0] has no string \"key\"",
        );
        check_corrupt(
            "{\"version\":1,\"backends\":[{\"key\":\"b\",\"type\":\"x\"}]}",
            "backends[0] (b): type: type must be one of",
        );
        check_corrupt(
            "{\"version\":1,\"backends\":[{\"key\":\"b\",\"type\":\"static\"},{\"key\":\"b\",\"type\":\"static\"}]}",
            "appears twice",
        );
    }

    /// A data dir written by the releases before the format had its own version (API rows,
    /// dynamic members included) keeps working, and is rewritten as version 2 on the next save
    /// with the same configuration.
    #[test]
    fn a_version_1_file_of_earlier_releases_loads() {
        let fixture = include_str!("../../tests/fixtures/aqueduct/aqueduct-v1.json");
        let config = parse(fixture.as_bytes()).unwrap();
        assert_eq!(
            config.frontends.keys().collect::<Vec<_>>(),
            ["mysql-frontend", "webapp-frontend"]
        );
        assert_eq!(config.frontends["webapp-frontend"].rules.len(), 2);
        let webapp = &config.backends["webapp-backend"];
        assert_eq!(webapp.balance.as_str(), "source");
        assert_eq!(webapp.health.as_ref().map(|h| h.interval_ms), Some(5000));
        assert_eq!(config.backends["static-backend"].static_members.len(), 2);
        let rewritten = to_text(&config);
        assert!(rewritten.starts_with("{\"version\":2,"), "{rewritten}");
        assert_eq!(parse(rewritten.as_bytes()).unwrap(), config);
    }

    #[test]
    fn the_originals_file_loads() {
        let original = r#"{"version":1,"frontends":[{"id":"frontend/mysql-frontend","_type":"frontend","key":"mysql-frontend","bind":"*:3306","backend":"mysql-backend","mode":"tcp","keepalive":"default","rules":[],"natives":[]}],"backends":[{"id":"backend/mysql-backend","_type":"backend","key":"mysql-backend","type":"dynamic","name":"mysql-backend","version":"1.0.0","balance":"source","host":null,"mode":"tcp","members":[{"name":"mysql-backend","version":"1.0.0","host":"10.0.0.1","port":3306,"lastKnown":1700000000000,"meta":{"hostname":"10.0.0.1"},"id":"/mysql-backend/1.0.0/10.0.0.1/3306"}],"natives":["option mysql-check"]}]}"#;
        let config = parse(original.as_bytes()).unwrap();
        assert_eq!(config.frontends["mysql-frontend"].bind, "*:3306");
        assert_eq!(
            config.backends["mysql-backend"].natives,
            ["option mysql-check"]
        );
    }
}
