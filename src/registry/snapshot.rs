//! The registrations snapshot file (`<data-dir>/registrations.json`): every registration with
//! its absolute deadline and the event sequence number, written atomically (temp file, fsync,
//! rename). Loading never fails the start: a torn or corrupt file is reported, moved aside for
//! inspection, and the registry starts empty.

use super::model::{Registration, RegistrationKey, default_hostname};
use super::record::RegistrationRecord;
use super::store::StoreExport;
use crate::atomic_file::write_atomic_with;
use serde::Deserialize;
use serde::de::{Deserializer, SeqAccess, Visitor};
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "registrations.json";
const FORMAT_VERSION: u32 = 1;

/// The file as read. Entries are validated and compacted one by one while parsing, so loading
/// 100,000 registrations never holds them all as full `Registration` values.
#[derive(Debug, Deserialize)]
struct SnapshotFile {
    version: u32,
    /// Sequence number of the last event reflected in `registrations`.
    seq: u64,
    /// Written by a graceful shutdown, after the last event: nothing happened after `seq`.
    clean: bool,
    registrations: Entries,
}

/// One entry of the `registrations` array.
#[derive(Debug, Deserialize)]
struct FileEntry {
    /// Epoch ms after which the registration expires.
    #[serde(rename = "expiresAt")]
    expires_at: u64,
    registration: Registration,
}

#[derive(Debug, Default)]
struct Entries {
    records: Vec<RegistrationRecord>,
    skipped: Vec<String>,
}

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(EntriesVisitor)
    }
}

struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Entries;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of {expiresAt, registration}")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Entries, A::Error> {
        let mut entries = Entries::default();
        while let Some(entry) = seq.next_element::<FileEntry>()? {
            match validate(entry) {
                Ok(record) => entries.records.push(record),
                Err(reason) => entries.skipped.push(reason),
            }
        }
        Ok(entries)
    }
}

/// An entry whose id does not match its validated key is refused, so a hand-edited file
/// cannot smuggle bad data in.
fn validate(entry: FileEntry) -> Result<RegistrationRecord, String> {
    let r = entry.registration;
    let key = RegistrationKey::parse(&r.name, &r.version, &r.host, &r.port.to_string())
        .map_err(|err| format!("{}: {err}", r.id))?;
    if key.id() != r.id {
        return Err(format!("{}: id does not match {}", r.id, key.id()));
    }
    let mut meta = r.meta;
    default_hostname(&mut meta, &key.host);
    Ok(RegistrationRecord::new(
        &key,
        &meta,
        r.last_known,
        entry.expires_at,
    ))
}

/// What was found in the data directory.
#[derive(Debug)]
pub enum Loaded {
    /// No snapshot yet: a first start.
    Missing,
    Snapshot {
        export: StoreExport,
        /// The file came from a graceful shutdown (no event was issued after `export.seq`).
        clean: bool,
        /// Entries that failed validation and were dropped, with the reason.
        skipped: Vec<String>,
    },
    /// The file could not be read or parsed; it was renamed to `moved_to` (if possible).
    Corrupt {
        error: String,
        moved_to: Option<PathBuf>,
    },
}

pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// Writes the snapshot atomically, streaming one record at a time.
pub fn save(
    data_dir: &Path,
    export: &StoreExport,
    clean: bool,
    now_ms: u64,
) -> std::io::Result<()> {
    write_atomic_with(&path_in(data_dir), |out| {
        write!(
            out,
            "{{\"version\":{FORMAT_VERSION},\"seq\":{},\"clean\":{clean},\"savedAt\":{now_ms},\"registrations\":[",
            export.seq
        )?;
        let mut entry = Vec::with_capacity(512);
        for (i, record) in export.records.iter().enumerate() {
            entry.clear();
            if i > 0 {
                entry.push(b',');
            }
            entry.extend_from_slice(
                format!("{{\"expiresAt\":{},\"registration\":", record.expires_at).as_bytes(),
            );
            record.write_json(&mut entry);
            entry.push(b'}');
            out.write_all(&entry)?;
        }
        out.write_all(b"]}")
    })
}

/// Reads the snapshot in `data_dir`. Never panics and never fails: see [`Loaded`].
pub fn load(data_dir: &Path, now_ms: u64) -> Loaded {
    let path = path_in(data_dir);
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Loaded::Missing,
        Err(err) => {
            return Loaded::Corrupt {
                error: format!("cannot read {}: {err}", path.display()),
                moved_to: None,
            };
        }
    };
    match decode(std::io::BufReader::with_capacity(256 * 1024, file)) {
        Ok((export, clean, skipped)) => Loaded::Snapshot {
            export,
            clean,
            skipped,
        },
        Err(error) => {
            let aside = data_dir.join(format!("{FILE_NAME}.corrupt-{now_ms}"));
            let moved_to = std::fs::rename(&path, &aside).ok().map(|()| aside);
            Loaded::Corrupt {
                error: format!("{}: {error}", path.display()),
                moved_to,
            }
        }
    }
}

