//! Line diffs for the activity log: `unified(old, new)` renders what changed in haproxy.cfg as
//! a unified diff (3 lines of context), so a config change reads like a patch.

use std::fmt::Write as _;

/// Lines of unchanged context shown around each change, as `diff -u` does.
const CONTEXT_LINES: usize = 3;

/// Above this many LCS table cells (rows x columns of the changed middle) the diff gives up on
/// finding the shortest edit and shows the middle as removed then added. Keeps a pathological
/// config change from costing seconds or gigabytes; 4M cells is 16 MiB and a few milliseconds.
const MAX_TABLE_CELLS: usize = 4_000_000;

/// One step of the edit script, with 0-based line indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edit {
    Keep { old: usize, new: usize },
    Remove { old: usize },
    Add { new: usize },
}

/// A unified diff of `old` -> `new` by lines (`--- before` / `+++ after` headers, `@@` hunks).
/// Empty when the texts have the same lines. A missing final newline is not reported.
pub fn unified(old: &str, new: &str) -> String {
    let old_lines: Vec<&str> = old.lines().collect();
    let new_lines: Vec<&str> = new.lines().collect();
    let edits = edit_script(&old_lines, &new_lines);
    if edits.iter().all(|e| matches!(e, Edit::Keep { .. })) {
        return String::new();
    }
    let mut out = String::from("--- before\n+++ after\n");
    for hunk in hunks(&edits) {
        write_hunk(&mut out, &edits[hunk.0..hunk.1], &old_lines, &new_lines);
    }
    out
}

