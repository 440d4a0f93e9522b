//! `show servers state [<backend>]`: the cheap per-server state dump (about 5x cheaper than
//! `show stat`), and the exact format of the server-state file HAProxy reloads from.

use super::ParseError;
use super::columns::{Columns, space_separated};
use super::server_state_codes::{
    AdminFlags, AdminState, CheckFlags, CheckResult, CheckStatus, OperationalState,
};
use std::net::IpAddr;
use std::time::Duration;

const WHAT: &str = "show servers state";

/// One server, as `show servers state` (format version 1) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStateRow {
    pub backend_id: u32,
    pub backend: String,
    pub server_id: u32,
    pub server: String,
    /// `None` for a server without an address (an unresolved FQDN).
    pub addr: Option<IpAddr>,
    pub port: Option<u16>,
    pub op_state: OperationalState,
    pub admin_flags: AdminFlags,
    /// Current (user) weight.
    pub weight: u32,
    /// Initial weight from the config or `add server`.
    pub initial_weight: u32,
    pub since_last_change: Duration,
    pub check_status: CheckStatus,
    pub check_result: CheckResult,
    /// Health counter: up when >= rise, down when 0.
    pub check_health: u32,
    pub check_flags: CheckFlags,
    pub agent_flags: CheckFlags,
    pub fqdn: Option<String>,
    pub uses_ssl: bool,
    pub check_port: Option<u16>,
}

impl ServerStateRow {
    pub fn admin_state(&self) -> AdminState {
        self.admin_flags.effective()
    }
}

/// Parses the whole output: a version line, a `# `-prefixed header, one line per server.
pub fn parse_servers_state(text: &str) -> Result<Vec<ServerStateRow>, ParseError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line))
        .filter(|(_, line)| !line.trim().is_empty());

    let (version_line, version) = lines
        .next()
        .ok_or_else(|| ParseError::new(WHAT, 0, "empty output"))?;
    if version.trim().parse::<u32>().is_err() {
        return Err(ParseError::new(
            WHAT,
            version_line,
            format!("expected a format version number, got {version:?}"),
        ));
    }

    let (header_line, header) = lines
        .next()
        .ok_or_else(|| ParseError::new(WHAT, version_line, "no header line"))?;
    let names = header.strip_prefix('#').ok_or_else(|| {
        ParseError::new(
            WHAT,
            header_line,
            format!("expected a `#` header, got {header:?}"),
        )
    })?;
    let names = space_separated(names);
    let columns = Columns::new(WHAT, names.iter().map(|name| name.as_ref()));
    columns.require(
        &[
            "be_id",
            "be_name",
            "srv_id",
            "srv_name",
            "srv_op_state",
            "srv_admin_state",
        ],
        header_line,
    )?;

    lines
        .map(|(line_number, line)| {
            let fields = space_separated(line);
            let row = columns.row(line_number, &fields);
            let addr = match row.text("srv_addr") {
                None => None,
                Some(addr) => Some(addr.parse::<IpAddr>().map_err(|_| {
                    row.error(format!("`srv_addr` is not an IP address: {addr:?}"))
                })?),
            };
            Ok(ServerStateRow {
                backend_id: row.required_number("be_id")?,
                backend: row.required_text("be_name")?,
                server_id: row.required_number("srv_id")?,
                server: row.required_text("srv_name")?,
                addr,
                // Port 0 means "same as the client's": no port of its own.
                port: row.number::<u16>("srv_port")?.filter(|port| *port != 0),
                op_state: OperationalState::from(row.required_number::<u8>("srv_op_state")?),
                admin_flags: AdminFlags(row.required_number("srv_admin_state")?),
                weight: row.number("srv_uweight")?.unwrap_or(0),
                initial_weight: row.number("srv_iweight")?.unwrap_or(0),
                since_last_change: Duration::from_secs(
                    row.seconds_since("srv_time_since_last_change")?
                        .unwrap_or(0),
                ),
                check_status: CheckStatus::from(row.number::<u8>("srv_check_status")?.unwrap_or(0)),
                check_result: CheckResult::from(row.number::<u8>("srv_check_result")?.unwrap_or(0)),
                check_health: row.number("srv_check_health")?.unwrap_or(0),
                check_flags: CheckFlags(row.number("srv_check_state")?.unwrap_or(0)),
                agent_flags: CheckFlags(row.number("srv_agent_state")?.unwrap_or(0)),
                fqdn: row.text("srv_fqdn"),
                uses_ssl: row.number::<u8>("srv_use_ssl")?.unwrap_or(0) != 0,
                check_port: row
                    .number::<u16>("srv_check_port")?
                    .filter(|port| *port != 0),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n";

    /// backend, server, admin state, up, port
    type Summary<'a> = (&'a str, &'a str, AdminState, bool, Option<u16>);

    /// The rows, or the line number of the error.
    fn check(input: &str, expected: Result<Vec<Summary<'_>>, usize>) {
        let got = parse_servers_state(input).map(|rows| {
            rows.iter()
                .map(|r| {
                    (
                        r.backend.clone(),
                        r.server.clone(),
                        r.admin_state(),
                        r.op_state.is_up(),
                        r.port,
                    )
                })
                .collect::<Vec<_>>()
        });
        match (got, expected) {
            (Ok(got), Ok(expected)) => {
                let expected: Vec<_> = expected
                    .into_iter()
                    .map(|(b, s, a, u, p)| (b.to_owned(), s.to_owned(), a, u, p))
                    .collect();
                assert_eq!(got, expected, "{input}");
            }
            (Err(err), Err(line)) => assert_eq!(err.line, line, "{err}"),
            (got, expected) => panic!("{input}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn rows_and_errors() {
        check(
            &format!(
                "{HEADER}3 be 1 up1 127.0.0.1 2 0 1 1 2 6 3 2 6 0 0 0 - 18182 - 0 0 - - 0\n\
                 3 be 3 m1 127.0.0.1 2 12 1 1 0 1 0 1 6 0 0 0 - 18182 - 0 0 - - 0\n\n"
            ),
            Ok(vec![
                ("be", "up1", AdminState::Ready, true, Some(18182)),
                ("be", "m1", AdminState::Drain, true, Some(18182)),
            ]),
        );
        // Seen from HAProxy 2.6 right after a reload (suite shake on c5290c6): a change
        // "-1 s ago".
        check(
            &format!("{HEADER}3 be 1 up1 127.0.0.1 2 0 1 1 -1 6 3 4 6 0 0 0 - 18182 - 0 0 - - 0\n"),
            Ok(vec![("be", "up1", AdminState::Ready, true, Some(18182))]),
        );
        check(HEADER, Ok(vec![]));
        // Extra columns from a newer version and a short line are tolerated.
        check(
            "1\n# be_id be_name srv_id srv_name srv_op_state srv_admin_state future\n4 b 2 s 0 1 x\n4 b 3 t 2 0\n",
            Ok(vec![
                ("b", "s", AdminState::Maint, false, None),
                ("b", "t", AdminState::Ready, true, None),
            ]),
        );
        check("", Err(0));
        check("Can't find backend.\n", Err(1));
        check("1\nbe_id be_name\n", Err(2));
        check("1\n# be_id be_name\n", Err(2));
        check(&format!("{HEADER}3 be x up1\n"), Err(3));
        check(&format!("{HEADER}3 be 1 up1 not-an-ip 2 0\n"), Err(3));
    }
}
