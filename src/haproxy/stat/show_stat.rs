//! `show stat`: the CSV statistics table (frontends, backends, servers, listeners), read by
//! header name so the ~100 columns of 2.6 and any added later are tolerated.

use super::ParseError;
use super::columns::{Columns, Row, csv_fields};
use super::server_state_codes::CheckStatus;

const WHAT: &str = "show stat";

/// The `type` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyKind {
    Frontend,
    Backend,
    Server,
    /// A listening socket (only with `option socket-stats`).
    Listener,
}

/// The first word of the `status` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatStatus {
    /// `UP`, or `UP 1/3` (up, failing checks).
    Up,
    /// `DOWN`, or `DOWN 1/2` (down, passing checks).
    Down,
    /// `MAINT`, `MAINT (via be/srv)`, `MAINT (resolution)`.
    Maint,
    Drain,
    /// Up, but a check asked for no new traffic (e.g. 404 with `disable-on-404`).
    NoLb,
    /// Up without health checks.
    NoCheck,
    /// A frontend or listener accepting connections.
    Open,
    Full,
    Stopped,
    Other,
}

/// One row of `show stat`. Counters are `None` where HAProxy leaves the field empty (for
/// example `weight` on a frontend). Times are in milliseconds unless the name says seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatRow {
    pub pxname: String,
    pub svname: String,
    pub kind: ProxyKind,
    /// Raw status text, e.g. `UP`, `DOWN 1/2`, `MAINT`, `no check`, `OPEN`.
    pub status: Option<String>,
    pub weight: Option<u64>,
    pub active_servers: Option<u64>,
    pub backup_servers: Option<u64>,
    pub qcur: Option<u64>,
    pub qmax: Option<u64>,
    pub scur: Option<u64>,
    pub smax: Option<u64>,
    pub slim: Option<u64>,
    pub stot: Option<u64>,
    pub bin: Option<u64>,
    pub bout: Option<u64>,
    pub ereq: Option<u64>,
    pub econ: Option<u64>,
    pub eresp: Option<u64>,
    pub chkfail: Option<u64>,
    pub chkdown: Option<u64>,
    /// Seconds since the last UP/DOWN transition.
    pub lastchg_secs: Option<u64>,
    /// Seconds spent down in total.
    pub downtime_secs: Option<u64>,
    pub proxy_id: Option<u32>,
    pub server_id: Option<u32>,
    /// Sessions per second over the last second.
    pub rate: Option<u64>,
    pub rate_max: Option<u64>,
    /// HTTP requests per second over the last second (frontends).
    pub req_rate: Option<u64>,
    pub req_tot: Option<u64>,
    pub hrsp_1xx: Option<u64>,
    pub hrsp_2xx: Option<u64>,
    pub hrsp_3xx: Option<u64>,
    pub hrsp_4xx: Option<u64>,
    pub hrsp_5xx: Option<u64>,
    pub hrsp_other: Option<u64>,
    /// Last check result word, e.g. `L4OK`, `* L7OK` while a check runs.
    pub check_status: Option<String>,
    /// HTTP status of the last layer-7 check.
    pub check_code: Option<u32>,
    pub check_duration_ms: Option<u64>,
    /// Free text of the last check, e.g. `Connection refused`.
    pub last_chk: Option<String>,
    pub check_desc: Option<String>,
    pub check_rise: Option<u32>,
    pub check_fall: Option<u32>,
    pub check_health: Option<u32>,
    /// Seconds since the last session was handed to this server; `-1` for never.
    pub lastsess_secs: Option<i64>,
    pub qtime_ms: Option<u64>,
    pub ctime_ms: Option<u64>,
    pub rtime_ms: Option<u64>,
    pub ttime_ms: Option<u64>,
    /// `ip:port` of a server.
    pub addr: Option<String>,
    pub mode: Option<String>,
    /// Balance algorithm (backends).
    pub algo: Option<String>,
}

impl StatRow {
    pub fn status_kind(&self) -> Option<StatStatus> {
        let status = self.status.as_deref()?;
        let word = status.split_whitespace().next().unwrap_or("");
        Some(match word {
            "UP" => StatStatus::Up,
            "DOWN" => StatStatus::Down,
            "MAINT" => StatStatus::Maint,
            "DRAIN" => StatStatus::Drain,
            "NOLB" => StatStatus::NoLb,
            "no" if status == "no check" => StatStatus::NoCheck,
            "OPEN" => StatStatus::Open,
            "FULL" => StatStatus::Full,
            "STOP" | "STOPPED" => StatStatus::Stopped,
            _ => StatStatus::Other,
        })
    }

    /// The last check's status, typed.
    pub fn check(&self) -> Option<CheckStatus> {
        CheckStatus::from_stat_name(self.check_status.as_deref()?)
    }
}

