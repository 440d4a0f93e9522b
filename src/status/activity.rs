//! One thing that happened in the control plane (a registration, a member transition, a
//! config change, a reload), as every subsystem reports it; the UI keeps the log of them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One thing that happened, as the control plane reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    /// Epoch milliseconds when it happened.
    #[serde(rename = "time")]
    pub time_ms: u64,
    /// What happened: `started`, `online`, `offline`, `expired`, `member-up`, `member-down`,
    /// `config-changed`, `reloaded`, `reload-failed`, `rejected`, `haproxy-restarted`,
    /// `version-switched`. Unknown verbs are shown as they are.
    pub verb: String,
    /// What it happened to: a registration id, `backend/<key>/<server>`, `haproxy`, ...
    pub object: String,
    /// Verb-specific fields, e.g. `check_status`, `diff`, `reason`, `duration_ms`, `error`.
    #[serde(default)]
    pub detail: Value,
}

impl Activity {
    /// An activity stamped with the current time.
    pub fn now(verb: impl Into<String>, object: impl Into<String>, detail: Value) -> Activity {
        Activity {
            time_ms: now_ms(),
            verb: verb.into(),
            object: object.into(),
            detail,
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
