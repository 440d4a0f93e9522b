//! The numeric server states HAProxy 2.6 prints in `show servers state` (and accepts back from
//! a server-state file), decoded into domain enums. Values are from HAProxy's `server-t.h` and
//! `check-t.h`; unknown values are kept, never rejected, so newer versions still parse.

use std::fmt;

/// The administrative state an operator (or this control plane) puts a server in, as set by
/// `set server <be>/<srv> state ready|drain|maint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdminState {
    /// Takes traffic (subject to health checks).
    Ready,
    /// Keeps existing and persistent sessions, takes no new ones.
    Drain,
    /// Takes no traffic; health checks are paused. Required before `del server`.
    Maint,
}

impl AdminState {
    /// The keyword `set server ... state` expects.
    pub fn keyword(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }
}

impl fmt::Display for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.keyword())
    }
}

/// `srv_admin_state`: a bit set (`SRV_ADMF_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AdminFlags(pub u16);

impl AdminFlags {
    /// Forced into maintenance (`set server ... state maint`, or `disabled` in the config).
    pub const FORCED_MAINT: u16 = 0x01;
    /// Inherited maintenance from a tracked server.
    pub const INHERITED_MAINT: u16 = 0x02;
    /// Marked `disabled` in the configuration (kept even after leaving maintenance).
    pub const CONFIG_MAINT: u16 = 0x04;
    pub const FORCED_DRAIN: u16 = 0x08;
    pub const INHERITED_DRAIN: u16 = 0x10;
    /// Maintenance because its address could not be resolved.
    pub const RESOLUTION_MAINT: u16 = 0x20;
    /// HAProxy's `SRV_ADMF_MAINT` mask: any maintenance except the config marker.
    const ANY_MAINT: u16 = Self::FORCED_MAINT | Self::INHERITED_MAINT | Self::RESOLUTION_MAINT;
    const ANY_DRAIN: u16 = Self::FORCED_DRAIN | Self::INHERITED_DRAIN;

    /// The effective state, as the stats page derives it: maint beats drain beats ready.
    pub fn effective(self) -> AdminState {
        if self.0 & Self::ANY_MAINT != 0 {
            AdminState::Maint
        } else if self.0 & Self::ANY_DRAIN != 0 {
            AdminState::Drain
        } else {
            AdminState::Ready
        }
    }
}

/// `srv_op_state`: what health checks (or their absence) made of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationalState {
    Stopped,
    /// Up but still in slowstart.
    Starting,
    Running,
    /// Up but soft-stopping (e.g. an HTTP check answered 404 with `disable-on-404`).
    Stopping,
    Other(u8),
}

impl From<u8> for OperationalState {
    fn from(code: u8) -> Self {
        match code {
            0 => OperationalState::Stopped,
            1 => OperationalState::Starting,
            2 => OperationalState::Running,
            3 => OperationalState::Stopping,
            other => OperationalState::Other(other),
        }
    }
}

impl OperationalState {
    /// Whether the server can take traffic as far as health goes.
    pub fn is_up(self) -> bool {
        matches!(
            self,
            OperationalState::Starting | OperationalState::Running | OperationalState::Stopping
        )
    }
}

/// The last health check's status (`HCHK_STATUS_*`); `show stat` prints the same as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckStatus {
    Unknown,
    /// Initialising: no check has completed yet.
    Init,
    Start,
    Checked,
    /// Traffic analysis (`observe`) saw too many errors.
    Hana,
    SockErr,
    L4Ok,
    L4Tout,
    L4Con,
    L6Ok,
    L6Tout,
    L6Rsp,
    L7Tout,
    L7Rsp,
    L57Data,
    L7Ok,
    /// Layer 7 check conditionally passed (e.g. 404 with `disable-on-404`).
    L7OkC,
    L7Sts,
    ProcErr,
    ProcTout,
    ProcOk,
    Other(u8),
}

const CHECK_STATUS_NAMES: &[(CheckStatus, &str)] = &[
    (CheckStatus::Unknown, "UNK"),
    (CheckStatus::Init, "INI"),
    (CheckStatus::Start, "START"),
    (CheckStatus::Checked, "CHECKED"),
    (CheckStatus::Hana, "HANA"),
    (CheckStatus::SockErr, "SOCKERR"),
    (CheckStatus::L4Ok, "L4OK"),
    (CheckStatus::L4Tout, "L4TOUT"),
    (CheckStatus::L4Con, "L4CON"),
    (CheckStatus::L6Ok, "L6OK"),
    (CheckStatus::L6Tout, "L6TOUT"),
    (CheckStatus::L6Rsp, "L6RSP"),
    (CheckStatus::L7Tout, "L7TOUT"),
    (CheckStatus::L7Rsp, "L7RSP"),
    (CheckStatus::L57Data, "L57DATA"),
    (CheckStatus::L7Ok, "L7OK"),
    (CheckStatus::L7OkC, "L7OKC"),
    (CheckStatus::L7Sts, "L7STS"),
    (CheckStatus::ProcErr, "PROCERR"),
    (CheckStatus::ProcTout, "PROCTOUT"),
    (CheckStatus::ProcOk, "PROCOK"),
];

