//! The JSON rows of the REST API: frontends and backends in the original Aqueduct's shape and
//! key order. Only the API answers with these; the state file has a format of its own
//! (`state_file`), so changing what GET returns never changes what is on disk.

use super::member_book::MemberBook;
use crate::config::{Backend, BackendType, Config, Frontend, Health, Rule};
use crate::registry::model::Registration;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// The config and the members of dynamic backends at one moment, as the API lists them.
pub struct ReadModel {
    config: Arc<Config>,
    members: Box<dyn MemberBook>,
}

impl ReadModel {
    pub fn new(config: Arc<Config>, members: Box<dyn MemberBook>) -> ReadModel {
        ReadModel { config, members }
    }

    /// `GET /frontends`: rows sorted by id.
    pub fn frontends(&self) -> Vec<Value> {
        self.config
            .frontends
            .values()
            .map(|f| self.frontend_of(f))
            .collect()
    }

    pub fn frontend(&self, key: &str) -> Option<Value> {
        self.config.frontends.get(key).map(|f| self.frontend_of(f))
    }

    /// `GET /backends`: rows sorted by id.
    pub fn backends(&self) -> Vec<Value> {
        self.config
            .backends
            .values()
            .map(|b| backend_row(b, &self.members.registrations(&b.key)))
            .collect()
    }

    pub fn backend(&self, key: &str) -> Option<Value> {
        let backend = self.config.backends.get(key)?;
        Some(backend_row(backend, &self.members.registrations(key)))
    }

    /// `GET /backends/{key}/members`.
    pub fn members(&self, key: &str) -> Option<Value> {
        let backend = self.config.backends.get(key)?;
        Some(members_json(backend, &self.members.registrations(key)))
    }

    fn frontend_of(&self, frontend: &Frontend) -> Value {
        let waiting = !self.config.missing_backends_of(frontend).is_empty();
        frontend_row(frontend, waiting)
    }
}

/// A frontend's row: `id,_type,key,bind,backend,mode,keepalive,rules,natives`, plus
/// `waitingForBackend: true` when one of its backends does not exist yet.
pub fn frontend_row(frontend: &Frontend, waiting_for_backend: bool) -> Value {
    let mut row = Map::new();
    row.insert("id".into(), format!("frontend/{}", frontend.key).into());
    row.insert("_type".into(), "frontend".into());
    row.insert("key".into(), frontend.key.clone().into());
    row.insert("bind".into(), frontend.bind.clone().into());
    row.insert("backend".into(), frontend.backend.clone().into());
    row.insert("mode".into(), frontend.mode.as_str().into());
    row.insert("keepalive".into(), frontend.keepalive.as_str().into());
    row.insert(
        "rules".into(),
        frontend
            .rules
            .iter()
            .map(rule_json)
            .collect::<Vec<_>>()
            .into(),
    );
    row.insert("natives".into(), frontend.natives.clone().into());
    if waiting_for_backend {
        row.insert("waitingForBackend".into(), true.into());
    }
    Value::Object(row)
}

pub fn rule_json(rule: &Rule) -> Value {
    let mut json = Map::new();
    json.insert("type".into(), rule.kind.as_str().into());
    if let Some(header) = &rule.header {
        json.insert("header".into(), header.clone().into());
    }
    json.insert("operation".into(), rule.operation.clone().into());
    json.insert("value".into(), rule.value.clone().into());
    json.insert("backend".into(), rule.backend.clone().into());
    Value::Object(json)
}

/// A backend's row: `id,_type,key,type,name,version,balance,host,mode,members,natives,health`.
/// `dynamic_members` are the current registrations of a dynamic backend.
pub fn backend_row(backend: &Backend, dynamic_members: &[Registration]) -> Value {
    let mut row = Map::new();
    row.insert("id".into(), format!("backend/{}", backend.key).into());
    row.insert("_type".into(), "backend".into());
    row.insert("key".into(), backend.key.clone().into());
    row.insert("type".into(), backend.kind.as_str().into());
    if let Some(name) = &backend.name {
        row.insert("name".into(), name.clone().into());
    }
    if let Some(version) = &backend.version {
        row.insert("version".into(), version.clone().into());
    }
    row.insert("balance".into(), backend.balance.as_str().into());
    row.insert(
        "host".into(),
        backend.host.clone().map_or(Value::Null, Value::from),
    );
    row.insert("mode".into(), backend.mode.as_str().into());
    row.insert("members".into(), members_json(backend, dynamic_members));
    row.insert("natives".into(), backend.natives.clone().into());
    if let Some(health) = &backend.health {
        row.insert("health".into(), health_json(health));
    }
    if let Some(cookie) = &backend.sticky_cookie {
        row.insert("stickyCookie".into(), cookie.clone().into());
    }
    if let Some(rollout) = &backend.rollout {
        row.insert(
            "rollout".into(),
            serde_json::to_value(rollout).unwrap_or(Value::Null),
        );
    }
    Value::Object(row)
}

/// `GET /backends/{key}/members`: static members as sent, or the registrations.
pub fn members_json(backend: &Backend, dynamic_members: &[Registration]) -> Value {
    match backend.kind {
        BackendType::Static => Value::Array(
            backend
                .static_members
                .iter()
                .map(|m| Value::Object(m.as_sent.clone()))
                .collect(),
        ),
        BackendType::Dynamic => {
            serde_json::to_value(dynamic_members).unwrap_or_else(|_| Value::Array(Vec::new()))
        }
    }
}

pub fn health_json(health: &Health) -> Value {
    json!({
        "method": health.method.as_str(),
        "uri": health.uri,
        "httpVersion": health.http_version.as_str(),
        "interval": health.interval_ms,
    })
}
