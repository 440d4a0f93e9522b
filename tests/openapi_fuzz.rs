//! A schema-driven fuzz run against a live stack (registry, aqueduct, real HAProxy):
//! schemathesis (from PyPI, installed by `.ci/run`) generates requests from each
//! `/openapi.json`, valid and invalid, and fails on any 5xx. Afterwards the process must still
//! be up, without a panic in its log, and HAProxy must still serve its config.

#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches start the real programs they measure"
)]
#![allow(clippy::unwrap_used)] // a panic is a test failure

mod support;

use std::path::Path;
use std::process::Command;
use support::{Stack, require, require_haproxy};

/// Examples per operation and phase: enough to reach every field with wrong types, huge and
/// empty values and unicode, while the whole run stays around a minute.
const MAX_EXAMPLES: &str = "12";

/// Runs schemathesis from `work_dir`: it keeps its example cache (`.schemathesis/`) in the
/// working directory, which must not be the repository (a test run leaves the tree clean).
fn schemathesis(base: &str, work_dir: &Path) -> (bool, String) {
    let output = Command::new("schemathesis")
        .current_dir(work_dir)
        .args([
            "run",
            &format!("{base}/openapi.json"),
            "--checks",
            "not_a_server_error",
            // Endless event streams: their status is checked by tests/openapi.rs.
            "--exclude-path",
            "/events",
            "--max-examples",
            MAX_EXAMPLES,
            "--request-timeout",
            "30",
            "--no-color",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("run schemathesis");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_on_either_api() {
    if !require_haproxy()
        || !require(
            "schemathesis",
            "python3 -m pip install schemathesis==4.32.5 (.ci/run does)",
        )
    {
        return;
    }
    let stack = Stack::start().await;
    for base in [stack.registry.clone(), stack.aqueduct.clone()] {
        let work_dir = stack.dir.path().to_owned();
        let (ok, report) = tokio::task::spawn_blocking(move || schemathesis(&base, &work_dir))
            .await
            .unwrap();
        // The summary says how many cases ran; print it for the record.
        let summary: Vec<&str> = report
            .lines()
            .filter(|l| l.contains("generated") || l.contains("passed") || l.contains("Seed"))
            .collect();
        println!("{summary:?}");
        assert!(ok, "schemathesis found failures:\n{report}");
    }
    assert!(
        stack
            .proc
            .log_text()
            .lines()
            .all(|l| !l.contains("panicked")),
        "the stack panicked:\n{}",
        stack.proc.log_text()
    );
    // Still up and answering on both ports, HAProxy's config still served.
    for url in [
        format!("{}/status", stack.registry),
        format!("{}/frontends", stack.aqueduct),
        format!("{}/haproxy/config", stack.aqueduct),
    ] {
        let status = support::client().get(&url).send().await.unwrap().status();
        assert_eq!(status, 200, "{url} after the fuzz run");
    }
}
