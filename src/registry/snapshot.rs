//! The registrations snapshot file (`<data-dir>/registrations.json`): every registration with
//! its absolute deadline and the event sequence number, written atomically (temp file, fsync,
//! rename). Loading never fails the start: a torn or corrupt file is reported, moved aside for
//! inspection, and the registry starts empty.

use super::model::RegistrationKey;
use super::store::{LeasedRegistration, StoreExport};
use crate::atomic_file::write_atomic;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "registrations.json";
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct SnapshotFile {
    version: u32,
    /// Sequence number of the last event reflected in `registrations`.
    seq: u64,
    /// Written by a graceful shutdown, after the last event: nothing happened after `seq`.
    clean: bool,
    /// Epoch ms of the write.
    #[serde(rename = "savedAt")]
    saved_at: u64,
    registrations: Vec<LeasedRegistration>,
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

/// Writes the snapshot atomically.
pub fn save(
    data_dir: &Path,
    export: &StoreExport,
    clean: bool,
    now_ms: u64,
) -> std::io::Result<()> {
    let file = SnapshotFileRef {
        version: FORMAT_VERSION,
        seq: export.seq,
        clean,
        saved_at: now_ms,
        registrations: &export.registrations,
    };
    let bytes = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
    write_atomic(&path_in(data_dir), &bytes)
}

/// Borrowing twin of [`SnapshotFile`] so saving does not copy every registration.
#[derive(Serialize)]
struct SnapshotFileRef<'a> {
    version: u32,
    seq: u64,
    clean: bool,
    #[serde(rename = "savedAt")]
    saved_at: u64,
    registrations: &'a [LeasedRegistration],
}

/// Reads the snapshot in `data_dir`. Never panics and never fails: see [`Loaded`].
pub fn load(data_dir: &Path, now_ms: u64) -> Loaded {
    let path = path_in(data_dir);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Loaded::Missing,
        Err(err) => {
            return Loaded::Corrupt {
                error: format!("cannot read {}: {err}", path.display()),
                moved_to: None,
            };
        }
    };
    match decode(&bytes) {
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

/// Parses and validates a snapshot: an entry whose id does not match its validated key is
/// dropped (and named in the third element), so a hand-edited file cannot smuggle bad data in.
pub fn decode(bytes: &[u8]) -> Result<(StoreExport, bool, Vec<String>), String> {
    let file: SnapshotFile = serde_json::from_slice(bytes).map_err(|err| err.to_string())?;
    if file.version != FORMAT_VERSION {
        return Err(format!("unsupported snapshot version {}", file.version));
    }
    let mut skipped = Vec::new();
    let mut registrations = Vec::with_capacity(file.registrations.len());
    for leased in file.registrations {
        let r = &leased.registration;
        match RegistrationKey::parse(&r.name, &r.version, &r.host, &r.port.to_string()) {
            Ok(key) if key.id() == r.id => registrations.push(leased),
            Ok(key) => skipped.push(format!("{}: id does not match {}", r.id, key.id())),
            Err(err) => skipped.push(format!("{}: {err}", r.id)),
        }
    }
    Ok((
        StoreExport {
            seq: file.seq,
            registrations,
        },
        file.clean,
        skipped,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::model::Registration;

    fn leased(port: &str, expires_at: u64) -> LeasedRegistration {
        let key = RegistrationKey::parse("svc", "1", "127.0.0.1", port).unwrap();
        LeasedRegistration {
            expires_at,
            registration: Registration::new(key, 5, serde_json::Map::new()),
        }
    }

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let export = StoreExport {
            seq: 42,
            registrations: vec![leased("80", 1000), leased("81", 2000)],
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
            registrations: vec![leased("80", 1000)],
        };
        save(dir.path(), &export, false, 1).unwrap();
        let whole = std::fs::read(path_in(dir.path())).unwrap();
        check_corrupt(&whole[..whole.len() / 2]);
        check_corrupt(b"");
        check_corrupt(b"\x00\xff garbage");
        check_corrupt(br#"{"version":2,"seq":0,"clean":true,"savedAt":0,"registrations":[]}"#);
        check_corrupt(br#"[1,2,3]"#);
    }

    #[test]
    fn invalid_entries_are_dropped_and_named() {
        let mut bad_id = leased("80", 1000);
        bad_id.registration.id = "/other/1/127.0.0.1/80".to_owned();
        let mut bad_name = leased("81", 1000);
        bad_name.registration.name = "a b".to_owned();
        let file = SnapshotFileRef {
            version: 1,
            seq: 3,
            clean: false,
            saved_at: 0,
            registrations: &[leased("82", 1000), bad_id, bad_name],
        };
        let (export, clean, skipped) = decode(&serde_json::to_vec(&file).unwrap()).unwrap();
        assert!(!clean);
        assert_eq!(export.registrations.len(), 1);
        assert_eq!(skipped.len(), 2, "{skipped:?}");
    }
}
