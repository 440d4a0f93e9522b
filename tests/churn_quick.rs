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
    churn_quick_with(None).await;
}

/// The same with `balance source`: its servers carry explicit ids and are added by the
/// manager (not the fast lane), so ids are allocated under churn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_quick_on_balance_source_drops_no_request_and_never_reloads() {
    churn_quick_with(Some("source")).await;
}

/// One churn run at a time: two at once on a 2-core machine would measure each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn churn_quick_with(balance: Option<&str>) {
    if !support::require_haproxy() {
        return;
    }
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let mut settings = Settings::from_env("quick").unwrap();
    if let Some(balance) = balance {
        settings.balance = balance.to_owned();
    }
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