/// The shortest edit script (longest common subsequence), after trimming the common prefix and
/// suffix, which is where most config changes leave almost everything.
fn edit_script(old: &[&str], new: &[&str]) -> Vec<Edit> {
    let prefix = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let suffix = old[prefix..]
        .iter()
        .rev()
        .zip(new[prefix..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let old_mid = &old[prefix..old.len() - suffix];
    let new_mid = &new[prefix..new.len() - suffix];

    let mut edits: Vec<Edit> = (0..prefix).map(|i| Edit::Keep { old: i, new: i }).collect();
    if old_mid.len().saturating_mul(new_mid.len()) > MAX_TABLE_CELLS {
        edits.extend((0..old_mid.len()).map(|i| Edit::Remove { old: prefix + i }));
        edits.extend((0..new_mid.len()).map(|j| Edit::Add { new: prefix + j }));
    } else {
        edits.extend(lcs_edits(old_mid, new_mid).into_iter().map(|e| match e {
            Edit::Keep { old, new } => Edit::Keep {
                old: prefix + old,
                new: prefix + new,
            },
            Edit::Remove { old } => Edit::Remove { old: prefix + old },
            Edit::Add { new } => Edit::Add { new: prefix + new },
        }));
    }
    let (old_tail, new_tail) = (old.len() - suffix, new.len() - suffix);
    edits.extend((0..suffix).map(|k| Edit::Keep {
        old: old_tail + k,
        new: new_tail + k,
    }));
    edits
}

/// Classic dynamic-programming LCS; `table[i][j]` is the LCS length of `old[i..]` and `new[j..]`.
/// Removals are emitted before additions at each point, the order readers expect.
fn lcs_edits(old: &[&str], new: &[&str]) -> Vec<Edit> {
    let width = new.len() + 1;
    let mut table = vec![0u32; (old.len() + 1) * width];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            table[i * width + j] = if old[i] == new[j] {
                table[(i + 1) * width + j + 1] + 1
            } else {
                table[(i + 1) * width + j].max(table[i * width + j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut edits = Vec::with_capacity(old.len() + new.len());
    while i < old.len() && j < new.len() {
        if old[i] == new[j] {
            edits.push(Edit::Keep { old: i, new: j });
            i += 1;
            j += 1;
        } else if table[(i + 1) * width + j] >= table[i * width + j + 1] {
            edits.push(Edit::Remove { old: i });
            i += 1;
        } else {
            edits.push(Edit::Add { new: j });
            j += 1;
        }
    }
    edits.extend((i..old.len()).map(|old| Edit::Remove { old }));
    edits.extend((j..new.len()).map(|new| Edit::Add { new }));
    edits
}

/// Ranges `[start, end)` of the edit script to print: each change with its context, merging
/// changes whose context would touch or overlap.
fn hunks(edits: &[Edit]) -> Vec<(usize, usize)> {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for (index, edit) in edits.iter().enumerate() {
        if matches!(edit, Edit::Keep { .. }) {
            continue;
        }
        let start = index.saturating_sub(CONTEXT_LINES);
        let end = (index + 1 + CONTEXT_LINES).min(edits.len());
        match ranges.last_mut() {
            Some(last) if start <= last.1 => last.1 = end,
            _ => ranges.push((start, end)),
        }
    }
    ranges
}

fn write_hunk(out: &mut String, edits: &[Edit], old: &[&str], new: &[&str]) {
    let (mut old_start, mut new_start) = (None, None);
    let (mut old_count, mut new_count) = (0usize, 0usize);
    for edit in edits {
        match *edit {
            Edit::Keep { old, new } => {
                old_start.get_or_insert(old);
                new_start.get_or_insert(new);
                old_count += 1;
                new_count += 1;
            }
            Edit::Remove { old } => {
                old_start.get_or_insert(old);
                old_count += 1;
            }
            Edit::Add { new } => {
                new_start.get_or_insert(new);
                new_count += 1;
            }
        }
    }
    // A side with no lines in a hunk is a side with no lines at all (any kept line next to a
    // change would be context), and diff numbers that empty range `0,0`.
    let old_range = range_text(old_start.map_or(0, |s| s + 1), old_count);
    let new_range = range_text(new_start.map_or(0, |s| s + 1), new_count);
    let _ = writeln!(out, "@@ -{old_range} +{new_range} @@");
    for edit in edits {
        let _ = match *edit {
            Edit::Keep { old: i, .. } => writeln!(out, " {}", old[i]),
            Edit::Remove { old: i } => writeln!(out, "-{}", old[i]),
            Edit::Add { new: j } => writeln!(out, "+{}", new[j]),
        };
    }
}

/// `start,count`, or just `start` when the count is 1 (GNU diff's format).
fn range_text(start: usize, count: usize) -> String {
    if count == 1 {
        start.to_string()
    } else {
        format!("{start},{count}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(old: &str, new: &str, expected: &str) {
        assert_eq!(unified(old, new), expected, "old={old:?} new={new:?}");
    }

    #[test]
    fn equal_texts_have_an_empty_diff() {
        check("", "", "");
        check("a\nb\n", "a\nb\n", "");
        check("a\nb", "a\nb\n", "");
    }

    #[test]
    fn one_changed_line_with_context() {
        check(
            "1\n2\n3\n4\n5\n6\n7\n8\n9\n",
            "1\n2\n3\n4\nfive\n6\n7\n8\n9\n",
            "--- before\n+++ after\n@@ -2,7 +2,7 @@\n 2\n 3\n 4\n-5\n+five\n 6\n 7\n 8\n",
        );
    }

    #[test]
    fn additions_and_removals_at_the_edges() {
        check(
            "",
            "a\nb\n",
            "--- before\n+++ after\n@@ -0,0 +1,2 @@\n+a\n+b\n",
        );
        check(
            "a\nb\n",
            "",
            "--- before\n+++ after\n@@ -1,2 +0,0 @@\n-a\n-b\n",
        );
        check(
            "a\n",
            "a\nb\n",
            "--- before\n+++ after\n@@ -1 +1,2 @@\n a\n+b\n",
        );
        check(
            "b\n",
            "a\nb\n",
            "--- before\n+++ after\n@@ -1 +1,2 @@\n+a\n b\n",
        );
    }

    #[test]
    fn distant_changes_make_separate_hunks_and_close_ones_merge() {
        let lines = |swap: &[(u32, &str)]| -> String {
            (1..=20)
                .map(|i| match swap.iter().find(|(n, _)| *n == i) {
                    Some((_, text)) => format!("{text}\n"),
                    None => format!("{i}\n"),
                })
                .collect()
        };
        let old = lines(&[]);
        let far = lines(&[(2, "two"), (19, "nineteen")]);
        check(
            &old,
            &far,
            "--- before\n+++ after\n@@ -1,5 +1,5 @@\n 1\n-2\n+two\n 3\n 4\n 5\n\
             @@ -16,5 +16,5 @@\n 16\n 17\n 18\n-19\n+nineteen\n 20\n",
        );
        let near = lines(&[(5, "five"), (11, "eleven")]);
        check(
            &old,
            &near,
            "--- before\n+++ after\n@@ -2,13 +2,13 @@\n 2\n 3\n 4\n-5\n+five\n 6\n 7\n 8\n 9\n 10\n\
             -11\n+eleven\n 12\n 13\n 14\n",
        );
    }

    #[test]
    fn a_config_change_reads_like_a_patch() {
        let old = "frontend web\n    bind *:80\n    default_backend web\n\nbackend web\n    balance roundrobin\n";
        let new = "frontend web\n    bind *:80\n    default_backend web\n\nbackend web\n    balance source\n    option httpchk\n";
        check(
            old,
            new,
            "--- before\n+++ after\n@@ -3,4 +3,5 @@\n     default_backend web\n \n backend web\n\
             -    balance roundrobin\n+    balance source\n+    option httpchk\n",
        );
    }

    #[test]
    fn huge_rewrites_fall_back_to_remove_then_add() {
        let old: String = (0..3000).map(|i| format!("old {i}\n")).collect();
        let new: String = (0..3000).map(|i| format!("new {i}\n")).collect();
        let diff = unified(&old, &new);
        assert!(diff.starts_with("--- before\n+++ after\n@@ -1,3000 +1,3000 @@\n-old 0\n"));
        assert_eq!(diff.lines().filter(|l| l.starts_with('-')).count(), 3001);
        assert_eq!(diff.lines().filter(|l| l.starts_with('+')).count(), 3001);
    }

    proptest::proptest! {
        /// Applying the diff's `-`/`+`/` ` lines to the old text yields the new text.
        #[test]
        fn the_diff_rebuilds_the_new_text(
            old in proptest::collection::vec("[abc]", 0..12),
            new in proptest::collection::vec("[abc]", 0..12),
        ) {
            let old_text: String = old.iter().map(|l| format!("{l}\n")).collect();
            let new_text: String = new.iter().map(|l| format!("{l}\n")).collect();
            let diff = unified(&old_text, &new_text);
            proptest::prop_assert_eq!(diff.is_empty(), old == new);
            if !diff.is_empty() {
                let rebuilt = apply(&old, &diff);
                proptest::prop_assert_eq!(rebuilt, new);
            }
        }
    }

    /// A minimal patch applier for the property test: trusts the hunk headers' old start.
    fn apply(old: &[String], diff: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cursor = 0usize;
        for line in diff.lines().skip(2) {
            if let Some(header) = line.strip_prefix("@@ -") {
                let range = header.split(' ').next().unwrap();
                let start: usize = range.split(',').next().unwrap().parse().unwrap();
                let count: usize = range.split(',').nth(1).map_or(1, |c| c.parse().unwrap());
                let first = if count == 0 { start } else { start - 1 };
                out.extend_from_slice(&old[cursor..first]);
                cursor = first;
            } else if let Some(text) = line.strip_prefix(' ') {
                assert_eq!(old[cursor], text);
                out.push(text.to_owned());
                cursor += 1;
            } else if line.starts_with('-') {
                cursor += 1;
            } else if let Some(text) = line.strip_prefix('+') {
                out.push(text.to_owned());
            }
        }
        out.extend_from_slice(&old[cursor..]);
        out
    }
}
