//! The master CLI's `show proc`: the master (with its reload and failed-reload counters), the
//! current workers, and old workers still finishing their connections after a reload.

use super::ParseError;
use std::time::Duration;

use nom::IResult;
use nom::bytes::complete::{tag, take_till1};
use nom::character::complete::{char, space0, space1, u32 as dec_u32, u64 as dec_u64};
use nom::combinator::{opt, rest};
use nom::sequence::{delimited, preceded, terminated, tuple};

const WHAT: &str = "show proc";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterProc {
    pub pid: u32,
    /// Reloads since the master started.
    pub reloads: u32,
    /// Consecutive failed reloads; a successful reload resets it to 0.
    pub failed_reloads: u32,
    pub uptime: Option<Duration>,
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerProc {
    pub pid: u32,
    /// How many reloads this worker has lived through (0 for the newest worker).
    pub reloads: u32,
    pub uptime: Option<Duration>,
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcList {
    pub master: MasterProc,
    /// The workers serving the current configuration (one, without `nbproc`).
    pub workers: Vec<WorkerProc>,
    /// Workers of earlier configurations that are still draining.
    pub old_workers: Vec<WorkerProc>,
}

impl ProcList {
    /// The newest current worker.
    pub fn current_worker(&self) -> Option<&WorkerProc> {
        self.workers.iter().min_by_key(|worker| worker.reloads)
    }

    /// Every worker PID, current and old.
    pub fn all_worker_pids(&self) -> Vec<u32> {
        self.workers
            .iter()
            .chain(&self.old_workers)
            .map(|worker| worker.pid)
            .collect()
    }
}

/// One process line: `<pid> <type> <reloads> [failed: N] <uptime> <version>`.
struct ProcLine<'a> {
    pid: u32,
    kind: &'a str,
    reloads: u32,
    failed: Option<u32>,
    uptime: &'a str,
    version: &'a str,
}

fn word(input: &str) -> IResult<&str, &str> {
    take_till1(|c: char| c.is_whitespace())(input)
}

fn proc_line(input: &str) -> IResult<&str, ProcLine<'_>> {
    let failed = delimited(
        tag("[failed:"),
        preceded(space0, dec_u32),
        preceded(space0, char(']')),
    );
    let (input, (pid, _, kind, _, reloads, failed, _, uptime, version)) = tuple((
        dec_u32,
        space1,
        word,
        space1,
        dec_u32,
        opt(preceded(space1, failed)),
        space1,
        word,
        preceded(space0, rest),
    ))(input)?;
    Ok((
        input,
        ProcLine {
            pid,
            kind,
            reloads,
            failed,
            uptime,
            version: version.trim(),
        },
    ))
}

/// `0d00h00m02s` (days, hours, minutes, seconds).
pub(crate) fn parse_uptime(text: &str) -> Option<Duration> {
    fn unit<'a>(suffix: char) -> impl FnMut(&'a str) -> IResult<&'a str, u64> {
        terminated(dec_u64, char(suffix))
    }
    let parsed: IResult<&str, (u64, u64, u64, u64)> =
        tuple((unit('d'), unit('h'), unit('m'), unit('s')))(text);
    let (remaining, (days, hours, minutes, seconds)) = parsed.ok()?;
    if !remaining.is_empty() {
        return None;
    }
    let total = days
        .checked_mul(86_400)?
        .checked_add(hours.checked_mul(3600)?)?
        .checked_add(minutes.checked_mul(60)?)?
        .checked_add(seconds)?;
    Some(Duration::from_secs(total))
}

#[derive(Clone, Copy, PartialEq)]
enum Section {
    Top,
    Workers,
    OldWorkers,
    /// `# programs` and anything newer we do not know: lines are skipped.
    Other,
}

