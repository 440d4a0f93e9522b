//! Version switches, forward and back, on a dynamic backend under load, for every balance
//! algorithm whose backends take runtime servers: traffic moves to the new version's member
//! and back, no request fails, nothing reloads, and HAProxy and the API end up with exactly
//! the members of the version switched to. A dead member of version 1 rides along: hash and
//! random backends give servers explicit ids, and the new version's servers must never be
//! given an id an old server still holds (HAProxy refuses the `add server`, and traffic would
//! stay on the old version for good).
//!
//! `static-rr` is left out: HAProxy refuses runtime servers on it (see the README).

#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

mod support;

use std::collections::BTreeSet;
use std::time::Duration;
use support::{
    Load, Origin, Stack, eventually, free_port, get_once, require_haproxy, stack_with_backend,
};
use thalassa::haproxy::runtime::RuntimeClient;
use thalassa::haproxy::stat::ServerStateRow;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_roundrobin() {
    switch_forward_and_back("roundrobin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_leastconn() {
    switch_forward_and_back("leastconn").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_first() {
    switch_forward_and_back("first").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_source() {
    switch_forward_and_back("source").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_uri() {
    switch_forward_and_back("uri").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_url_param() {
    switch_forward_and_back("url_param id").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_hdr() {
    switch_forward_and_back("hdr(host)").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_random() {
    switch_forward_and_back("random").await;
}

async fn switch_forward_and_back(balance: &str) {
    if !require_haproxy() {
        return;
    }
    let (stack, port) = stack_with_backend(
        "app",
        &format!(
            r#"{{"type":"dynamic","name":"app","version":"1","balance":"{balance}","mode":"http","health":{{"interval":100}}}}"#
        ),
    )
    .await;

    let v1 = Origin::start("v1").await;
    let v2 = Origin::start("v2").await;
    let dead_port = free_port();
    stack.register_origin("app", "1", &v1).await;
    stack
        .register(
            &format!("app/1/127.0.0.1/{dead_port}"),
            r#"{"secondsToExpire":600}"#,
        )
        .await;
    stack.register_origin("app", "2", &v2).await;
    let v1_side = BTreeSet::from([server(v1.port()), server(dead_port)]);
    let v2_side = BTreeSet::from([server(v2.port())]);
    settled_on(&stack, port, "v1", &v1_side).await;
    let reloads_before = stack.metric_total("thalassa_haproxy_reloads_total").await;

    let load = Load::start(port, 2);
    load.wait_ok(20).await;
    for (version, body, servers) in [("2", "v2", &v2_side), ("1", "v1", &v1_side)] {
        let (status, answer) = stack
            .aqueduct_post("/backends/app", &format!(r#"{{"version":"{version}"}}"#))
            .await;
        assert_eq!((status, answer.as_str()), (200, "200"), "{balance}");
        settled_on(&stack, port, body, servers).await;
        load.wait_ok(20).await;
    }
    let stats = load.snapshot();
    load.stop().await;
    assert_eq!(
        stats.failed, 0,
        "{balance}: no request may fail during a version switch ({} ok): {:?}",
        stats.ok, stats.failures
    );
    assert_eq!(
        stack.metric_total("thalassa_haproxy_reloads_total").await,
        reloads_before,
        "{balance}: a version switch must not reload"
    );
}

fn server(port: u16) -> String {
    format!("app_127.0.0.1:{port}")
}

/// Waits until HAProxy holds exactly `servers` in `app` (with unique ids), the API lists
/// exactly their members, and every request through `port` is answered by `body`.
async fn settled_on(stack: &Stack, port: u16, body: &str, servers: &BTreeSet<String>) {
    let client = RuntimeClient::new(stack.admin_socket());
    let what = format!("haproxy and the API to hold {servers:?}, traffic on {body}");
    eventually(WAIT, &what, || async {
        let rows = client.show_servers_state(Some("app")).await.ok()?;
        assert_unique_ids(&rows);
        let in_haproxy: BTreeSet<String> = rows.into_iter().map(|r| r.server).collect();
        if &in_haproxy != servers {
            return None;
        }
        let members = stack.get_json("/backends/app/members").await;
        let listed: BTreeSet<String> = members
            .as_array()?
            .iter()
            .filter_map(|m| Some(server(m["port"].as_u64()? as u16)))
            .collect();
        if &listed != servers {
            return None;
        }
        for _ in 0..5 {
            if get_once(port, "/").await.ok()? != (200, body.to_owned()) {
                return None;
            }
        }
        Some(())
    })
    .await;
}

fn assert_unique_ids(rows: &[ServerStateRow]) {
    let mut seen = BTreeSet::new();
    for row in rows {
        assert!(
            seen.insert(row.server_id),
            "server id {} used twice in {}: {:?}",
            row.server_id,
            row.backend,
            rows.iter()
                .map(|r| (r.server_id, &r.server))
                .collect::<Vec<_>>()
        );
    }
}