pub fn parse_show_stat(text: &str) -> Result<Vec<StatRow>, ParseError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line))
        .filter(|(_, line)| !line.trim().is_empty());

    let (header_line, header) = lines
        .next()
        .ok_or_else(|| ParseError::new(WHAT, 0, "empty output"))?;
    let names = header.strip_prefix("# ").ok_or_else(|| {
        ParseError::new(
            WHAT,
            header_line,
            format!("expected a `# pxname,...` header, got {header:?}"),
        )
    })?;
    let names = csv_fields(names).map_err(|reason| ParseError::new(WHAT, header_line, reason))?;
    let columns = Columns::new(WHAT, names.iter().map(|name| name.as_ref()));
    columns.require(&["pxname", "svname"], header_line)?;

    lines
        .map(|(line_number, line)| {
            let fields =
                csv_fields(line).map_err(|reason| ParseError::new(WHAT, line_number, reason))?;
            stat_row(&columns.row(line_number, &fields))
        })
        .collect()
}

fn stat_row(row: &Row<'_>) -> Result<StatRow, ParseError> {
    let svname = row.required_text("svname")?;
    let kind = match row.number::<u8>("type")? {
        Some(0) => ProxyKind::Frontend,
        Some(1) => ProxyKind::Backend,
        Some(2) => ProxyKind::Server,
        Some(3) => ProxyKind::Listener,
        Some(other) => return Err(row.error(format!("unknown `type` {other}"))),
        // Older outputs without `type`: the pseudo server names tell.
        None => match svname.as_str() {
            "FRONTEND" => ProxyKind::Frontend,
            "BACKEND" => ProxyKind::Backend,
            _ => ProxyKind::Server,
        },
    };
    Ok(StatRow {
        pxname: row.required_text("pxname")?,
        svname,
        kind,
        status: row.text("status"),
        weight: row.number("weight")?,
        active_servers: row.number("act")?,
        backup_servers: row.number("bck")?,
        qcur: row.number("qcur")?,
        qmax: row.number("qmax")?,
        scur: row.number("scur")?,
        smax: row.number("smax")?,
        slim: row.number("slim")?,
        stot: row.number("stot")?,
        bin: row.number("bin")?,
        bout: row.number("bout")?,
        ereq: row.number("ereq")?,
        econ: row.number("econ")?,
        eresp: row.number("eresp")?,
        chkfail: row.number("chkfail")?,
        chkdown: row.number("chkdown")?,
        lastchg_secs: row.seconds_since("lastchg")?,
        downtime_secs: row.number("downtime")?,
        proxy_id: row.number("iid")?,
        server_id: row.number("sid")?,
        rate: row.number("rate")?,
        rate_max: row.number("rate_max")?,
        req_rate: row.number("req_rate")?,
        req_tot: row.number("req_tot")?,
        hrsp_1xx: row.number("hrsp_1xx")?,
        hrsp_2xx: row.number("hrsp_2xx")?,
        hrsp_3xx: row.number("hrsp_3xx")?,
        hrsp_4xx: row.number("hrsp_4xx")?,
        hrsp_5xx: row.number("hrsp_5xx")?,
        hrsp_other: row.number("hrsp_other")?,
        check_status: row.text("check_status"),
        check_code: row.number("check_code")?,
        check_duration_ms: row.number("check_duration")?,
        last_chk: row.text("last_chk"),
        check_desc: row.text("check_desc"),
        check_rise: row.number("check_rise")?,
        check_fall: row.number("check_fall")?,
        check_health: row.number("check_health")?,
        lastsess_secs: row.number("lastsess")?,
        qtime_ms: row.number("qtime")?,
        ctime_ms: row.number("ctime")?,
        rtime_ms: row.number("rtime")?,
        ttime_ms: row.number("ttime")?,
        addr: row.text("addr"),
        mode: row.text("mode"),
        algo: row.text("algo"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,\n";

    type Summary = (
        String,
        String,
        ProxyKind,
        Option<StatStatus>,
        Option<CheckStatus>,
    );

    type Expected<'a> = (
        &'a str,
        &'a str,
        ProxyKind,
        Option<StatStatus>,
        Option<CheckStatus>,
    );

    /// The rows, or the line number of the error.
    fn check(input: &str, expected: Result<Vec<Expected<'_>>, usize>) {
        let got: Result<Vec<Summary>, ParseError> = parse_show_stat(input).map(|rows| {
            rows.iter()
                .map(|r| {
                    (
                        r.pxname.clone(),
                        r.svname.clone(),
                        r.kind,
                        r.status_kind(),
                        r.check(),
                    )
                })
                .collect()
        });
        match (got, expected) {
            (Ok(got), Ok(expected)) => {
                let expected: Vec<Summary> = expected
                    .into_iter()
                    .map(|(p, s, k, st, c)| (p.to_owned(), s.to_owned(), k, st, c))
                    .collect();
                assert_eq!(got, expected, "{input}");
            }
            (Err(err), Err(line)) => assert_eq!(err.line, line, "{err}"),
            (got, expected) => panic!("{input}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn rows_kinds_and_statuses() {
        check(
            &format!(
                "{HEADER}fe,FRONTEND,,,0,0,1000,0,0,0,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,0,0,0,,,,0,0,0,0,0,0,,0,0,0,,,0,0,0,0,,,,,,,,,,,,,,,,,,,,,http,,\n\
be,down1,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,1,1,0,1,1,1,1,,1,3,2,,0,,2,0,,0,L4CON,,0,0,0,0,0,0,0,,,,0,0,0,,,,,-1,Connection refused,,0,0,0,0,,,,Layer4 connection problem,,1,2,0,,,,127.0.0.1:18199,,http,,\n\
be,up1,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP 1/3,1,1,0,0,0,2,0,,1,3,1,,0,,2,0,,0,* L4OK,,0,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,Layer4 check passed,,1,2,2,,,,127.0.0.1:18182,,http,,\n\
be,BACKEND,0,0,0,0,100,0,0,0,0,0,,0,0,0,0,UP,1,1,0,,0,2,0,,1,3,0,,0,,1,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,0,0,0,0,-1,,,0,0,0,0,,,,,,,,,,,,,,http,roundrobin,\n"
            ),
            Ok(vec![
                (
                    "fe",
                    "FRONTEND",
                    ProxyKind::Frontend,
                    Some(StatStatus::Open),
                    None,
                ),
                (
                    "be",
                    "down1",
                    ProxyKind::Server,
                    Some(StatStatus::Down),
                    Some(CheckStatus::L4Con),
                ),
                (
                    "be",
                    "up1",
                    ProxyKind::Server,
                    Some(StatStatus::Up),
                    Some(CheckStatus::L4Ok),
                ),
                (
                    "be",
                    "BACKEND",
                    ProxyKind::Backend,
                    Some(StatStatus::Up),
                    None,
                ),
            ]),
        );
        // Only the two required columns; no `type`: inferred from the pseudo names.
        check(
            "# pxname,svname,status\nfe,FRONTEND,OPEN\nbe,s1,no check\nbe,s2,MAINT (via be/s1)\n",
            Ok(vec![
                (
                    "fe",
                    "FRONTEND",
                    ProxyKind::Frontend,
                    Some(StatStatus::Open),
                    None,
                ),
                (
                    "be",
                    "s1",
                    ProxyKind::Server,
                    Some(StatStatus::NoCheck),
                    None,
                ),
                ("be", "s2", ProxyKind::Server, Some(StatStatus::Maint), None),
            ]),
        );
        check(HEADER, Ok(vec![]));
        check("", Err(0));
        check("pxname,svname\n", Err(1));
        check("# pxname,status\n", Err(1));
        check("# pxname,svname,scur\nbe,s1,lots\n", Err(2));
        check("# pxname,svname,type\nbe,s1,9\n", Err(2));
        check("# pxname,svname\nbe,\"s1\n", Err(2));
        check("# pxname,svname\n,s1\n", Err(2));
    }

    #[test]
    fn a_change_stamped_a_moment_ago_on_another_thread_is_now() {
        // HAProxy 2.6 can print "-1 s ago" right after a reload.
        let rows = parse_show_stat("# pxname,svname,lastchg\nbe,s1,-1\n").unwrap();
        assert_eq!(rows[0].lastchg_secs, Some(0));
    }

    #[test]
    fn typed_fields() {
        let rows = parse_show_stat(&format!(
            "{HEADER}be,down1,0,0,3,7,,11,100,200,,0,,5,0,0,0,DOWN,10,1,0,1,1,12,34,,1,3,2,,0,,2,0,,0,L7STS,503,4,0,0,0,0,1,0,,,,0,0,0,,,,,-1,\"HTTP status check returned code <3C>503<3E>, bad\",,0,1,2,3,,,,Layer7 wrong status,,2,3,0,,,,127.0.0.1:18199,,http,,\n"
        ))
        .unwrap();
        let row = &rows[0];
        assert_eq!((row.scur, row.smax, row.stot), (Some(3), Some(7), Some(11)));
        assert_eq!(
            (row.weight, row.econ, row.lastchg_secs),
            (Some(10), Some(5), Some(12))
        );
        assert_eq!(
            (row.check_code, row.check_duration_ms),
            (Some(503), Some(4))
        );
        assert_eq!(row.check(), Some(CheckStatus::L7Sts));
        assert_eq!(
            row.last_chk.as_deref(),
            Some("HTTP status check returned code <3C>503<3E>, bad")
        );
        assert_eq!(row.lastsess_secs, Some(-1));
        assert_eq!((row.ctime_ms, row.ttime_ms), (Some(1), Some(3)));
        assert_eq!(row.addr.as_deref(), Some("127.0.0.1:18199"));
        assert_eq!((row.check_rise, row.check_fall), (Some(2), Some(3)));
    }
}
