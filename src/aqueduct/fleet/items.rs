//! A config as the store's items and back: `frontend:<key>` / `backend:<key>` fields holding
//! each item's record (its PUT body, see [`state_file`]). Items read back go through the same
//! validation as a PUT, so nothing written into the store by hand reaches haproxy.cfg without
//! it.

use super::store::StoredConfig;
use crate::aqueduct::state_file;
use crate::aqueduct::validate;
use crate::config::Config;
use serde_json::Value;

const FRONTEND: &str = "frontend:";
const BACKEND: &str = "backend:";

pub fn frontend_field(key: &str) -> String {
    format!("{FRONTEND}{key}")
}

pub fn backend_field(key: &str) -> String {
    format!("{BACKEND}{key}")
}

/// Frontend `key` of `config` as the store holds it: its field, and its record (`None`: gone).
pub fn frontend_item(config: &Config, key: &str) -> (String, Option<String>) {
    let json = config.frontends.get(key);
    let json = json.map(|f| state_file::frontend_value(f).to_string());
    (frontend_field(key), json)
}

/// Backend `key` of `config` as the store holds it (see [`frontend_item`]).
pub fn backend_item(config: &Config, key: &str) -> (String, Option<String>) {
    let json = config.backends.get(key);
    let json = json.map(|b| state_file::backend_value(b).to_string());
    (backend_field(key), json)
}

/// `config` as `(field, json)` pairs.
pub fn to_items(config: &Config) -> Vec<(String, String)> {
    let frontends = config
        .frontends
        .keys()
        .map(|key| frontend_item(config, key));
    let backends = config.backends.keys().map(|key| backend_item(config, key));
    frontends
        .chain(backends)
        .filter_map(|(field, json)| Some((field, json?)))
        .collect()
}

/// The config a stored version describes; an item that does not validate is left out and
/// logged (a store written by hand must not stop a node).
pub fn config_of(stored: &StoredConfig) -> Config {
    let (config, errors) = from_items(&stored.items);
    for error in &errors {
        tracing::warn!(version = stored.version, %error,
            "an item in the fleet's store is not valid; left out");
    }
    config
}

/// The config the items describe, and one message per item that could not be read (left out).
pub fn from_items(items: &[(String, String)]) -> (Config, Vec<String>) {
    let mut config = Config::default();
    let mut errors = Vec::new();
    for (field, json) in items {
        let row: Value = match serde_json::from_str(json) {
            Ok(row) => row,
            Err(err) => {
                errors.push(format!("{field}: not valid JSON: {err}"));
                continue;
            }
        };
        if let Some(key) = field.strip_prefix(FRONTEND) {
            match validate::frontend(key, &row) {
                Ok(frontend) => {
                    config.frontends.insert(key.to_owned(), frontend);
                }
                Err(err) => errors.push(format!("{field}: {}", err.message)),
            }
        } else if let Some(key) = field.strip_prefix(BACKEND) {
            match validate::stored_backend(key, &row) {
                Ok(backend) => {
                    config.backends.insert(key.to_owned(), backend);
                }
                Err(err) => errors.push(format!("{field}: {}", err.message)),
            }
        } else {
            errors.push(format!("{field}: not a frontend or backend field"));
        }
    }
    (config, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_config_survives_the_round_trip() {
        let mut config = Config::default();
        let backend = validate::backend(
            "web",
            &json!({"type": "static", "members": [{"host": "127.0.0.1", "port": 8080}]}),
        )
        .unwrap();
        config.backends.insert("web".into(), backend);
        let frontend =
            validate::frontend("www", &json!({"bind": "*:8080", "backend": "web"})).unwrap();
        config.frontends.insert("www".into(), frontend);
        let (back, errors) = from_items(&to_items(&config));
        assert_eq!(errors, Vec::<String>::new());
        assert_eq!(back, config);
    }

    #[test]
    fn bad_items_are_left_out_and_named() {
        let items = vec![
            ("frontend:x".to_owned(), "{nope".to_owned()),
            (
                "frontend:y".to_owned(),
                json!({"bind": "*:1\nglobal", "backend": "b"}).to_string(),
            ),
            ("other:z".to_owned(), "{}".to_owned()),
        ];
        let (config, errors) = from_items(&items);
        assert!(config.frontends.is_empty());
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("frontend:x"));
        assert!(errors[1].starts_with("frontend:y"));
    }
}
