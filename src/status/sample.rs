//! What HAProxy reported at one poll, as the API and the UI show it: frontends', backends' and
//! members' rows of `show stat`, with the members the mass-expiry brake holds and the ones
//! HAProxy refused.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One poll of HAProxy's stats.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsSample {
    /// Epoch milliseconds of the poll.
    #[serde(rename = "time")]
    pub time_ms: u64,
    /// Frontend key -> its row.
    pub frontends: BTreeMap<String, ProxySample>,
    /// Backend key -> its row.
    pub backends: BTreeMap<String, ProxySample>,
    /// Backend key -> its servers.
    pub members: BTreeMap<String, Vec<MemberSample>>,
    /// Backend key -> its degraded mark, for backends the mass-expiry brake holds members of.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub degraded: BTreeMap<String, DegradedSample>,
    /// Backend key -> `host:port` -> HAProxy's message, for members it refused to add.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<String, BTreeMap<String, String>>,
}

/// A backend whose members mostly expired at once: the expired ones are held in service until
/// they register again or an operator confirms their removal (`membership::expiry_brake`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DegradedSample {
    /// Epoch milliseconds when the brake engaged.
    pub since: u64,
    /// Why, in words, e.g. `4 of 5 members expired within 10 s`.
    pub reason: String,
    /// The held members, `host:port`, sorted.
    pub held: Vec<String>,
}

/// A frontend's or backend's row of `show stat`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxySample {
    /// HAProxy's status text: `OPEN` for a frontend, `UP`/`DOWN` for a backend.
    pub status: String,
    /// Current sessions.
    pub scur: u64,
    /// Highest sessions seen.
    pub smax: u64,
    /// HTTP requests per second (frontends in http mode; 0 otherwise).
    pub req_rate: u64,
    /// Sessions per second.
    pub rate: u64,
}

/// A server's row of `show stat`, one member of a backend.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberSample {
    /// HAProxy's server name, `<backend key>_<host>:<port>`.
    pub server: String,
    pub host: String,
    pub port: u16,
    /// `UP`, `DOWN`, `DRAIN` or `MAINT`; `DOWN` until the first passing check.
    pub status: String,
    /// The last check's result code, e.g. `L7OK`, `L4CON`, `L4TOUT`.
    pub check_status: Option<String>,
    /// How long the last check took, in milliseconds.
    pub check_duration_ms: Option<u64>,
    /// Seconds since the last status change.
    pub last_change_s: Option<u64>,
    /// Current sessions.
    pub scur: u64,
    /// Sessions per second.
    pub rate: u64,
    /// The registry version the server is a member for, in a backend with a rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Requests since HAProxy's last reload (`req_tot`; sessions in TCP mode, plus failed
    /// connections, which never became a request).
    #[serde(default)]
    pub requests: u64,
    /// 5xx answers, failed connections and broken responses since the last reload.
    #[serde(default)]
    pub errors: u64,
    /// HAProxy's average response time over the server's last 1,024 responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtime_ms: Option<u64>,
    /// The server's current weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape_is_camel_case() {
        let member = MemberSample {
            server: "web_127.0.0.1:8080".into(),
            host: "127.0.0.1".into(),
            port: 8080,
            status: "UP".into(),
            check_status: Some("L7OK".into()),
            check_duration_ms: Some(1),
            last_change_s: Some(12),
            scur: 0,
            rate: 3,
            version: Some("2".into()),
            requests: 10,
            errors: 1,
            rtime_ms: Some(4),
            weight: Some(256),
        };
        assert_eq!(
            serde_json::to_string(&member).unwrap(),
            r#"{"server":"web_127.0.0.1:8080","host":"127.0.0.1","port":8080,"status":"UP","checkStatus":"L7OK","checkDurationMs":1,"lastChangeS":12,"scur":0,"rate":3,"version":"2","requests":10,"errors":1,"rtimeMs":4,"weight":256}"#
        );
        let web = ProxySample {
            status: "OPEN".into(),
            scur: 1,
            smax: 2,
            req_rate: 10,
            rate: 2,
        };
        let sample = StatsSample {
            time_ms: 7,
            frontends: [("web".to_owned(), web)].into(),
            ..StatsSample::default()
        };
        let json = serde_json::to_value(sample).unwrap();
        assert_eq!(json["time"], 7);
        assert_eq!(json["frontends"]["web"]["reqRate"], 10);
    }
}
