//! Faults in a fleet of aqueducts (real Redis, real HAProxies): `kill -9` of one aqueduct under
//! load costs nothing through the survivor and the restarted node catches up with one reload at
//! most; a node cut off from the store keeps serving, refuses writes, and catches up with the
//! changes the rest of the fleet made meanwhile.
#![allow(clippy::unwrap_used)] // test helpers: a panic is a test failure

mod fleet_support;
mod redis_support;
mod support;

use fleet_support::{
    Node, address, fleet_view, frontend, put, reloads, start_fleet, start_node, static_backend,
    wait_serving,
};
use redis_support::{Fault, FaultProxy, RedisCluster, require_redis};
use std::time::{Duration, Instant};
use support::{
    KillHaproxiesOnDrop, Load, Origin, eventually, free_port, require_haproxy, signal,
    start_registry,
};

async fn versions_equal(node: &Node) -> Option<u64> {
    let view = fleet_view(node).await;
    let version = view["version"].as_u64()?;
    view["nodes"]
        .as_array()?
        .iter()
        .filter(|n| n["gone"] == false)
        .all(|n| n["version"] == version && n["lag"] == 0)
        .then_some(version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_one_aqueduct_under_load_costs_nothing_and_it_catches_up_with_one_reload() {
    if !require_haproxy() || !require_redis() {
        return;
    }
    let mut fleet = start_fleet(2).await;
    let origin = Origin::start("kill-origin").await;
    let port = free_port();
    assert_eq!(
        put(&fleet.nodes[0], "/backends/web", static_backend(&origin))
            .await
            .0,
        200
    );
    let (status, answer) = put(
        &fleet.nodes[0],
        "/frontends/www?wait=fleet",
        frontend(port, "web"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    for node in &fleet.nodes {
        wait_serving(node, port, "kill-origin").await;
    }
    let survivor_load = Load::start_at(fleet.nodes[0].address, port, 4);
    let victim_load = Load::start_at(fleet.nodes[1].address, port, 4);
    survivor_load.wait_ok(200).await;
    victim_load.wait_ok(200).await;
    let (survivor_before, victim_before) = (survivor_load.snapshot(), victim_load.snapshot());
    let killed_at = Instant::now();

    // kill -9 of the second aqueduct: its HAProxy is left serving (and taken over later).
    let victim = fleet.nodes.pop().unwrap();
    let _haproxies = KillHaproxiesOnDrop(fleet.dir.path().join(&victim.id).join("haproxy"));
    let (id, victim_address) = (victim.id.clone(), victim.address);
    let mut proc = victim.proc;
    signal(proc.pid(), "KILL");
    let _ = proc.child.wait();

    // The fleet changes while it is down.
    let later_port = free_port();
    let (status, answer) = put(
        &fleet.nodes[0],
        "/frontends/later",
        frontend(later_port, "web"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    // It stopped reporting: the fleet shows it gone (and lagging) after 5 s.
    eventually(
        Duration::from_secs(15),
        "the killed node shown gone",
        || async {
            let view = fleet_view(&fleet.nodes[0]).await;
            let row = view["nodes"]
                .as_array()?
                .iter()
                .find(|n| n["id"] == id)?
                .clone();
            (row["gone"] == true && row["lag"].as_u64()? >= 1).then_some(())
        },
    )
    .await;

    // Restarted, it starts with the fleet's current config: one reload at most.
    let restarted = start_node(
        fleet.dir.path(),
        &id,
        victim_address,
        &fleet.redis.primary.url(),
        &fleet.registry_url,
    )
    .await;
    wait_serving(&restarted, later_port, "kill-origin").await;
    fleet.nodes.push(restarted);
    eventually(
        Duration::from_secs(10),
        "both nodes on one version",
        || async { versions_equal(&fleet.nodes[0]).await },
    )
    .await;
    let restarted_reloads = reloads(&fleet.nodes[1]).await;
    assert!(
        restarted_reloads <= 1,
        "the restarted node reloaded {restarted_reloads} times to catch up"
    );
    survivor_load.wait_ok(200).await;
    victim_load.wait_ok(200).await;
    let survivor = survivor_load.report_since(&survivor_before, killed_at);
    let taken_over = victim_load.report_since(&victim_before, killed_at);
    survivor.print("kill -9 of the other aqueduct, through the survivor");
    taken_over.print("kill -9 of this aqueduct, through its own HAProxy");
    assert_eq!(survivor.failed, 0, "{:?}", survivor.kinds);
    assert_eq!(taken_over.failed, 0, "{:?}", taken_over.kinds);
    survivor_load.stop().await;
    victim_load.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_store_catches_up_with_what_the_fleet_changed() {
    if !require_haproxy() || !require_redis() {
        return;
    }
    let redis = RedisCluster::single().await;
    let proxy = FaultProxy::start(redis.primary.port).await;
    let dir = tempfile::tempdir().unwrap();
    let registry_port = free_port();
    let _registry = start_registry(dir.path(), registry_port).await;
    let registry = format!("http://127.0.0.1:{registry_port}");
    let cut = start_node(dir.path(), "aq-1", address(2), &proxy.url(), &registry).await;
    let direct = start_node(
        dir.path(),
        "aq-2",
        address(3),
        &redis.primary.url(),
        &registry,
    )
    .await;
    let origin = Origin::start("cut-origin").await;
    let port = free_port();
    assert_eq!(
        put(&direct, "/backends/web", static_backend(&origin))
            .await
            .0,
        200
    );
    let (status, answer) = put(&direct, "/frontends/www?wait=fleet", frontend(port, "web")).await;
    assert_eq!(status, 200, "{answer}");
    wait_serving(&cut, port, "cut-origin").await;

    proxy.set(Fault::Blackhole);
    // The cut node refuses writes within a second, and keeps serving.
    let started = Instant::now();
    let (status, answer) = put(&cut, "/frontends/refused", frontend(free_port(), "web")).await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The rest of the fleet changes meanwhile.
    let new_port = free_port();
    let (status, answer) = put(&direct, "/frontends/new", frontend(new_port, "web")).await;
    assert_eq!(status, 200, "{answer}");
    wait_serving(&direct, new_port, "cut-origin").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    wait_serving(&cut, port, "cut-origin").await;

    proxy.set(Fault::Pass);
    wait_serving(&cut, new_port, "cut-origin").await;
    let version = eventually(
        Duration::from_secs(10),
        "both nodes on one version",
        || async { versions_equal(&direct).await },
    )
    .await;
    // The refused write was not queued: it never became a version.
    let (status, _) = support::client()
        .get(format!("{}/frontends/refused", cut.api))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(
        status, 404,
        "a refused write reappeared (fleet version {version})"
    );
}
