//! The Fleet page in a real headless Chromium, against a real fleet: a `redis-server`, a
//! registry, and two `thalassa aqueduct` processes on that store, each with its own HAProxy on
//! its own loopback address (`--bind-address`), as in `tests/aqueduct_fleet.rs`. The page lists
//! both nodes on the same version; after a change the second node's HAProxy refuses (another
//! process holds the port on its address) it shows that node refused, with HAProxy's error,
//! and one version behind; once the second node is killed (SIGKILL, so its report is not
//! removed) it is marked gone. The header names the node, and the activity on the other node
//! names the node that made each change. Screenshots go to target/ui-screenshots/.
#![allow(clippy::unwrap_used)] // a panic is a test failure

mod fleet_support;
mod redis_support;
mod support;
mod ui_support;

use fleet_support::{put, start_node, wait_serving};
use redis_support::{RedisCluster, require_redis};
use serde_json::{Value, json};
use std::net::Ipv4Addr;
use std::time::Duration;
use support::{KillHaproxiesOnDrop, Origin, free_port, require_haproxy, start_registry};
use ui_support::{Browser, require_chromium};

/// Each row of the Fleet page as `{node id: {cell class: text, "gone", "self"}}`.
async fn rows(browser: &Browser) -> Value {
    browser
        .js(
            "const rows = {};
             for (const tr of document.querySelectorAll('#fleet-nodes tr')) {
               const cell = (name) => (tr.querySelector('.' + name) || {}).textContent || '';
               rows[tr.dataset.node] = {
                 id: cell('id'), config: cell('config'), outcome: cell('outcome').trim(),
                 seen: cell('seen'), haproxy: cell('haproxy'), gone: tr.dataset.gone, self: tr.dataset.self,
                 address: (tr.querySelector('.address a') || {}).href || '',
               };
             }
             return rows;",
            vec![],
        )
        .await
}