/// Parses and validates a snapshot; the third element names the dropped entries.
pub fn decode(reader: impl std::io::Read) -> Result<(StoreExport, bool, Vec<String>), String> {
    let file: SnapshotFile = serde_json::from_reader(reader).map_err(|err| err.to_string())?;
    if file.version != FORMAT_VERSION {
        return Err(format!("unsupported snapshot version {}", file.version));
    }
    let Entries {
        mut records,
        skipped,
    } = file.registrations;
    records.sort_unstable_by(|a, b| a.id().cmp(b.id()));
    Ok((
        StoreExport {
            seq: file.seq,
            records,
        },
        file.clean,
        skipped,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(port: &str, expires_at: u64) -> RegistrationRecord {
        let key = RegistrationKey::parse("svc", "1", "127.0.0.1", port).unwrap();
        let mut meta = json!({"secondsToExpire": "5"})
            .as_object()
            .cloned()
            .unwrap();
        default_hostname(&mut meta, &key.host);
        RegistrationRecord::new(&key, &meta, 5, expires_at)
    }

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let export = StoreExport {
            seq: 42,
            records: vec![record("80", 1000), record("81", 2000)],
        };
        save(dir.path(), &export, true, 7).unwrap();
        match load(dir.path(), 8) {
            Loaded::Snapshot {
                export: loaded,
                clean,
                skipped,
            } => {
                assert_eq!(loaded, export);
                assert!(clean);
                assert!(skipped.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_file_is_plain_json_in_a_documented_shape() {
        let dir = tempfile::tempdir().unwrap();
        let export = StoreExport {
            seq: 3,
            records: vec![record("80", 1000)],
        };
        save(dir.path(), &export, false, 9).unwrap();
        let text = std::fs::read_to_string(path_in(dir.path())).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            json!({"version": 1, "seq": 3, "clean": false, "savedAt": 9, "registrations": [
                {"expiresAt": 1000, "registration": {"name": "svc", "version": "1",
                 "host": "127.0.0.1", "port": 80, "lastKnown": 5,
                 "meta": {"secondsToExpire": "5", "hostname": "127.0.0.1"},
                 "id": "/svc/1/127.0.0.1/80"}}]})
        );
    }

    #[test]
    fn missing_file_is_a_first_start() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(load(dir.path(), 1), Loaded::Missing));
    }

    fn check_corrupt(contents: &[u8]) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path_in(dir.path()), contents).unwrap();
        match load(dir.path(), 99) {
            Loaded::Corrupt { moved_to, .. } => {
                let moved_to = moved_to.unwrap();
                assert_eq!(std::fs::read(&moved_to).unwrap(), contents);
                assert!(!path_in(dir.path()).exists());
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(contents)),
        }
    }

    #[test]
    fn torn_or_corrupt_files_are_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let export = StoreExport {
            seq: 1,
            records: vec![record("80", 1000)],
        };
        save(dir.path(), &export, false, 1).unwrap();
        let whole = std::fs::read(path_in(dir.path())).unwrap();
        check_corrupt(&whole[..whole.len() / 2]);
        check_corrupt(&whole[..whole.len() - 1]);
        check_corrupt(b"");
        check_corrupt(b"\x00\xff garbage");
        check_corrupt(br#"{"version":2,"seq":0,"clean":true,"savedAt":0,"registrations":[]}"#);
        check_corrupt(br#"[1,2,3]"#);
    }

    #[test]
    fn invalid_entries_are_dropped_and_named() {
        let entry = |name: &str, port: u16, id: &str| {
            json!({"expiresAt": 1000, "registration": {"name": name, "version": "1",
                "host": "h", "port": port, "lastKnown": 1, "meta": {}, "id": id}})
        };
        let file = json!({"version": 1, "seq": 3, "clean": false, "savedAt": 0, "registrations": [
            entry("ok", 80, "/ok/1/h/80"),
            entry("ok", 80, "/other/1/h/80"),
            entry("a b", 80, "/a b/1/h/80"),
            entry("ok", 0, "/ok/1/h/0"),
        ]});
        let (export, clean, skipped) = decode(file.to_string().as_bytes()).unwrap();
        assert!(!clean);
        assert_eq!(export.records.len(), 1);
        assert_eq!(export.records[0].to_registration().meta["hostname"], "h");
        assert_eq!(skipped.len(), 3, "{skipped:?}");
    }
}
