//! Member health as the API shows it: the latest status sample (written by the membership
//! manager, which builds it from HAProxy's `show stat` and its own phases), the mass-expiry
//! brake's degraded backends and the members HAProxy refused, read by the routes to decorate
//! the rows they answer with.

use super::brake_board::BrakeBoard;
use super::sample::StatsSample;
use crate::haproxy::server_name::ServerName;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// Backend key -> server name -> HAProxy's message, for members it refused to add.
pub type RefusedByBackend = BTreeMap<String, BTreeMap<String, String>>;

/// The latest status sample, shared between the manager (writer) and the routes (readers),
/// with the mass-expiry brake's degraded backends.
#[derive(Clone, Default)]
pub struct StatusBoard {
    latest: Arc<RwLock<StatsSample>>,
    brake: BrakeBoard,
    /// Members HAProxy refused, with its message (see `membership::refusals`).
    refused: Arc<RwLock<RefusedByBackend>>,
}

impl StatusBoard {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn replace(&self, sample: StatsSample) {
        *self.latest.write().unwrap_or_else(|p| p.into_inner()) = sample;
    }

    pub fn brake(&self) -> &BrakeBoard {
        &self.brake
    }

    pub fn set_refused(&self, refused: RefusedByBackend) {
        *self.refused.write().unwrap_or_else(|p| p.into_inner()) = refused;
    }

    /// The refused members by backend and `host:port`, as the UI's stats sample carries them.
    pub fn refused_by_address(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        let refused = self.refused.read().unwrap_or_else(|p| p.into_inner());
        refused
            .iter()
            .map(|(backend, servers)| {
                let by_address = servers
                    .iter()
                    .map(|(server, message)| {
                        let (host, port) = split_server_name(server);
                        (format!("{host}:{port}"), message.clone())
                    })
                    .collect();
                (backend.clone(), by_address)
            })
            .collect()
    }

