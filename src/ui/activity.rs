//! The activity log: every event the control plane reports (registrations, member transitions,
//! config changes, reloads), numbered, kept in memory and in a bounded JSON-lines file so the
//! Activity page survives restarts.

use crate::status::Activity;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// An activity with its place in the log. Ids only grow, across restarts too, so a browser can
/// de-duplicate and page backwards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityRecord {
    pub id: u64,
    #[serde(flatten)]
    pub activity: Activity,
}

/// Longest string kept in an activity's detail, in bytes. A diff of a huge config would
/// otherwise bloat every snapshot and the file; the head of it is what a reader wants anyway.
const MAX_DETAIL_STRING_BYTES: usize = 32 * 1024;

/// The newest `capacity` activities, mirrored in `<dir>/activity.jsonl`. New entries are
/// appended; when the file holds twice the capacity it is rewritten (atomically) with the newest
/// `capacity`, so it stays bounded without a rewrite per entry.
pub(crate) struct ActivityLog {
    path: PathBuf,
    capacity: usize,
    entries: VecDeque<ActivityRecord>,
    next_id: u64,
    lines_in_file: usize,
    /// Set after a failed write so a full disk logs one warning, not one per event.
    write_failing: bool,
}

impl ActivityLog {
    /// Loads the file if there is one. Lines that do not parse (a torn last write, an edit by
    /// hand) are skipped with a warning, and the file is then rewritten clean.
    pub(crate) fn open(path: &Path, capacity: usize) -> std::io::Result<ActivityLog> {
        let capacity = capacity.max(1);
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(err) => return Err(err),
        };
        let mut entries = VecDeque::new();
        let mut skipped = 0usize;
        let mut lines = 0usize;
        for line in bytes.split(|b| *b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            lines += 1;
            match serde_json::from_slice::<ActivityRecord>(line) {
                Ok(record) => {
                    entries.push_back(record);
                    if entries.len() > capacity {
                        entries.pop_front();
                    }
                }
                Err(_) => skipped += 1,
            }
        }
        let next_id = entries.iter().map(|r| r.id + 1).max().unwrap_or(1);
        let mut log = ActivityLog {
            path: path.to_owned(),
            capacity,
            entries,
            next_id,
            lines_in_file: lines,
            write_failing: false,
        };
        let torn_tail = !bytes.is_empty() && !bytes.ends_with(b"\n");
        if skipped > 0 {
            tracing::warn!(path = %path.display(), skipped, "skipped unreadable activity lines");
        }
        if skipped > 0 || torn_tail || lines > capacity {
            log.compact()?;
        }
        Ok(log)
    }

    /// Numbers, keeps and persists one activity. A write failure is logged (once until writes
    /// work again) and the activity is still kept in memory: losing history beats stopping.
    pub(crate) fn record(&mut self, mut activity: Activity) -> ActivityRecord {
        truncate_long_strings(&mut activity.detail);
        let record = ActivityRecord {
            id: self.next_id,
            activity,
        };
        self.next_id += 1;
        self.entries.push_back(record.clone());
        if self.entries.len() > self.capacity {
            self.entries.pop_front();
        }
        let result = if self.lines_in_file + 1 > self.capacity * 2 {
            self.compact()
        } else {
            self.append(&record)
        };
        match result {
            Ok(()) => self.write_failing = false,
            Err(err) if !self.write_failing => {
                self.write_failing = true;
                tracing::warn!(path = %self.path.display(), error = %err, "cannot persist activity");
            }
            Err(_) => {}
        }
        record
    }

    /// The newest `limit` records, oldest first.
    pub(crate) fn recent(&self, limit: usize) -> Vec<ActivityRecord> {
        let skip = self.entries.len().saturating_sub(limit);
        self.entries.iter().skip(skip).cloned().collect()
    }

    /// Up to `limit` records older than id `before`, oldest first.
    pub(crate) fn before(&self, before: u64, limit: usize) -> Vec<ActivityRecord> {
        let older: Vec<&ActivityRecord> = self.entries.iter().filter(|r| r.id < before).collect();
        let skip = older.len().saturating_sub(limit);
        older.into_iter().skip(skip).cloned().collect()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn append(&mut self, record: &ActivityRecord) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        // One write call per line: with O_APPEND a crash leaves at most a torn final line,
        // which `open` skips.
        file.write_all(&line)?;
        self.lines_in_file += 1;
        Ok(())
    }

    fn compact(&mut self) -> std::io::Result<()> {
        let mut text = Vec::new();
        for record in &self.entries {
            serde_json::to_writer(&mut text, record).map_err(std::io::Error::other)?;
            text.push(b'\n');
        }
        crate::atomic_file::write_atomic(&self.path, &text)?;
        self.lines_in_file = self.entries.len();
        Ok(())
    }
}

