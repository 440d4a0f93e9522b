//! Reload-free churn, measured: `cargo bench --bench churn` starts the real stack, registers
//! thousands of members on loopback, churns them while HTTP load runs through HAProxy, and
//! prints each membership mode side by side (runtime API vs reload-per-change baselines)
//! with the ratios; the JSON goes to `target/churn/`.
//!
//!     cargo bench --bench churn                     # full: 2,000 members / 20 backends
//!     CHURN_MODE=quick cargo bench --bench churn    # under a minute, runtime only
//!     cargo bench --bench churn -- --mode reload     # the 2 s-debounce baseline alone
//!     cargo bench --bench churn -- --runs runtime,reload-0s --rate 200 --duration 20s
//!
//! Every knob is a `CHURN_*` variable or the matching `--name value` argument; see
//! `churn/settings.rs` and `benches/README.md`.

#[path = "common/run_mode.rs"]
mod run_mode;

#[path = "churn/mod.rs"]
// `cargo clippy --all-targets` also builds this harness-less bench with cfg(test), where the
// harness's #[test] functions (run by tests/churn_quick.rs) are stripped and their helpers
// look unused.
#[cfg_attr(test, allow(dead_code, unused_imports))]
mod churn;

use std::path::{Path, PathBuf};

fn main() -> std::process::ExitCode {
    let Some(mode) = run_mode::run_mode("churn") else {
        return std::process::ExitCode::SUCCESS;
    };
    let settings = match churn::settings::Settings::from_env_and_args(mode.pick("full", "smoke")) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("churn: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("churn: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let host_before = churn::host_info();
    let binary = Path::new(env!("CARGO_BIN_EXE_thalassa"));
    let reports = match runtime.block_on(churn::run_all(&settings, binary)) {
        Ok(reports) => reports,
        Err(err) => {
            eprintln!("churn: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!(
        "\nchurn ({} preset): {} members over {} backends, checks every {} ms, load {} req/s\n",
        settings.preset,
        settings.members,
        settings.backends,
        settings.check_inter_ms,
        settings.load_rate
    );
    println!("{}", churn::report::table(&reports));
    let ratios = churn::report::ratios(&reports);
    if !ratios.is_empty() {
        println!("ratios, baseline / runtime:\n{ratios}");
    }
    let host_after = churn::host_info();
    println!(
        "load average before {} / after {} (other processes share these {} CPUs)",
        host_before["loadavg"], host_after["loadavg"], host_after["cpus"]
    );
    let host = serde_json::json!({"before": host_before, "after": host_after});
    let document = churn::document(&settings, &reports, host);
    if settings.preset == "smoke" {
        // A smoke run's figures mean nothing: they must not replace a real run's `latest.json`.
        return std::process::ExitCode::SUCCESS;
    }
    match churn::report::write_json(&target_dir(), &document) {
        Ok(path) => println!("JSON: {}", path.display()),
        Err(err) => eprintln!("churn: cannot write the JSON report: {err}"),
    }
    for report in reports.iter().filter(|r| r.membership == "runtime") {
        for failure in report.smoke_failures() {
            println!("NOTE {}: {failure}", report.label);
        }
    }
    std::process::ExitCode::SUCCESS
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}