    pub fn latest(&self) -> StatsSample {
        self.latest
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Adds the live status fields to every member object of a backend row (as `GET
    /// /backends/{key}` returns it). Members HAProxy has not reported yet show `DOWN`.
    pub fn decorate_backend_row(&self, row: &mut Value) {
        let Some(key) = row.get("key").and_then(Value::as_str).map(str::to_owned) else {
            return;
        };
        let dynamic = row.get("type").and_then(Value::as_str) == Some("dynamic");
        if let Some(members) = row.get_mut("members") {
            self.decorate_members(&key, members);
            if dynamic {
                self.append_leaving(&key, members);
            }
        }
        self.decorate_backend_row_without_members(row);
    }

    /// The backend-level part of [`StatusBoard::decorate_backend_row`] (`degraded`), leaving
    /// its `members` as they are.
    pub fn decorate_backend_row_without_members(&self, row: &mut Value) {
        let Some(key) = row.get("key").and_then(Value::as_str).map(str::to_owned) else {
            return;
        };
        // Only degraded backends carry the field, last, so every other row stays as it was.
        if let (Some(degraded), Some(object)) = (self.brake.degraded(&key), row.as_object_mut()) {
            object.insert(
                "degraded".into(),
                serde_json::json!({
                    "since": degraded.since,
                    "reason": degraded.reason,
                    "held": degraded.held,
                }),
            );
        }
    }

    /// Appends to `members` (an array of a dynamic backend's members) the servers HAProxy
    /// still has for it that are not members any more: an old version's members serving until
    /// the new one does, or leavers draining their connections. Each is listed until HAProxy
    /// removes it, with its live status and `"leaving": true`.
    pub fn append_leaving(&self, backend_key: &str, members: &mut Value) {
        let latest = self.latest.read().unwrap_or_else(|p| p.into_inner());
        let Some(samples) = latest.members.get(backend_key) else {
            return;
        };
        let Some(list) = members.as_array_mut() else {
            return;
        };
        let listed: std::collections::BTreeSet<String> = list
            .iter()
            .filter_map(|m| server_name_of(backend_key, m))
            .collect();
        for sample in samples.iter().filter(|s| !listed.contains(&s.server)) {
            list.push(serde_json::json!({
                "host": sample.host,
                "port": sample.port,
                "status": sample.status,
                "check_status": sample.check_status,
                "last_change": sample.last_change_s,
                "sessions": sample.scur,
                "leaving": true,
            }));
        }
    }

    /// Adds the live status fields to each member object of `members` (an array), and
    /// `"held": true` to members the mass-expiry brake keeps in service.
    pub fn decorate_members(&self, backend_key: &str, members: &mut Value) {
        let held = self
            .brake
            .degraded(backend_key)
            .map(|d| d.held)
            .unwrap_or_default();
        let latest = self.latest.read().unwrap_or_else(|p| p.into_inner());
        let samples = latest.members.get(backend_key);
        let refused_all = self.refused.read().unwrap_or_else(|p| p.into_inner());
        let refused = refused_all.get(backend_key);
        let Some(members) = members.as_array_mut() else {
            return;
        };
        for member in members {
            let Some(object) = member.as_object_mut() else {
                continue;
            };
            let Some((server, host, port)) = member_address(backend_key, object) else {
                continue;
            };
            let sample = samples.and_then(|s| s.iter().find(|m| m.server == server));
            let status = sample.map_or("DOWN", |s| s.status.as_str());
            object.insert("status".into(), Value::from(status));
            object.insert(
                "check_status".into(),
                sample
                    .and_then(|s| s.check_status.clone())
                    .map_or(Value::Null, Value::from),
            );
            object.insert(
                "last_change".into(),
                sample
                    .and_then(|s| s.last_change_s)
                    .map_or(Value::Null, Value::from),
            );
            object.insert("sessions".into(), Value::from(sample.map_or(0, |s| s.scur)));
            // Its DNS name has no address: no server, and the reason instead of a plain DOWN.
            if let Some(reason) = object.get("unresolved").cloned() {
                object.insert("status".into(), Value::from("UNRESOLVED"));
                object.insert("error".into(), reason);
            }
            // HAProxy refused it: say so, in HAProxy's words, instead of a plain DOWN.
            if let Some(message) = refused.and_then(|r| r.get(&server)) {
                object.insert("status".into(), Value::from("REFUSED"));
                object.insert("error".into(), Value::from(message.as_str()));
            }
            if held.contains(&format!("{host}:{port}")) {
                object.insert("held".into(), Value::Bool(true));
            }
        }
    }
}

/// A member object's HAProxy server name, canonical host text and port.
fn member_address(
    backend_key: &str,
    object: &serde_json::Map<String, Value>,
) -> Option<(String, String, u64)> {
    // A member registered by DNS name has its server at the address it resolved to.
    let host = object
        .get("address")
        .or_else(|| object.get("host"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let port = match object.get("port") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }?;
    // Server names use the canonical address text, as the renderer writes it.
    let name = ServerName::for_host(backend_key, host, u16::try_from(port).ok()?);
    let host = name.host.clone();
    Some((name.to_string(), host, port))
}

fn server_name_of(backend_key: &str, member: &Value) -> Option<String> {
    member_address(backend_key, member.as_object()?).map(|(server, _, _)| server)
}

/// `<key>_<host>:<port>` -> (host, port); `(name, 0)` for a name that is not one of ours.
pub fn split_server_name(server: &str) -> (String, u16) {
    ServerName::parse(server).map_or_else(|| (server.to_owned(), 0), |name| (name.host, name.port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_split_at_the_last_underscore() {
        assert_eq!(
            split_server_name("my_backend_10.0.0.1:3306"),
            ("10.0.0.1".to_owned(), 3306)
        );
        assert_eq!(split_server_name("be_::1:80"), ("::1".to_owned(), 80));
    }
}
