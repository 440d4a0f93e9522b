//! The churn benchmark's quick mode as a CI smoke test: the real stack with 120 members over 4
//! backends, 100 membership changes/s for 10 s under keep-alive and connection-per-request
//! load, runtime mode. Fails on any failed request, any reload during churn, or any change
//! that never lands. Speed is the bench's business (`cargo bench --bench churn`); nothing
//! here asserts a latency.

#![allow(clippy::unwrap_used)] // Test code: a panic here is a test failure.

#[path = "../benches/churn/mod.rs"]
#[allow(dead_code)] // the bench binary uses parts the test does not
mod churn;

mod support;

use churn::settings::{Membership, Settings};
use std::path::Path;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_quick_drops_no_request_and_never_reloads() {
    if !support::require_haproxy() {
        return;
    }
    let mut settings = Settings::from_env("quick").unwrap();
    // CI checks the claim, so the runtime mode only, whatever CHURN_RUNS says.
    settings
        .runs
        .retain(|run| run.membership == Membership::Runtime);
    assert!(!settings.runs.is_empty(), "CHURN_RUNS has no runtime run");
    let reports = churn::run_all(&settings, Path::new(env!("CARGO_BIN_EXE_thalassa")))
        .await
        .unwrap();
    println!("{}", churn::report::table(&reports));
    let failures: Vec<String> = reports
        .iter()
        .flat_map(|r| {
            r.smoke_failures()
                .into_iter()
                .map(|f| format!("{}: {f}", r.label))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "churn smoke failed:\n{}",
        failures.join("\n")
    );
}