impl From<u8> for CheckStatus {
    /// The numeric form of `show servers state` (the enum order of HAProxy 2.6).
    fn from(code: u8) -> Self {
        CHECK_STATUS_NAMES
            .get(usize::from(code))
            .map(|(status, _)| *status)
            .unwrap_or(CheckStatus::Other(code))
    }
}

impl CheckStatus {
    /// The text form of `show stat` (`check_status`), e.g. `L4OK`. A leading `* ` (check in
    /// progress) is ignored. Unknown words read as `None`.
    pub fn from_stat_name(name: &str) -> Option<CheckStatus> {
        let name = name.trim_start_matches("* ");
        CHECK_STATUS_NAMES
            .iter()
            .find(|(_, text)| *text == name)
            .map(|(status, _)| *status)
    }

    pub fn name(self) -> Option<&'static str> {
        CHECK_STATUS_NAMES
            .iter()
            .find(|(status, _)| *status == self)
            .map(|(_, text)| *text)
    }

    /// Whether the last check succeeded: the gate for putting a new server in service.
    pub fn passed(self) -> bool {
        matches!(
            self,
            CheckStatus::L4Ok
                | CheckStatus::L6Ok
                | CheckStatus::L7Ok
                | CheckStatus::L7OkC
                | CheckStatus::ProcOk
        )
    }
}

/// `srv_check_result` (`CHK_RES_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckResult {
    Unknown,
    Neutral,
    Failed,
    Passed,
    ConditionallyPassed,
    Other(u8),
}

impl From<u8> for CheckResult {
    fn from(code: u8) -> Self {
        match code {
            0 => CheckResult::Unknown,
            1 => CheckResult::Neutral,
            2 => CheckResult::Failed,
            3 => CheckResult::Passed,
            4 => CheckResult::ConditionallyPassed,
            other => CheckResult::Other(other),
        }
    }
}

/// `srv_check_state` / `srv_agent_state` (`CHK_ST_*` bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CheckFlags(pub u16);

impl CheckFlags {
    pub const IN_PROGRESS: u16 = 0x01;
    /// The server has `check` (or `agent-check`) configured.
    pub const CONFIGURED: u16 = 0x02;
    /// Administratively enabled (`enable health`).
    pub const ENABLED: u16 = 0x04;
    /// Paused because the server is in maintenance.
    pub const PAUSED: u16 = 0x08;

    pub fn configured(self) -> bool {
        self.0 & Self::CONFIGURED != 0
    }
    pub fn enabled(self) -> bool {
        self.0 & Self::ENABLED != 0
    }
    pub fn paused(self) -> bool {
        self.0 & Self::PAUSED != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_admin(flags: u16, expected: AdminState) {
        assert_eq!(AdminFlags(flags).effective(), expected, "{flags:#x}");
    }

    #[test]
    fn admin_flags_follow_haproxy_precedence() {
        check_admin(0, AdminState::Ready);
        check_admin(0x01, AdminState::Maint);
        // `disabled` in the config, then `state ready`: only the config marker remains.
        check_admin(0x04, AdminState::Ready);
        check_admin(0x05, AdminState::Maint);
        check_admin(0x0c, AdminState::Drain);
        check_admin(0x09, AdminState::Maint);
        check_admin(0x20, AdminState::Maint);
        check_admin(0x10, AdminState::Drain);
    }

    #[test]
    fn check_status_numbers_and_names_agree() {
        assert_eq!(CheckStatus::from(6), CheckStatus::L4Ok);
        assert_eq!(CheckStatus::from(8), CheckStatus::L4Con);
        assert_eq!(CheckStatus::from(15), CheckStatus::L7Ok);
        assert_eq!(CheckStatus::from(200), CheckStatus::Other(200));
        assert_eq!(CheckStatus::from_stat_name("L7OK"), Some(CheckStatus::L7Ok));
        assert_eq!(
            CheckStatus::from_stat_name("* L4CON"),
            Some(CheckStatus::L4Con)
        );
        assert_eq!(CheckStatus::from_stat_name("nonsense"), None);
        for code in 0..=20u8 {
            let status = CheckStatus::from(code);
            let name = status.name().unwrap();
            assert_eq!(CheckStatus::from_stat_name(name), Some(status));
        }
        assert!(CheckStatus::L4Ok.passed() && !CheckStatus::L4Con.passed());
    }
}