pub fn parse_show_proc(text: &str) -> Result<ProcList, ParseError> {
    let mut master = None;
    let mut workers = Vec::new();
    let mut old_workers = Vec::new();
    let mut section = Section::Top;

    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            let comment = comment.trim();
            section = match comment {
                "workers" => Section::Workers,
                "old workers" => Section::OldWorkers,
                _ if comment.starts_with('<') => section, // the column header
                _ => Section::Other,
            };
            continue;
        }
        if section == Section::Other {
            continue;
        }
        let (_, parsed) = proc_line(trimmed).map_err(|_| {
            ParseError::new(
                WHAT,
                line_number,
                format!("unrecognised process line {line:?}"),
            )
        })?;
        let uptime = parse_uptime(parsed.uptime);
        let version = Some(parsed.version.to_owned()).filter(|v| !v.is_empty());
        if parsed.kind == "master" {
            master = Some(MasterProc {
                pid: parsed.pid,
                reloads: parsed.reloads,
                failed_reloads: parsed.failed.unwrap_or(0),
                uptime,
                version,
            });
            continue;
        }
        let worker = WorkerProc {
            pid: parsed.pid,
            reloads: parsed.reloads,
            uptime,
            version,
        };
        match section {
            Section::OldWorkers => old_workers.push(worker),
            Section::Workers => workers.push(worker),
            Section::Top | Section::Other => {
                return Err(ParseError::new(
                    WHAT,
                    line_number,
                    format!("{} process outside a section", parsed.kind),
                ));
            }
        }
    }

    let master = master.ok_or_else(|| ParseError::new(WHAT, 0, "no master line"))?;
    Ok(ProcList {
        master,
        workers,
        old_workers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER_RELOAD: &str = "\
#<PID>          <type>          <reloads>       <uptime>        <version>      
11834           master          1 [failed: 0]   0d00h00m28s     2.6.12-1+deb12u4
# workers
11978           worker          0               0d00h00m00s     2.6.12-1+deb12u4
# old workers
11837           worker          1               0d00h00m28s     2.6.12-1+deb12u4
# programs

";

    /// master pid, reloads, failed reloads, worker pids, old worker pids
    type Summary = (u32, u32, u32, Vec<u32>, Vec<u32>);

    /// The summary, or the line number of the error.
    fn check(input: &str, expected: Result<Summary, usize>) {
        let got = parse_show_proc(input).map(|procs| {
            (
                procs.master.pid,
                procs.master.reloads,
                procs.master.failed_reloads,
                procs.workers.iter().map(|w| w.pid).collect::<Vec<_>>(),
                procs.old_workers.iter().map(|w| w.pid).collect::<Vec<_>>(),
            )
        });
        match (got, expected) {
            (Ok(got), Ok(expected)) => assert_eq!(got, expected, "{input}"),
            (Err(err), Err(line)) => assert_eq!(err.line, line, "{err}"),
            (got, expected) => panic!("{input}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn sections_and_counters() {
        check(AFTER_RELOAD, Ok((11834, 1, 0, vec![11978], vec![11837])));
        check(
            "#<PID> <type> <reloads> <uptime> <version>\n1 master 4 [failed: 1] 0d00h01m06s 2.6.12\n# workers\n2 worker 1 0d00h00m19s 2.6.12\n# programs\n3 myprog 0 0d00h00m19s -\n",
            Ok((1, 4, 1, vec![2], vec![])),
        );
        check("", Err(0));
        check("# workers\n2 worker 0 0d00h00m00s 2.6\n", Err(0));
        check(
            "1 master 0 [failed: 0] 0d 2.6\n# workers\nnot a line\n",
            Err(3),
        );
        check("2 worker 0 0d00h00m00s 2.6\n", Err(1));
    }

    #[test]
    fn uptime_and_current_worker() {
        let procs = parse_show_proc(AFTER_RELOAD).unwrap();
        assert_eq!(procs.master.uptime, Some(Duration::from_secs(28)));
        assert_eq!(procs.master.version.as_deref(), Some("2.6.12-1+deb12u4"));
        assert_eq!(procs.current_worker().map(|w| w.pid), Some(11978));
        assert_eq!(procs.all_worker_pids(), vec![11978, 11837]);
        assert_eq!(
            parse_uptime("1d02h03m04s"),
            Some(Duration::from_secs(93_784))
        );
        assert_eq!(parse_uptime("0d00h00m02sX"), None);
        assert_eq!(parse_uptime("99999999999999999999d00h00m00s"), None);
    }
}
