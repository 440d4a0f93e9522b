//! The layering of `src/` (the table in `src/lib.rs`, "Layers") is a property of the code, not
//! only of its docs: every `crate::<module>` path in a file of `src/<module>` must name a module
//! of a lower layer. A new import against the direction fails here, with the file and line.

#![allow(clippy::unwrap_used)] // a panic is a test failure

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Module name -> layer, read from the table in `src/lib.rs`: rows `| <layer> | `a`, `b` | ... |`.
fn layers(lib_rs: &str) -> BTreeMap<String, u32> {
    let mut layers = BTreeMap::new();
    let mut in_section = false;
    for line in lib_rs.lines() {
        let line = line.trim_start_matches("//!").trim();
        if line.starts_with("## ") {
            in_section = line == "## Layers";
            continue;
        }
        if !in_section || !line.starts_with('|') {
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(layer), Some(modules)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let Ok(layer) = layer.parse::<u32>() else {
            continue; // the header and the separator row
        };
        for module in modules.split(',') {
            let module = module.trim().trim_matches('`');
            assert!(
                layers.insert(module.to_owned(), layer).is_none(),
                "{module} appears twice in the layer table"
            );
        }
    }
    layers
}

/// The top-level module a file of `src/` belongs to (`src/a.rs` and `src/a/...` -> `a`).
fn module_of(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// Every `crate::<name>` in the text, with its line number (comments included: a doc link
/// against the direction is a dependency of the reader's, too).
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let before = rest[..at].chars().last();
            rest = &rest[at + "crate::".len()..];
            // `thalassa_crate::x` or `my_crate::x` are not this crate's paths.
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push((number + 1, name));
            }
        }
    }
    found
}

/// The imports of `module`'s file `text` that run against the layers.
fn violations(layers: &BTreeMap<String, u32>, module: &str, file: &str, text: &str) -> Vec<String> {
    let Some(&own) = layers.get(module) else {
        return vec![format!(
            "{file}: module {module} is not in the layer table of src/lib.rs"
        )];
    };
    crate_paths(text)
        .into_iter()
        .filter(|(_, target)| target != module)
        .filter_map(|(line, target)| match layers.get(&target) {
            // `crate::BoxError` and other items of the crate root belong to no layer.
            None if target.chars().next().is_some_and(char::is_uppercase) => None,
            None => Some(format!(
                "{file}:{line}: crate::{target} is not in the layer table"
            )),
            Some(&layer) if layer < own => None,
            Some(&layer) => Some(format!(
                "{file}:{line}: {module} (layer {own}) imports crate::{target} (layer {layer}): \
                 only lower layers may be imported"
            )),
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_import_in_src_runs_downward() {
    let src = Path::new(ROOT).join("src");
    let lib_rs = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let layers = layers(&lib_rs);
    assert!(
        layers.len() >= 10,
        "the layer table in src/lib.rs was not found or is short: {layers:?}"
    );
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    let mut modules_seen = std::collections::BTreeSet::new();
    for path in &files {
        let relative = path.strip_prefix(&src).unwrap();
        let Some(module) = module_of(relative) else {
            continue;
        };
        modules_seen.insert(module.clone());
        let text = std::fs::read_to_string(path).unwrap();
        problems.extend(violations(
            &layers,
            &module,
            &format!("src/{}", relative.display()),
            &text,
        ));
    }
    for module in layers.keys() {
        if !modules_seen.contains(module) {
            problems.push(format!(
                "the layer table names {module}, which src/ does not have"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "imports against the layers of src/lib.rs:\n{}",
        problems.join("\n")
    );
}

/// The check can fail: a renderer that imports the REST layer, a layer importing its peer, and
/// a module the table does not know are each reported with their file and line.
#[test]
fn an_upward_import_is_reported() {
    let table = "//! ## Layers\n//! | layer | modules | what |\n//! |---|---|---|\n\
                 //! | 5 | `aqueduct`, `membership` | x |\n//! | 3 | `haproxy` | x |\n\
                 //! | 2 | `config` | x |\n//! ## Next\n//! | 9 | `ignored` | x |\n";
    let layers = layers(table);
    assert_eq!(layers.len(), 4, "{layers:?}");
    let upward = "use crate::config::Config;\nuse crate::aqueduct::model::Config;\n";
    assert_eq!(
        violations(&layers, "haproxy", "src/haproxy/render/mod.rs", upward),
        [
            "src/haproxy/render/mod.rs:2: haproxy (layer 3) imports crate::aqueduct (layer 5): \
          only lower layers may be imported"
        ]
    );
    let peer = "    let x = crate::membership::members::DynamicMembers::default();";
    assert_eq!(
        violations(&layers, "aqueduct", "src/aqueduct/controller.rs", peer).len(),
        1
    );
    assert_eq!(
        violations(
            &layers,
            "config",
            "src/config/mod.rs",
            "use crate::nowhere::X;"
        ),
        ["src/config/mod.rs:1: crate::nowhere is not in the layer table"]
    );
    assert!(
        violations(
            &layers,
            "haproxy",
            "f",
            "crate::BoxError; my_crate::aqueduct"
        )
        .is_empty()
    );
}
