//! Import of the original Thalassa Aqueduct's `--persistence` file: its rows become this
//! aqueduct's frontends and backends, each one reported as imported (as it was), converted
//! (what changed and why) or refused (the validation error naming the field, or HAProxy's own
//! error lines).
//!
//! Three steps, each with one job:
//! - [`read`]: the file to one [`Item`] per row (`convert`: the row as a PUT body, the
//!   validation a PUT passes, and notes on what the HAProxy 1.4-era rendering of the original
//!   becomes on HAProxy 2.x);
//! - [`check_items`] (`check`): `haproxy -c` on the whole config, and on a refusal item by item,
//!   so that one bad native refuses its own item only;
//! - [`Report`] (`report`): the per-item outcome as a table or as JSON.
//!
//! Writing the result is `state_file`'s job, never this module's.

mod check;
mod convert;
mod report;

pub use check::check_items;
pub use report::{ItemReport, Outcome, Report};

use crate::config::{Backend, Frontend};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Which kind of row an item came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemKind {
    Frontend,
    Backend,
}

impl ItemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Frontend => "frontend",
            ItemKind::Backend => "backend",
        }
    }
}

/// One row of the original's file on its way in.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub kind: ItemKind,
    /// The row's key; `frontends[3]` when it has none.
    pub key: String,
    /// What the import changed, and why (the item is `converted` when there is any).
    pub conversions: Vec<String>,
    /// What the operator should know that changed nothing (a frontend waiting for its backend).
    pub remarks: Vec<String>,
    pub state: ItemState,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ItemState {
    Frontend(Frontend),
    Backend(Backend),
    Refused(String),
}

impl Item {
    fn refused(kind: ItemKind, key: String, error: String) -> Item {
        Item {
            kind,
            key,
            conversions: Vec::new(),
            remarks: Vec::new(),
            state: ItemState::Refused(error),
        }
    }

    pub fn is_refused(&self) -> bool {
        matches!(self.state, ItemState::Refused(_))
    }
}

/// Why a file could not be imported at all (as opposed to one of its items).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read the original aqueduct's file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an original aqueduct persistence file: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// Reads the original's persistence file: `{"version":1,"frontends":[..],"backends":[..]}`.
/// A file that is not that (unreadable, not JSON, another version) is an error naming it and,
/// for JSON, the line and column; a bad row is only a refused item.
pub fn read(path: &Path) -> Result<Vec<Item>, ImportError> {
    let bytes = std::fs::read(path).map_err(|source| ImportError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&bytes).map_err(|reason| ImportError::Invalid {
        path: path.to_owned(),
        reason,
    })
}

/// [`read`] on the file's bytes.
pub fn parse(bytes: &[u8]) -> Result<Vec<Item>, String> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|err| format!("not valid JSON: {err}"))?;
    let Value::Object(top) = value else {
        return Err("the top level is not a JSON object".to_owned());
    };
    match top.get("version") {
        Some(v) if v.as_u64() == Some(1) => {}
        Some(v) if v.as_u64() == Some(super::state_file::VERSION) => {
            return Err(format!(
                "it is already in this aqueduct's own format (version {v}): copy it to \
                 <data-dir>/aqueduct.json instead of importing it"
            ));
        }
        Some(v) => return Err(format!("unsupported version {v}, expected 1")),
        None => return Err("no \"version\" field".to_owned()),
    }
    let mut items = Vec::new();
    for (kind, name) in [
        (ItemKind::Frontend, "frontends"),
        (ItemKind::Backend, "backends"),
    ] {
        let rows = match top.get(name) {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(rows)) => rows.as_slice(),
            Some(_) => return Err(format!("\"{name}\" is not an array")),
        };
        let mut seen = BTreeSet::new();
        for (index, row) in rows.iter().enumerate() {
            let item = convert::item(kind, &format!("{name}[{index}]"), row);
            if !item.is_refused() && !seen.insert(item.key.clone()) {
                items.push(Item::refused(
                    kind,
                    item.key.clone(),
                    format!(
                        "{name}[{index}]: {} {} appears twice in the file; the first row is \
                         the one imported",
                        kind.as_str(),
                        item.key
                    ),
                ));
                continue;
            }
            items.push(item);
        }
    }
    Ok(items)
}
