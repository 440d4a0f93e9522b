//! Fault tests: `kill -9` of HAProxy's worker and of its master while traffic flows. A killed
//! worker takes its connections with it, so some requests fail: the tests bound the recovery
//! (the supervisor starts a new HAProxy, the membership manager re-adds every member,
//! health-gated) and print what traffic saw.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

mod support;

use std::time::{Duration, Instant};
use support::{
    Load, Origin, Stack, eventually, haproxy_masters, haproxy_workers, require_haproxy, signal,
    stack_with_app, wait_for_body,
};

/// A stack with frontend `web` on a free port, dynamic backend `app` (app@1, checks every
/// 100 ms) and two origins registered; returns once traffic flows.
async fn serving_stack() -> (Stack, u16, Vec<Origin>) {
    let (stack, proxy_port) = stack_with_app("1").await;
    let origins = vec![Origin::start("web").await, Origin::start("web").await];
    for origin in &origins {
        stack.register_origin("app", "1", origin).await;
    }
    wait_for_body(proxy_port, "web").await;
    (stack, proxy_port, origins)
}

async fn kill_9_and_recover(what: &str, pick: fn(&std::path::Path) -> Vec<u32>) {
    if !require_haproxy() {
        return;
    }
    let (stack, proxy_port, origins) = serving_stack().await;
    let run_dir = stack.dir.path().join("haproxy");
    let load = Load::start(proxy_port, 4);
    load.wait_ok(300).await;
    // The stack's PUTs reloaded HAProxy; a replaced worker leaves once its connections end.
    let victims = eventually(
        Duration::from_secs(20),
        &format!("exactly one haproxy {what}"),
        || async {
            let victims = pick(&run_dir);
            (victims.len() == 1).then_some(victims)
        },
    )
    .await;
    assert_eq!(victims.len(), 1, "one {what} expected: {victims:?}");
    let old_master = haproxy_masters(&run_dir);

    let before = load.snapshot();
    let fault_at = Instant::now();
    signal(victims[0], "KILL");
    load.wait_healthy(500, Duration::from_secs(30)).await;
    let report = load.report_since(&before, fault_at);
    report.print(&format!("kill -9 haproxy {what}"));
    load.stop().await;

    // A new HAProxy serves, exactly one master and one worker, and both members are back.
    let masters = haproxy_masters(&run_dir);
    assert_eq!(masters.len(), 1, "{masters:?}");
    assert_ne!(masters, old_master, "a new master was started");
    assert_eq!(haproxy_workers(&run_dir).len(), 1);
    for origin in &origins {
        let member = format!("127.0.0.1:{}", origin.port());
        eventually(Duration::from_secs(10), "the member to show UP", || async {
            (stack.member_status("app", &member).await.as_deref() == Some("UP")).then_some(())
        })
        .await;
    }
    // Failures are physically unavoidable (the killed worker's connections die with it, and
    // nothing listens until the new master runs), but they end once HAProxy is back.
    assert!(report.failed > 0 || report.ok > 0);
    assert!(
        report.recovered_in < Duration::from_secs(10),
        "recovery took {:?}",
        report.recovered_in
    );
    // Logged after the new HAProxy answers (traffic may be back a moment earlier).
    eventually(
        Duration::from_secs(10),
        "the supervisor to log the restart",
        || async {
            stack
                .proc
                .log_text()
                .contains("haproxy restarted")
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_worker_costs_its_connections_and_recovers() {
    kill_9_and_recover("worker", haproxy_workers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_master_recovers_with_one_haproxy() {
    kill_9_and_recover("master", haproxy_masters).await;
}