/// Waits until the page's rows pass `check` (which says what is still missing, or `None`).
async fn wait_rows(browser: &Browser, what: &str, check: impl Fn(&Value) -> Option<String>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let seen = rows(browser).await;
        let Some(missing) = check(&seen) else {
            return;
        };
        if std::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}: {missing}; rows: {seen:#}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `Some(why)` when `row`'s `cell` does not satisfy `ok`.
fn expect(rows: &Value, id: &str, cell: &str, ok: impl Fn(&str) -> bool) -> Option<String> {
    let text = rows[id][cell].as_str().unwrap_or("");
    (!ok(text)).then(|| format!("{id}'s {cell} is {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_page_follows_a_real_fleet() {
    if !require_chromium() || !require_haproxy() || !require_redis() {
        return;
    }
    let redis = RedisCluster::single().await;
    let dir = tempfile::tempdir().unwrap();
    let registry_port = free_port();
    let _registry = start_registry(dir.path(), registry_port).await;
    let registry = format!("http://127.0.0.1:{registry_port}");
    let store = redis.primary.url();
    let first = start_node(
        dir.path(),
        "aq-1",
        Ipv4Addr::new(127, 0, 0, 2),
        &store,
        &registry,
    )
    .await;
    let mut second = start_node(
        dir.path(),
        "aq-2",
        Ipv4Addr::new(127, 0, 0, 3),
        &store,
        &registry,
    )
    .await;
    // The second node is killed with SIGKILL below, which leaves its HAProxy serving (as a
    // crashed aqueduct would): this kills it when the test ends, however it ends.
    let _orphans = KillHaproxiesOnDrop(dir.path().join("aq-2").join("haproxy"));

    let origin = Origin::start("fleet-ui-origin").await;
    let (old_port, new_port) = (free_port(), free_port());
    let backend = json!({"type": "static", "mode": "http",
                         "members": [{"host": "127.0.0.1", "port": origin.port()}]});
    let frontend =
        |port: u16| json!({"bind": format!("*:{port}"), "backend": "web", "mode": "http"});
    let (status, answer) = put(&first, "/backends/web", backend).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = put(&first, "/frontends/old?wait=fleet", frontend(old_port)).await;
    assert_eq!(status, 200, "{answer}");
    let applied = answer["version"].as_u64().unwrap();
    wait_serving(&second, old_port, "fleet-ui-origin").await;

    // Both nodes on the fleet's version, the first marked as the one serving the page.
    let browser = Browser::start().await;
    browser.goto(&format!("{}/nodes", first.api)).await;
    let in_sync = format!("v{applied}in sync");
    wait_rows(&browser, "both nodes in sync", |rows| {
        expect(rows, "aq-1", "config", |t| t == in_sync)
            .or_else(|| expect(rows, "aq-2", "config", |t| t == in_sync))
            .or_else(|| expect(rows, "aq-1", "outcome", |t| t == "applied"))
            .or_else(|| expect(rows, "aq-2", "outcome", |t| t == "applied"))
    })
    .await;
    let shown = rows(&browser).await;
    assert_eq!(shown["aq-1"]["self"], "true", "{shown:#}");
    assert_eq!(shown["aq-1"]["id"], "aq-1this node", "{shown:#}");
    assert_eq!(shown["aq-2"]["self"], "false", "{shown:#}");
    assert_eq!(shown["aq-2"]["gone"], "false", "{shown:#}");
    for id in ["aq-1", "aq-2"] {
        let haproxy = shown[id]["haproxy"].as_str().unwrap();
        assert!(
            haproxy.starts_with(|c: char| c.is_ascii_digit()),
            "{id} runs HAProxy {haproxy:?}"
        );
    }
    assert_eq!(
        shown["aq-2"]["address"],
        format!("{}/", second.api),
        "{shown:#}"
    );
    let api_address = first.api.trim_start_matches("http://");
    // The label is filled by its own fetch of /ui/api/node, independent of the rows above.
    let label = format!("node aq-1 at {api_address}");
    browser
        .wait_text("#node-label", "the node label", |t| {
            t == Some(label.as_str())
        })
        .await;
    browser.screenshot("fleet-in-sync").await;

    // A port taken on the second node's address only: its HAProxy refuses the next version.
    let squatter = std::net::TcpListener::bind((second.address, new_port)).unwrap();
    let (status, answer) = put(&first, "/frontends/new?wait=fleet", frontend(new_port)).await;
    assert_eq!(status, 200, "{answer}");
    let refused = answer["version"].as_u64().unwrap();
    wait_rows(&browser, "the second node refused and behind", |rows| {
        expect(rows, "aq-1", "config", |t| {
            t == format!("v{refused}in sync")
        })
        .or_else(|| {
            expect(rows, "aq-2", "config", |t| {
                t == format!("v{applied}1 behindfleet runs v{refused}")
            })
        })
        .or_else(|| {
            expect(rows, "aq-2", "outcome", |t| {
                t.starts_with(&format!("refusedv{refused} refused; serving v{applied}: "))
                    && t.contains(&new_port.to_string())
            })
        })
    })
    .await;
    browser
        .wait_text("#fleet-summary", "the summary", |t| {
            t == Some(
                format!(
                    "fleet config v{refused} · 2 nodes · 1 in sync · 1 behind · 1 refused a version"
                )
                .as_str(),
            )
        })
        .await;
    browser.full_screenshot("fleet-refused", 1366).await;
    browser.client.set_window_size(1366, 900).await.unwrap();

    // The second node's activity names the node that made each change it applied.
    browser.goto(&format!("{}/activity", second.api)).await;
    browser
        .wait_text(
            "[data-verb='fleet-applied'] .fleet-change",
            "the newest fleet change",
            |t| t == Some(format!("fleet config v{applied} from aq-1: put frontend old").as_str()),
        )
        .await;
    browser.goto(&format!("{}/nodes", first.api)).await;

    // Killed without a goodbye: its report stays and ages, and the page marks it gone.
    support::signal(second.proc.pid(), "KILL");
    let _ = second.proc.child.wait();
    wait_rows(&browser, "the second node gone", |rows| {
        expect(rows, "aq-2", "id", |t| t == "aq-2gone")
            .or_else(|| expect(rows, "aq-2", "gone", |t| t == "true"))
            .or_else(|| expect(rows, "aq-2", "seen", |t| t.starts_with("no report for ")))
            .or_else(|| expect(rows, "aq-1", "gone", |t| t == "false"))
    })
    .await;
    browser
        .wait_text("#fleet-summary", "the summary", |t| {
            t.is_some_and(|t| t.ends_with("· 1 gone"))
        })
        .await;
    browser.screenshot("fleet-gone").await;
    browser.close().await;
    drop(squatter);
}
