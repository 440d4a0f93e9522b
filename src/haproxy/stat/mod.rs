//! Total parsers for the text HAProxy's CLIs print: `show stat` (CSV), `show servers state`,
//! `show servers conn`, `show info`, the master's `show proc`, and health-check ring events.
//!
//! Every parser finds its columns by header name, so extra or reordered columns from another
//! HAProxy version are tolerated; a missing optional column reads as `None`. A line that cannot
//! be understood is an error value naming the line and column, never a panic.

mod columns;
pub mod health_event;
pub mod server_state_codes;
pub mod servers_conn;
pub mod servers_state;
pub mod show_info;
pub mod show_proc;
pub mod show_stat;

pub use health_event::{HealthEvent, parse_health_event};
pub use server_state_codes::{
    AdminFlags, AdminState, CheckFlags, CheckResult, CheckStatus, OperationalState,
};
pub use servers_conn::{ServerConnRow, parse_servers_conn};
pub use servers_state::{ServerStateRow, parse_servers_state};
pub use show_info::{ShowInfo, parse_show_info};
pub use show_proc::{MasterProc, ProcList, WorkerProc, parse_show_proc};
pub use show_stat::{ProxyKind, StatRow, StatStatus, parse_show_stat};

/// Why an output could not be parsed. `line` is 1-based; 0 means the output as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: line {line}: {reason}")]
pub struct ParseError {
    /// Which output was being parsed, e.g. `show stat`.
    pub what: &'static str,
    pub line: usize,
    pub reason: String,
}

impl ParseError {
    pub(crate) fn new(what: &'static str, line: usize, reason: impl Into<String>) -> Self {
        ParseError {
            what,
            line,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod never_panic {
    use super::*;
    use proptest::prelude::*;

    /// Mostly the characters these outputs are made of, so inputs get past the header checks.
    fn output_like() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just("# pxname,svname,type,scur,status,check_status\n".to_owned()),
                Just("1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_port\n".to_owned()),
                Just("# bkname/svname bkid/svid used_cur idle_cur\n".to_owned()),
                Just("1 master 0 [failed: 0] 0d00h00m01s 2.6\n# workers\n".to_owned()),
                "[a-z0-9/,.:\\-\" \\[\\]#\n]{0,40}",
                any::<String>(),
            ],
            0..8,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #[test]
        fn parsers_are_total(text in output_like()) {
            let _ = parse_show_stat(&text);
            let _ = parse_servers_state(&text);
            let _ = parse_servers_conn(&text);
            let _ = parse_show_proc(&text);
            let _ = parse_show_info(&text);
        }
    }
}