/// Cuts every string in `value` longer than the limit, at a character boundary, with a note.
fn truncate_long_strings(value: &mut Value) {
    match value {
        Value::String(text) if text.len() > MAX_DETAIL_STRING_BYTES => {
            let mut cut = MAX_DETAIL_STRING_BYTES;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            let dropped = text.len() - cut;
            text.truncate(cut);
            text.push_str(&format!("\n... ({dropped} more bytes not kept)"));
        }
        Value::Array(items) => items.iter_mut().for_each(truncate_long_strings),
        Value::Object(fields) => fields.values_mut().for_each(truncate_long_strings),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn activity(n: u64) -> Activity {
        Activity {
            time_ms: 1_000 + n,
            verb: "online".into(),
            object: format!("/web/1.0.0/127.0.0.1/{n}"),
            detail: json!({}),
        }
    }

    fn objects(records: &[ActivityRecord]) -> Vec<String> {
        records.iter().map(|r| r.activity.object.clone()).collect()
    }

    #[test]
    fn records_survive_a_reopen_with_their_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("activity.jsonl");
        let mut log = ActivityLog::open(&path, 10).unwrap();
        let first = log.record(activity(1));
        let second = log.record(activity(2));
        assert_eq!((first.id, second.id), (1, 2));
        drop(log);
        let mut log = ActivityLog::open(&path, 10).unwrap();
        assert_eq!(log.recent(10), vec![first, second]);
        assert_eq!(
            log.record(activity(3)).id,
            3,
            "ids continue after a restart"
        );
    }

    #[test]
    fn the_file_and_the_memory_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("activity.jsonl");
        let mut log = ActivityLog::open(&path, 5).unwrap();
        for n in 0..23 {
            log.record(activity(n));
            let lines = std::fs::read_to_string(&path).unwrap().lines().count();
            assert!(lines <= 10, "{lines} lines after {n}");
            assert!(log.len() <= 5);
        }
        drop(log);
        let log = ActivityLog::open(&path, 5).unwrap();
        let expected: Vec<String> = (18..23).map(|n| activity(n).object).collect();
        assert_eq!(objects(&log.recent(100)), expected);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 5);
    }

    #[test]
    fn corrupt_and_torn_lines_are_skipped_and_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("activity.jsonl");
        let good = serde_json::to_string(&ActivityRecord {
            id: 7,
            activity: activity(7),
        })
        .unwrap();
        let text = format!("not json\n{good}\n\u{0}\u{ff}garbage\n\n{{\"id\":8,\"ti");
        std::fs::write(&path, text).unwrap();
        let mut log = ActivityLog::open(&path, 10).unwrap();
        assert_eq!(objects(&log.recent(10)), vec![activity(7).object]);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{good}\n"));
        assert_eq!(log.record(activity(9)).id, 8);
    }

    #[test]
    fn paging_backwards_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = ActivityLog::open(&dir.path().join("a.jsonl"), 100).unwrap();
        for n in 0..10 {
            log.record(activity(n));
        }
        let page: Vec<u64> = log.before(6, 3).iter().map(|r| r.id).collect();
        assert_eq!(page, vec![3, 4, 5]);
        let page: Vec<u64> = log.before(2, 3).iter().map(|r| r.id).collect();
        assert_eq!(page, vec![1]);
        let recent: Vec<u64> = log.recent(2).iter().map(|r| r.id).collect();
        assert_eq!(recent, vec![9, 10]);
    }

    #[test]
    fn huge_details_are_cut_at_a_character_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = ActivityLog::open(&dir.path().join("a.jsonl"), 10).unwrap();
        let diff = "é".repeat(MAX_DETAIL_STRING_BYTES);
        let mut big = activity(1);
        big.detail = json!({"diff": diff, "reason": "short"});
        let record = log.record(big);
        let kept = record.activity.detail["diff"].as_str().unwrap();
        assert!(kept.len() < MAX_DETAIL_STRING_BYTES + 100);
        assert!(kept.ends_with("more bytes not kept)"));
        assert_eq!(record.activity.detail["reason"], "short");
    }

    #[test]
    fn wire_shape() {
        let record = ActivityRecord {
            id: 3,
            activity: Activity {
                time_ms: 5,
                verb: "member-up".into(),
                object: "backend/web/web_127.0.0.1:8080".into(),
                detail: json!({"check_status": "L7OK", "check_duration_ms": 1}),
            },
        };
        assert_eq!(
            serde_json::to_string(&record).unwrap(),
            r#"{"id":3,"time":5,"verb":"member-up","object":"backend/web/web_127.0.0.1:8080","detail":{"check_status":"L7OK","check_duration_ms":1}}"#
        );
    }
}
