//! Persistence of the frontends and backends in the original Aqueduct's file format,
//! `{"version":1,"frontends":[...],"backends":[...]}` with rows as GET returns them, written
//! atomically. A file that cannot be read back is an error naming it: it is never replaced
//! by an empty config behind the operator's back.

use super::members::DynamicMembers;
use super::model::Config;
use super::validate;
use crate::atomic_file::write_atomic;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

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
pub fn save(path: &Path, config: &Config, members: &DynamicMembers) -> Result<(), StateFileError> {
    write_atomic(path, to_text(config, members).as_bytes()).map_err(|source| {
        StateFileError::Write {
            path: path.to_owned(),
            source,
        }
    })
}

pub fn to_text(config: &Config, members: &DynamicMembers) -> String {
    let frontends: Vec<Value> = config
        .frontends
        .values()
        .map(|f| f.to_row(!config.missing_backends_of(f).is_empty()))
        .collect();
    let backends: Vec<Value> = config
        .backends
        .values()
        .map(|b| b.to_row(&members.registrations(&b.key)))
        .collect();
    let mut text = json!({"version": 1, "frontends": frontends, "backends": backends}).to_string();
    text.push('\n');
    text
}

fn parse(bytes: &[u8]) -> Result<Config, String> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|err| format!("not valid JSON: {err}"))?;
    let Value::Object(top) = value else {
        return Err("the top level is not a JSON object".to_owned());
    };
    match top.get("version") {
        Some(v) if v.as_u64() == Some(1) => {}
        Some(v) => return Err(format!("unsupported version {v}, expected 1")),
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
        let backend =
            validate::backend(key, row).map_err(|err| format!("backends[{i}] ({key}): {err}"))?;
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
        save(&path, &config, &DynamicMembers::default()).unwrap();
        assert_eq!(load(&path).unwrap(), Some(config));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with(
                r#"{"version":1,"frontends":[{"id":"frontend/fe","_type":"frontend","key":"fe""#
            ),
            "{text}"
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
        check_corrupt("{\"version\":2}", "unsupported version 2");
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
