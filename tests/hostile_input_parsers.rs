//! The HAProxy output parsers (`show stat`, `show servers state`, `show servers conn`,
//! `show info`, `show proc`) fed arbitrary bytes and field-level mutations of real captured
//! outputs: huge, negative, empty and non-numeric values in every column, lines duplicated,
//! dropped, cut or joined, separators swapped. They must return a value or an error, never
//! panic; and the unmutated fixtures must still parse (so the mutations start from real input).

#![allow(clippy::unwrap_used)] // Test code: a panic here is a test failure.

use proptest::prelude::*;
use thalassa::haproxy::stat::{
    parse_servers_conn, parse_servers_state, parse_show_info, parse_show_proc, parse_show_stat,
};

const FIXTURES: &[&str] = &[
    "show_stat.csv",
    "servers_state.txt",
    "servers_state_web.txt",
    "servers_conn_web.txt",
    "show_info.txt",
    "show_proc.txt",
    "show_proc_failed.txt",
    "show_proc_old_worker.txt",
];

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/haproxy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parse_all(text: &str) {
    let _ = parse_show_stat(text);
    let _ = parse_servers_state(text);
    let _ = parse_servers_conn(text);
    let _ = parse_show_info(text);
    let _ = parse_show_proc(text);
}

/// Values that break number parsing and column counting.
fn hostile_field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("-1".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("99999999999999999999999999999".to_owned()),
        Just("-9223372036854775809".to_owned()),
        Just("1e400".to_owned()),
        Just("NaN".to_owned()),
        Just("0x10".to_owned()),
        Just("é".to_owned()),
        Just(",,,".to_owned()),
        Just("   ".to_owned()),
        Just("\"".to_owned()),
        Just("[".to_owned()),
        Just("#".to_owned()),
        "[ -~]{0,12}",
        any::<String>(),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Replace field `field` of line `line` (split on `,` or spaces, whichever the line uses).
    Field {
        line: usize,
        field: usize,
        value: String,
    },
    DuplicateLine(usize),
    DropLine(usize),
    JoinWithNext(usize),
    CutLine {
        line: usize,
        at: usize,
    },
    SwapSeparators,
    CrLf,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let index = any::<usize>();
    prop_oneof![
        6 => (index, index, hostile_field())
            .prop_map(|(line, field, value)| Mutation::Field { line, field, value }),
        1 => index.prop_map(Mutation::DuplicateLine),
        1 => index.prop_map(Mutation::DropLine),
        1 => index.prop_map(Mutation::JoinWithNext),
        1 => (index, index).prop_map(|(line, at)| Mutation::CutLine { line, at }),
        1 => Just(Mutation::SwapSeparators),
        1 => Just(Mutation::CrLf),
    ]
}

fn apply(text: &str, mutation: &Mutation) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if lines.is_empty() {
        return text.to_owned();
    }
    let pick = |i: usize| i % lines.len();
    match mutation {
        Mutation::Field { line, field, value } => {
            let at = pick(*line);
            let separator = if lines[at].contains(',') { ',' } else { ' ' };
            let mut fields: Vec<String> = lines[at].split(separator).map(str::to_owned).collect();
            let slot = field % fields.len();
            fields[slot] = value.clone();
            lines[at] = fields.join(&separator.to_string());
        }
        Mutation::DuplicateLine(line) => {
            let at = pick(*line);
            let copy = lines[at].clone();
            lines.insert(at, copy);
        }
        Mutation::DropLine(line) => {
            lines.remove(pick(*line));
        }
        Mutation::JoinWithNext(line) => {
            let at = pick(*line);
            if at + 1 < lines.len() {
                let next = lines.remove(at + 1);
                lines[at].push_str(&next);
            }
        }
        Mutation::CutLine { line, at } => {
            let index = pick(*line);
            let text = &lines[index];
            let mut cut = at % (text.len() + 1);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            lines[index] = text[..cut].to_owned();
        }
        Mutation::SwapSeparators => {
            return text
                .chars()
                .map(|c| match c {
                    ',' => ' ',
                    ' ' => ',',
                    other => other,
                })
                .collect();
        }
        Mutation::CrLf => return text.replace('\n', "\r\n"),
    }
    lines.join("\n") + "\n"
}

#[test]
fn the_fixtures_parse() {
    parse_show_stat(&fixture("show_stat.csv")).unwrap();
    parse_servers_state(&fixture("servers_state.txt")).unwrap();
    parse_servers_conn(&fixture("servers_conn_web.txt")).unwrap();
    parse_show_info(&fixture("show_info.txt")).unwrap();
    parse_show_proc(&fixture("show_proc.txt")).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_real_outputs_never_panic(
        which in 0..FIXTURES.len(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let mut text = fixture(FIXTURES[which]);
        for mutation in &mutations {
            text = apply(&text, mutation);
            parse_all(&text);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        parse_all(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn real_headers_with_arbitrary_rows_never_panic(
        which in 0..FIXTURES.len(),
        rows in prop::collection::vec("[ -~]{0,200}", 0..20),
    ) {
        let text = fixture(FIXTURES[which]);
        let header: String = text.lines().take_while(|l| l.starts_with('#') || l.len() < 3).map(|l| format!("{l}\n")).collect();
        parse_all(&(header + &rows.join("\n")));
    }
}
