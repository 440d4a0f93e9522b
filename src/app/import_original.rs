//! `thalassa import-original FILE` (and `thalassa aqueduct --import-original FILE`): the
//! original aqueduct's persistence file, converted and checked item by item
//! (`aqueduct::import_original`), written as `<data-dir>/aqueduct.json` by `state_file`, with
//! a report of every item on stdout.

use crate::BoxError;
use crate::aqueduct::import_original::{self, Report};
use crate::aqueduct::state_file;
use crate::cli::{AqueductCommon, ImportOriginalArgs};
use crate::config::Config;
use crate::haproxy::render::{RenderMembers, RenderSettings, render};
use crate::haproxy::supervisor::{SupervisorSettings, check_config_offline};
use std::path::Path;

/// The exit code when some items were refused and the others were written.
pub const EXIT_SOME_REFUSED: u8 = 3;

/// The subcommand; its exit code: 0, or [`EXIT_SOME_REFUSED`].
pub async fn run(args: ImportOriginalArgs) -> Result<u8, BoxError> {
    let state_path = state_file::path_in(&args.data_dir);
    if !args.dry_run && !args.force {
        refuse_to_replace(&state_path)?;
    }
    let imported = import(&args.file, &args.data_dir, &args.haproxy_bin).await?;
    let written = if args.dry_run {
        None
    } else {
        std::fs::create_dir_all(&args.data_dir)
            .map_err(|err| format!("cannot create data dir {}: {err}", args.data_dir.display()))?;
        state_file::save(&state_path, &imported.config)?;
        Some(state_path)
    };
    let report = &imported.report;
    if args.json {
        let mut value = serde_json::to_value(report)?;
        value["written"] = serde_json::json!(written.as_ref().map(|p| p.display().to_string()));
        println!("{value}");
    } else {
        print!("{}", report.table());
        match &written {
            Some(path) => println!(
                "wrote {} ({} frontends, {} backends)",
                path.display(),
                imported.config.frontends.len(),
                imported.config.backends.len()
            ),
            None => println!("dry run: nothing written"),
        }
    }
    Ok(if report.refused > 0 {
        EXIT_SOME_REFUSED
    } else {
        0
    })
}

/// `thalassa aqueduct --import-original FILE`: imports before the aqueduct starts when its
/// data dir has no `aqueduct.json` yet, logging the report; leaves an existing one alone.
pub async fn import_at_startup(file: &Path, common: &AqueductCommon) -> Result<(), BoxError> {
    let state_path = state_file::path_in(&common.data_dir);
    if state_path.exists() {
        tracing::warn!(file = %file.display(), existing = %state_path.display(),
            "--import-original ignored: the data dir already has its configuration");
        return Ok(());
    }
    let imported = import(file, &common.data_dir, &common.haproxy_bin).await?;
    for item in &imported.report.items {
        let (kind, key, outcome) = (item.kind.as_str(), &item.key, item.outcome.as_str());
        match &item.error {
            Some(error) => tracing::warn!(kind, %key, outcome, %error, "import of the original"),
            None => {
                tracing::info!(kind, %key, outcome, notes = ?item.notes, "import of the original")
            }
        }
    }
    std::fs::create_dir_all(&common.data_dir).map_err(|err| {
        format!(
            "cannot create data dir {}: {err}",
            common.data_dir.display()
        )
    })?;
    state_file::save(&state_path, &imported.config)?;
    let report = &imported.report;
    tracing::info!(file = %file.display(), imported = report.imported, converted = report.converted,
        refused = report.refused, "imported the original aqueduct's configuration");
    Ok(())
}

/// The imported config and the report of every item.
pub struct Imported {
    pub config: Config,
    pub report: Report,
}

/// Reads, converts and checks (`haproxy -c` with `haproxy_bin`) the original's file, as the
/// aqueduct on `data_dir` will render it; writes nothing.
pub async fn import(
    file: &Path,
    data_dir: &Path,
    haproxy_bin: &Path,
) -> Result<Imported, BoxError> {
    let mut items = import_original::read(file)?;
    let run = SupervisorSettings::new(haproxy_bin, data_dir.join("haproxy"));
    let render_settings = RenderSettings::new(run.admin_socket_path(), run.server_state_path());
    // The checks run from the temp dir: the data dir may not exist yet (and a dry run must
    // not create it).
    let check = SupervisorSettings::new(haproxy_bin, std::env::temp_dir());
    let empty = render(&Config::default(), &RenderMembers::new(), &render_settings);
    check_config_offline(&check, &empty).await.map_err(|err| {
        format!(
            "{} cannot check configurations (it refuses even an empty one), so no item can be \
             imported; is --haproxy-bin right? {err}",
            haproxy_bin.display()
        )
    })?;
    let config = import_original::check_items(&mut items, &render_settings, |text| {
        let check = &check;
        async move { check_config_offline(check, &text).await }
    })
    .await;
    Ok(Imported {
        report: Report::new(&items),
        config,
    })
}

/// An `aqueduct.json` holding frontends or backends (or one that cannot be read) is only
/// replaced with `--force`.
fn refuse_to_replace(state_path: &Path) -> Result<(), BoxError> {
    let existing = match state_file::load(state_path) {
        Ok(None) => return Ok(()),
        Ok(Some(config)) if config.frontends.is_empty() && config.backends.is_empty() => {
            return Ok(());
        }
        Ok(Some(config)) => format!(
            "it holds {} frontends and {} backends",
            config.frontends.len(),
            config.backends.len()
        ),
        Err(err) => err.to_string(),
    };
    Err(format!(
        "{} already exists and {existing}: importing would replace it; pass --force to \
         replace it, or --dry-run to see the report only",
        state_path.display()
    )
    .into())
}
