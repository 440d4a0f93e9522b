//! What the import did with each item: a table for the operator, JSON for tools.

use super::{Item, ItemKind, ItemState};
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Taken as it was.
    Imported,
    /// Taken, with the changes its notes list.
    Converted,
    /// Left out; `error` says why.
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Imported => "imported",
            Outcome::Converted => "converted",
            Outcome::Refused => "refused",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemReport {
    pub kind: ItemKind,
    pub key: String,
    pub outcome: Outcome,
    pub notes: Vec<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub items: Vec<ItemReport>,
    pub imported: usize,
    pub converted: usize,
    pub refused: usize,
}

impl Report {
    pub fn new(items: &[Item]) -> Report {
        let items: Vec<ItemReport> = items
            .iter()
            .map(|item| {
                let (outcome, error) = match &item.state {
                    ItemState::Refused(error) => (Outcome::Refused, Some(error.clone())),
                    _ if item.conversions.is_empty() => (Outcome::Imported, None),
                    _ => (Outcome::Converted, None),
                };
                ItemReport {
                    kind: item.kind,
                    key: item.key.clone(),
                    outcome,
                    notes: item
                        .conversions
                        .iter()
                        .chain(&item.remarks)
                        .cloned()
                        .collect(),
                    error,
                }
            })
            .collect();
        let count = |outcome| items.iter().filter(|i| i.outcome == outcome).count();
        Report {
            imported: count(Outcome::Imported),
            converted: count(Outcome::Converted),
            refused: count(Outcome::Refused),
            items,
        }
    }

    /// One line per item (outcome, kind, key), its notes and error indented below it, and the
    /// totals.
    pub fn table(&self) -> String {
        let mut out = format!("{:<9}  {:<8}  KEY\n", "OUTCOME", "KIND");
        for item in &self.items {
            let _ = writeln!(
                out,
                "{:<9}  {:<8}  {}",
                item.outcome.as_str(),
                item.kind.as_str(),
                item.key
            );
            for note in &item.notes {
                let _ = writeln!(out, "           - {note}");
            }
            if let Some(error) = &item.error {
                let _ = writeln!(out, "           ! {error}");
            }
        }
        let _ = writeln!(
            out,
            "{} imported, {} converted, {} refused",
            self.imported, self.converted, self.refused
        );
        out
    }
}
