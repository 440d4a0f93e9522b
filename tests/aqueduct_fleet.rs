//! A fleet of aqueducts on one Redis (`--store`), each with its own real HAProxy on its own
//! loopback address (`--bind-address`): a change taken by any node serves through every
//! node's HAProxy, concurrent changes of one item conflict (409) and converge, a change one
//! node's HAProxy refuses is reported for that node while the others serve it, a node
//! cut off from the store keeps serving and refuses writes (503), and a version switch or a
//! rollout taken by one node moves every node's traffic without a reload.
#![allow(clippy::unwrap_used)] // test helpers: a panic is a test failure

mod fleet_support;
mod redis_support;
mod support;

use fleet_support::{
    body_at, fleet_view, frontend, put, request, start_fleet, start_node, static_backend,
    wait_not_serving, wait_serving,
};
use redis_support::require_redis;
use serde_json::json;
use std::time::Duration;
use support::{Origin, eventually, free_port, require_haproxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_node_serves_through_every_node() {
    if !require_haproxy() || !require_redis() {
        return;
    }
    let fleet = start_fleet(3).await;
    let origin = Origin::start("fleet-origin").await;
    let port = free_port();
    let (first, second, third) = (&fleet.nodes[0], &fleet.nodes[1], &fleet.nodes[2]);

    let (status, answer) = put(first, "/backends/web", static_backend(&origin)).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = put(first, "/frontends/www?wait=fleet", frontend(port, "web")).await;
    assert_eq!(status, 200, "{answer}");
    let version = answer["version"].as_u64().unwrap();
    // `?wait=fleet` answered once every node applied it.
    let states: Vec<&str> = answer["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["applied", "applied", "applied"], "{answer}");
    for node in &fleet.nodes {
        wait_serving(node, port, "fleet-origin").await;
    }

    // Every node reports the version it runs; no lag.
    let view = fleet_view(third).await;
    assert_eq!(view["version"], version, "{view}");
    assert_eq!(view["node"], "aq-3");
    for row in view["nodes"].as_array().unwrap() {
        assert_eq!(row["version"], version, "{view}");
        assert_eq!(row["lag"], 0, "{view}");
        assert_eq!(row["outcome"], "applied", "{view}");
        assert_eq!(row["gone"], false, "{view}");
    }

    // The config each node runs is the one taken by the first.
    for node in &fleet.nodes {
        let (status, row) = request(
            reqwest::Method::GET,
            &format!("{}/frontends/www", node.api),
            None,
        )
        .await;
        assert_eq!(status, 200, "{}: {row}", node.id);
        assert_eq!(row["bind"], format!("*:{port}"), "{}", node.id);
    }

    // A DELETE on the second node stops it everywhere.
    let (status, answer) = request(
        reqwest::Method::DELETE,
        &format!("{}/frontends/www", second.api),
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["version"].as_u64().unwrap() > version, "{answer}");
    for node in &fleet.nodes {
        wait_not_serving(node, port).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_of_one_item_conflict_and_the_nodes_converge() {
    if !require_haproxy() || !require_redis() {
        return;
    }
    let fleet = start_fleet(2).await;
    let (first, second) = (&fleet.nodes[0], &fleet.nodes[1]);
    let mut conflicts = 0;
    for round in 0..20 {
        let body = |node: &str| {
            json!({"type": "static", "mode": "http",
                   "members": [{"host": "127.0.0.1", "port": 1000 + round, "tag": node}]})
        };
        let (a, b) = tokio::join!(
            put(first, "/backends/shared", body("a")),
            put(second, "/backends/shared", body("b")),
        );
        assert!(
            a.0 == 200 || b.0 == 200,
            "round {round}: neither won: {a:?} {b:?}"
        );
        for (status, answer) in [&a, &b] {
            assert!(
                matches!(status, 200 | 409),
                "round {round}: {status} {answer}"
            );
            if *status == 409 {
                conflicts += 1;
                assert_eq!(answer["field"], "key", "{answer}");
            }
        }
        // Both nodes converge on the last committed body.
        let version = fleet_view(first).await["version"].as_u64().unwrap();
        let what = format!("round {round}: both nodes on version {version}");
        eventually(Duration::from_secs(10), &what, || async {
            let view = fleet_view(first).await;
            view["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|n| n["version"] == version)
                .then_some(())
        })
        .await;
        let (_, on_first) = request(
            reqwest::Method::GET,
            &format!("{}/backends/shared/members", first.api),
            None,
        )
        .await;
        let (_, on_second) = request(
            reqwest::Method::GET,
            &format!("{}/backends/shared/members", second.api),
            None,
        )
        .await;
        assert_eq!(on_first[0]["port"], 1000 + round, "{on_first}");
        assert_eq!(
            on_first[0]["tag"], on_second[0]["tag"],
            "round {round}: diverged"
        );
        if conflicts >= 3 {
            break;
        }
    }
    assert!(conflicts > 0, "no concurrent PUT conflicted in 20 rounds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_one_node_refuses_is_reported_and_the_others_serve_it() {
    if !require_haproxy() || !require_redis() {
        return;
    }
    let fleet = start_fleet(2).await;
    let origin = Origin::start("refused-origin").await;
    let (first, second) = (&fleet.nodes[0], &fleet.nodes[1]);
    let (old_port, new_port) = (free_port(), free_port());
    assert_eq!(
        put(first, "/backends/web", static_backend(&origin)).await.0,
        200
    );
    assert_eq!(
        put(
            first,
            "/frontends/old?wait=fleet",
            frontend(old_port, "web")
        )
        .await
        .0,
        200
    );
    wait_serving(second, old_port, "refused-origin").await;

    // Another process holds the new port on the second node's address only.
    let squatter = std::net::TcpListener::bind((second.address, new_port)).unwrap();
    let (status, answer) = put(
        first,
        "/frontends/new?wait=fleet",
        frontend(new_port, "web"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let version = answer["version"].as_u64().unwrap();
    let state_of = |id: &str| {
        answer["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .map(|n| n["state"].clone())
    };
    assert_eq!(state_of("aq-1"), Some(json!("applied")), "{answer}");
    assert_eq!(state_of("aq-2"), Some(json!("refused")), "{answer}");
    wait_serving(first, new_port, "refused-origin").await;
    // The second node keeps serving its previous config.
    wait_serving(second, old_port, "refused-origin").await;
    let view = fleet_view(first).await;
    let row = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "aq-2")
        .unwrap()
        .clone();
    assert_eq!(row["outcome"], "refused", "{view}");
    assert_eq!(row["refusedVersion"], version, "{view}");
    assert_eq!(row["lag"], 1, "{view}");
    assert!(
        row["error"]
            .as_str()
            .unwrap()
            .contains(&new_port.to_string()),
        "the refusal names the address: {view}"
    );

    // Once the port is free, the next change brings the second node up to date.
    drop(squatter);
    let (status, answer) = put(
        first,
        "/frontends/other?wait=fleet",
        frontend(free_port(), "web"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    wait_serving(second, new_port, "refused-origin").await;
    let view = fleet_view(second).await;
    for row in view["nodes"].as_array().unwrap() {
        assert_eq!(row["lag"], 0, "{view}");
        assert_eq!(row["outcome"], "applied", "{view}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_store_serves_refuses_writes_and_catches_up() {
    if !require_haproxy() || !require_redis() {
        return;
    }
    let mut fleet = start_fleet(2).await;
    let origin = Origin::start("outage-origin").await;
    let port = free_port();
    {
        let first = &fleet.nodes[0];
        assert_eq!(
            put(first, "/backends/web", static_backend(&origin)).await.0,
            200
        );
        assert_eq!(
            put(first, "/frontends/www?wait=fleet", frontend(port, "web"))
                .await
                .0,
            200
        );
    }
    for node in &fleet.nodes {
        wait_serving(node, port, "outage-origin").await;
    }
    // The store stops answering (SIGSTOP): both nodes keep serving, writes get 503 at once.
    fleet.redis.primary.stop();
    let outage = std::time::Instant::now();
    let started = std::time::Instant::now();
    let (status, answer) = put(&fleet.nodes[1], "/backends/web", static_backend(&origin)).await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("fleet's store"),
        "{answer}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "503 took {:?}",
        started.elapsed()
    );
    for node in &fleet.nodes {
        assert_eq!(
            body_at(node.address, port).await.as_deref(),
            Some("outage-origin")
        );
    }
    // A node restarted during the outage starts on its local copy and serves.
    let second = fleet.nodes.pop().unwrap();
    let registry = fleet.registry_url.clone();
    let (id, addr) = (second.id.clone(), second.address);
    drop(second);
    let restarted = start_node(
        fleet.dir.path(),
        &id,
        addr,
        &fleet.redis.primary.url(),
        &registry,
    )
    .await;
    wait_serving(&restarted, port, "outage-origin").await;
    // It says where it started from.
    let log = restarted.proc.log_text();
    assert!(
        log.contains("starting with the local copy of the configuration"),
        "the restarted node does not say it serves its local copy"
    );
    fleet.nodes.push(restarted);
    // The outage lasts 30 s: both nodes serve throughout, every write is refused at once.
    while outage.elapsed() < Duration::from_secs(30) {
        for node in &fleet.nodes {
            let body = body_at(node.address, port).await;
            assert_eq!(
                body.as_deref(),
                Some("outage-origin"),
                "{} during the outage",
                node.id
            );
        }
        let (status, answer) = put(&fleet.nodes[0], "/backends/web", static_backend(&origin)).await;
        assert_eq!(status, 503, "{answer}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    fleet.redis.primary.cont();
    // After the outage (writes answer 503 with Retry-After until the node is back in touch)
    // a change reaches both again.
    let other = free_port();
    let answer = eventually(
        Duration::from_secs(10),
        "a write after the outage",
        || async {
            let (status, answer) = put(
                &fleet.nodes[1],
                "/frontends/after?wait=fleet",
                frontend(other, "web"),
            )
            .await;
            match status {
                200 => Some(answer),
                503 => None,
                _ => panic!("{status} {answer}"),
            }
        },
    )
    .await;
    assert_eq!(answer["nodes"].as_array().unwrap().len(), 2, "{answer}");
    for node in &fleet.nodes {
        wait_serving(node, other, "outage-origin").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_node_seeds_an_empty_store_and_the_next_takes_the_fleets_config() {
    if !require_haproxy() || !require_redis() {
        return;
    }
    let redis = redis_support::RedisCluster::single().await;
    let dir = tempfile::tempdir().unwrap();
    let registry_port = free_port();
    let _registry = support::start_registry(dir.path(), registry_port).await;
    let registry = format!("http://127.0.0.1:{registry_port}");
    // Each node has a local copy from earlier, different ones.
    for (id, key) in [("aq-1", "first-local"), ("aq-2", "second-local")] {
        let data = dir.path().join(id);
        std::fs::create_dir_all(&data).unwrap();
        let file = json!({"version": 2, "frontends": [], "backends": [
            {"key": key, "type": "static", "mode": "http",
             "members": [{"host": "127.0.0.1", "port": 9}]}]});
        std::fs::write(data.join("aqueduct.json"), file.to_string()).unwrap();
    }
    let first = start_node(
        dir.path(),
        "aq-1",
        fleet_support::address(2),
        &redis.primary.url(),
        &registry,
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the first node's config as version 1",
        || async {
            let view = fleet_view(&first).await;
            (view["version"] == 1 && view["nodes"][0]["version"] == 1).then_some(())
        },
    )
    .await;
    let second = start_node(
        dir.path(),
        "aq-2",
        fleet_support::address(3),
        &redis.primary.url(),
        &registry,
    )
    .await;
    for node in [&first, &second] {
        let what = format!("{} serves the fleet's config", node.id);
        eventually(Duration::from_secs(10), &what, || async {
            let (_, rows) = request(
                reqwest::Method::GET,
                &format!("{}/backends", node.api),
                None,
            )
            .await;
            let keys: Vec<&str> = rows
                .as_array()?
                .iter()
                .filter_map(|r| r["key"].as_str())
                .collect();
            (keys == ["first-local"]).then_some(())
        })
        .await;
    }
    let view = fleet_view(&second).await;
    for row in view["nodes"].as_array().unwrap() {
        assert_eq!(row["version"], 1, "{view}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_switch_on_one_node_moves_every_nodes_traffic() {
    if !require_haproxy() || !require_redis() {
        return;
    }
    let (fleet, _origins, port) = two_version_fleet(json!({})).await;
    let second = &fleet.nodes[1];
    // The switch is taken by the second node; both move to version 2, without a reload.
    let mut reloads_before = Vec::new();
    for node in &fleet.nodes {
        reloads_before.push(fleet_support::reloads(node).await);
    }
    let (status, answer) = request(
        reqwest::Method::POST,
        &format!("{}/backends/app?wait=fleet", second.api),
        Some(json!({"version": "2"})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    on_version_2_without_a_reload(&fleet, port, &reloads_before).await;
}

/// A rollout taken by one node splits every node's traffic (the rollout is part of the
/// backend in the store), and a promotion on another node moves every node to the new version;
/// no node reloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_on_one_node_splits_every_nodes_traffic() {
    if !require_haproxy() || !require_redis() {
        return;
    }
    let (fleet, _origins, port) = two_version_fleet(json!({"stickyCookie": "SRV"})).await;
    let (first, second) = (&fleet.nodes[0], &fleet.nodes[1]);
    let mut reloads_before = Vec::new();
    for node in &fleet.nodes {
        reloads_before.push(fleet_support::reloads(node).await);
    }
    let (status, answer) = request(
        reqwest::Method::POST,
        &format!("{}/backends/app/rollout?wait=fleet", second.api),
        Some(json!({"version": "2", "weight": 50})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["rollout"]["weight"], 50, "{answer}");
    assert!(
        answer["fleet"]["version"].is_u64(),
        "the fleet's answer: {answer}"
    );
    for node in &fleet.nodes {
        // One old and one new member at equal weights: round robin alternates them.
        let what = format!("{} to split new sessions between both versions", node.id);
        eventually(Duration::from_secs(15), &what, || async {
            let mut on_new = 0;
            for _ in 0..40 {
                match fleet_support::body_at(node.address, port).await?.as_str() {
                    "app-v2" => on_new += 1,
                    "app-v1" => {}
                    _ => return None,
                }
            }
            (on_new == 20).then_some(())
        })
        .await;
    }
    let (status, answer) = request(
        reqwest::Method::POST,
        &format!("{}/backends/app/rollout/promote?wait=fleet", first.api),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let rows = on_version_2_without_a_reload(&fleet, port, &reloads_before).await;
    for (node, row) in fleet.nodes.iter().zip(rows) {
        assert_eq!(row["rollout"]["state"], "finished", "{}: {row}", node.id);
    }
}

/// Waits until every node serves `app-v2` through `port`; asserts each node's API follows
/// version 2 and that no node reloaded since `reloads_before`; returns each node's row.
async fn on_version_2_without_a_reload(
    fleet: &fleet_support::Fleet,
    port: u16,
    reloads_before: &[u64],
) -> Vec<serde_json::Value> {
    let mut rows = Vec::new();
    for node in &fleet.nodes {
        wait_serving(node, port, "app-v2").await;
        let (_, row) = request(
            reqwest::Method::GET,
            &format!("{}/backends/app", node.api),
            None,
        )
        .await;
        assert_eq!(row["version"], "2", "{}: {row}", node.id);
        rows.push(row);
    }
    for (node, before) in fleet.nodes.iter().zip(reloads_before) {
        assert_eq!(
            fleet_support::reloads(node).await,
            *before,
            "{} reloaded",
            node.id
        );
    }
    rows
}

/// Two nodes serving frontend `www` in front of dynamic backend `app` (following `app@1`, with
/// the `extra` settings), PUT on the first node, and one origin registered for each of
/// `app@1` and `app@2`; returns the fleet, the origins and the frontend's port.
async fn two_version_fleet(extra: serde_json::Value) -> (fleet_support::Fleet, [Origin; 2], u16) {
    let fleet = start_fleet(2).await;
    let origins = [Origin::start("app-v1").await, Origin::start("app-v2").await];
    for (version, origin) in [("1", &origins[0]), ("2", &origins[1])] {
        let url = format!(
            "{}/registrations/app/{version}/127.0.0.1/{}",
            fleet.registry_url,
            origin.port()
        );
        let response = support::client()
            .post(url)
            .body(r#"{"secondsToExpire":600}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let port = free_port();
    let first = &fleet.nodes[0];
    let mut backend = json!({"type": "dynamic", "name": "app", "version": "1", "mode": "http",
                             "health": {"interval": 100}});
    for (field, value) in extra.as_object().unwrap() {
        backend[field] = value.clone();
    }
    assert_eq!(put(first, "/backends/app", backend).await.0, 200);
    let (status, answer) = put(first, "/frontends/www?wait=fleet", frontend(port, "app")).await;
    assert_eq!(status, 200, "{answer}");
    for node in &fleet.nodes {
        wait_serving(node, port, "app-v1").await;
    }
    (fleet, origins, port)
}
