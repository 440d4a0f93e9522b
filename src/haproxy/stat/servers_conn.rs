//! `show servers conn [<backend>]`: per-server connection counts, which tell when a draining
//! server has no request in flight any more and can be deleted.

use super::ParseError;
use super::columns::{Columns, space_separated};

const WHAT: &str = "show servers conn";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConnRow {
    pub backend: String,
    pub server: String,
    pub backend_id: Option<u32>,
    pub server_id: Option<u32>,
    /// Connections currently used by streams: must be 0 before `del server`.
    pub used_cur: u64,
    pub used_max: Option<u64>,
    pub need_est: Option<u64>,
    pub unsafe_idle: Option<u64>,
    pub safe_idle: Option<u64>,
    /// Idle connections kept for reuse (they can also block `del server`).
    pub idle_cur: Option<u64>,
}

pub fn parse_servers_conn(text: &str) -> Result<Vec<ServerConnRow>, ParseError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line))
        .filter(|(_, line)| !line.trim().is_empty());

    let (header_line, header) = lines
        .next()
        .ok_or_else(|| ParseError::new(WHAT, 0, "empty output"))?;
    let names = header.strip_prefix('#').ok_or_else(|| {
        ParseError::new(
            WHAT,
            header_line,
            format!("expected a `#` header, got {header:?}"),
        )
    })?;
    let names = space_separated(names);
    let columns = Columns::new(WHAT, names.iter().map(|name| name.as_ref()));
    columns.require(&["bkname/svname", "used_cur"], header_line)?;

    lines
        .map(|(line_number, line)| {
            let fields = space_separated(line);
            let row = columns.row(line_number, &fields);
            let name = row.required_text("bkname/svname")?;
            let (backend, server) = name
                .split_once('/')
                .ok_or_else(|| row.error(format!("expected <backend>/<server>, got {name:?}")))?;
            let (backend_id, server_id) = match row.text("bkid/svid") {
                None => (None, None),
                Some(ids) => {
                    let (b, s) = ids.split_once('/').unwrap_or((ids.as_str(), ""));
                    (b.parse().ok(), s.parse().ok())
                }
            };
            Ok(ServerConnRow {
                backend: backend.to_owned(),
                server: server.to_owned(),
                backend_id,
                server_id,
                used_cur: row.required_number("used_cur")?,
                used_max: row.number("used_max")?,
                need_est: row.number("need_est")?,
                unsafe_idle: row.number("unsafe_nb")?,
                safe_idle: row.number("safe_nb")?,
                idle_cur: row.number("idle_cur")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "# bkname/svname bkid/svid addr port - purge_delay used_cur used_max need_est unsafe_nb safe_nb idle_lim idle_cur idle_per_thr[2]\n";

    /// backend, server, used_cur, idle_cur
    type Summary<'a> = (&'a str, &'a str, u64, Option<u64>);

    /// The rows, or the line number of the error.
    fn check(input: &str, expected: Result<Vec<Summary<'_>>, usize>) {
        let got = parse_servers_conn(input).map(|rows| {
            rows.into_iter()
                .map(|r| (r.backend, r.server, r.used_cur, r.idle_cur))
                .collect::<Vec<_>>()
        });
        match (got, expected) {
            (Ok(got), Ok(expected)) => {
                let expected: Vec<_> = expected
                    .into_iter()
                    .map(|(b, s, u, i)| (b.to_owned(), s.to_owned(), u, i))
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
                "{HEADER}be/up1 3/1 127.0.0.1 18182 - 5000 0 1 1 0 0 -1 0 0 0\n\
                 be/slow 3/2 127.0.0.1 18199 - 5000 1 1 1 0 0 -1 2 0 0\n\n"
            ),
            Ok(vec![("be", "up1", 0, Some(0)), ("be", "slow", 1, Some(2))]),
        );
        check(HEADER, Ok(vec![]));
        check("", Err(0));
        check("Can't find backend.\n", Err(1));
        check(&format!("{HEADER}noslash 3/1 x 1 - 5000 0\n"), Err(2));
        check(&format!("{HEADER}be/s 3/1 x 1 - 5000 many\n"), Err(2));
    }
}
