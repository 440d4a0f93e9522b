//! Fault tests: the registry restarted (`kill -9`, down past every lease, then started again
//! on its data dir) and
//! the registry hung (`SIGSTOP`) for a minute while members' leases would have expired. The
//! aqueduct keeps every member serving through both (a registry outage never removes
//! members), resumes its stream, and follows changes again afterwards.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

mod redis_support;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};
use support::{
    Load, Origin, Proc, app_members_up, client, configure_web_app, eventually, free_port,
    require_haproxy, signal, spawn_thalassa, start_aqueduct, start_registry, wait_for_body,
};

/// Keeps `app@1` registered for `origin` the way a service does: `thalassa register`,
/// heartbeating every second with a 5 s lease.
fn heartbeat(dir: &Path, registry: &str, origin: &Origin) -> Proc {
    spawn_thalassa(
        dir,
        &format!("register-{}", origin.port()),
        &[
            "register",
            &format!("app@1:{}", origin.port()),
            "--registry",
            registry,
            "--host",
            "127.0.0.1",
            "--every",
            "1s",
            "--secs-to-expire",
            "5",
        ],
    )
}

struct Setup {
    dir: tempfile::TempDir,
    registry: String,
    registry_port: u16,
    api: String,
    proxy_port: u16,
    registry_proc: Proc,
    _aqueduct: Proc,
    origins: Vec<Origin>,
    _heartbeats: Vec<Proc>,
}

/// Registry + aqueduct as separate processes, two heartbeating members of `app`, serving.
async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (registry_port, api_port, proxy_port) = (free_port(), free_port(), free_port());
    let registry = format!("http://127.0.0.1:{registry_port}");
    let api = format!("http://127.0.0.1:{api_port}");
    let registry_proc = start_registry(dir.path(), registry_port).await;
    let aqueduct = start_aqueduct(dir.path(), "aqueduct", api_port, &registry).await;
    configure_web_app(&api, proxy_port).await;
    let origins = vec![Origin::start("web").await, Origin::start("web").await];
    let heartbeats = origins
        .iter()
        .map(|origin| heartbeat(dir.path(), &registry, origin))
        .collect();
    wait_for_body(proxy_port, "web").await;
    eventually(Duration::from_secs(15), "both members UP", || async {
        (app_members_up(&api).await == 2).then_some(())
    })
    .await;
    Setup {
        dir,
        registry,
        registry_port,
        api,
        proxy_port,
        registry_proc,
        _aqueduct: aqueduct,
        origins,
        _heartbeats: heartbeats,
    }
}

/// A third member registered once (long lease) reaches HAProxy: the aqueduct follows the
/// registry again.
async fn a_new_member_arrives(setup: &Setup) -> Origin {
    let third = Origin::start("web").await;
    let url = format!(
        "{}/registrations/app/1/127.0.0.1/{}",
        setup.registry,
        third.port()
    );
    let response = client()
        .post(url)
        .body(r#"{"secondsToExpire":600}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    eventually(Duration::from_secs(15), "the third member UP", || async {
        (app_members_up(&setup.api).await == 3).then_some(())
    })
    .await;
    third
}

async fn registrations_of_app(registry: &str) -> usize {
    let response = client()
        .get(format!("{registry}/registrations/app/1"))
        .send()
        .await
        .unwrap();
    let list: serde_json::Value = response.json().await.unwrap();
    list.as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_restart_keeps_registrations_and_members() {
    if !require_haproxy() {
        return;
    }
    let mut setup = setup().await;
    let load = Load::start(setup.proxy_port, 4);
    load.wait_ok(300).await;
    // The periodic snapshot (at most a second after a change) has the registrations.
    let snapshot = setup.dir.path().join("registry").join("registrations.json");
    eventually(
        Duration::from_secs(10),
        "both members in the registry's snapshot",
        || async {
            let text = std::fs::read_to_string(&snapshot).ok()?;
            setup
                .origins
                .iter()
                .all(|o| text.contains(&format!("/app/1/127.0.0.1/{}", o.port())))
                .then_some(())
        },
    )
    .await;

    let before = load.snapshot();
    let fault_at = Instant::now();
    signal(setup.registry_proc.pid(), "KILL");
    let _ = setup.registry_proc.child.wait();
    // Down past every member's 5 s lease: the restarted registry must not expire them
    // before their heartbeats (retrying meanwhile) reach it.
    while fault_at.elapsed() < Duration::from_secs(8) {
        load.wait_ok(100).await;
    }
    setup.registry_proc = start_registry(setup.dir.path(), setup.registry_port).await;
    let back_in = fault_at.elapsed();
    assert_eq!(
        registrations_of_app(&setup.registry).await,
        2,
        "registrations kept"
    );
    let _third = a_new_member_arrives(&setup).await;
    load.wait_ok(300).await;
    let report = load.report_since(&before, fault_at);
    report.print(&format!(
        "kill -9 registry, down past the leases, restarted after {:.2} s",
        back_in.as_secs_f64()
    ));
    load.stop().await;
    assert_eq!(report.failed, 0, "a registry restart must cost no request");
    for origin in &setup.origins {
        assert!(origin.count() > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_hung_for_a_minute_removes_no_member() {
    if !require_haproxy() {
        return;
    }
    // 60 s as the issue asks; THALASSA_FAULT_OUTAGE_SECS shortens it for local runs.
    let outage = Duration::from_secs(
        std::env::var("THALASSA_FAULT_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    );
    let setup = setup().await;
    let load = Load::start(setup.proxy_port, 2);
    load.wait_ok(300).await;

    let before = load.snapshot();
    let fault_at = Instant::now();
    signal(setup.registry_proc.pid(), "STOP");
    // The members' 5 s leases pass many times over; the aqueduct keeps them all.
    let mut checked = 0;
    while fault_at.elapsed() < outage {
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            app_members_up(&setup.api).await,
            2,
            "members stay while hung"
        );
        checked += 1;
    }
    let during = load.report_since(&before, fault_at);
    during.print(&format!(
        "registry hung (SIGSTOP) for {} s",
        outage.as_secs()
    ));
    assert!(checked >= 2);
    assert_eq!(
        during.failed, 0,
        "no request fails while the registry hangs"
    );

    let resumed_at = Instant::now();
    let before_resume = load.snapshot();
    signal(setup.registry_proc.pid(), "CONT");
    // The heartbeats resume; whatever the registry expired meanwhile registers again.
    eventually(
        Duration::from_secs(30),
        "the registry to answer",
        || async { (registrations_of_app(&setup.registry).await == 2).then_some(()) },
    )
    .await;
    let _third = a_new_member_arrives(&setup).await;
    load.wait_ok(300).await;
    let after = load.report_since(&before_resume, resumed_at);
    after.print("registry resumed (SIGCONT) after the hang");
    load.stop().await;
    assert_eq!(
        after.failed, 0,
        "no request fails when the registry comes back"
    );
    // The registry knew it had been stalled and held the leases that ran out meanwhile (its
    // expiry task logs that when it runs again, beside the answers: awaited).
    // Up to 10 s, then the log is shown.
    let asked = Instant::now();
    let log = eventually(Duration::from_secs(15), "the registry's log", || async {
        let log = setup.registry_proc.log_text();
        (log.contains("the registry was stalled") || asked.elapsed() > Duration::from_secs(10))
            .then_some(log)
    })
    .await;
    assert!(log.contains("the registry was stalled"), "{log}");
}

/// Registers `origin` as a member of `app@1` on the registry node at `node`, long lease.
async fn register_on(node: &str, origin: &Origin) {
    let url = format!("{node}/registrations/app/1/127.0.0.1/{}", origin.port());
    let response = client()
        .post(url)
        .body(r#"{"secondsToExpire":600}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn aqueduct_metrics(api: &str) -> String {
    match client().get(format!("{api}/metrics")).send().await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Aqueducts follow a cluster (`--registry A,B`): two registry nodes hold the same
/// registrations (as a shared store would give them); a kill -9 of the node the aqueduct
/// follows costs no request and no member, `/metrics` names the other node, and the aqueduct
/// follows that node's changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aqueduct_follows_the_next_registry_node_when_one_dies() {
    if !require_haproxy() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (dir.path().join("node-a"), dir.path().join("node-b"));
    for node_dir in [&dir_a, &dir_b] {
        std::fs::create_dir_all(node_dir).unwrap();
    }
    let (port_a, port_b) = (free_port(), free_port());
    let (api_port, proxy_port) = (free_port(), free_port());
    let node_a = format!("http://127.0.0.1:{port_a}");
    let node_b = format!("http://127.0.0.1:{port_b}");
    let api = format!("http://127.0.0.1:{api_port}");
    let mut registry_a = start_registry(&dir_a, port_a).await;
    let _registry_b = start_registry(&dir_b, port_b).await;
    let _aqueduct = start_aqueduct(
        dir.path(),
        "aqueduct",
        api_port,
        &format!("{node_a},{node_b}"),
    )
    .await;
    configure_web_app(&api, proxy_port).await;
    let origins = vec![Origin::start("web").await, Origin::start("web").await];
    for origin in &origins {
        for node in [&node_a, &node_b] {
            register_on(node, origin).await;
        }
    }
    eventually(Duration::from_secs(15), "both members UP", || async {
        (app_members_up(&api).await == 2).then_some(())
    })
    .await;
    // The node followed, and that its stream is open.
    let follows = |text: &str, node: &str| {
        text.lines()
            .any(|line| line == format!("thalassa_feed_node{{url=\"{node}\"}} 1"))
            && text.lines().any(|line| line == "thalassa_feed_connected 1")
    };
    let text = aqueduct_metrics(&api).await;
    assert!(follows(&text, &node_a), "{text}");

    let load = Load::start(proxy_port, 2);
    load.wait_ok(300).await;
    let before = load.snapshot();
    let fault_at = Instant::now();
    signal(registry_a.pid(), "KILL");
    let _ = registry_a.child.wait();
    eventually(
        Duration::from_secs(15),
        "the aqueduct following the second node",
        || async {
            let text = aqueduct_metrics(&api).await;
            (follows(&text, &node_b) && text.contains("thalassa_feed_failovers_total 1"))
                .then_some(())
        },
    )
    .await;
    assert_eq!(app_members_up(&api).await, 2, "no member removed");
    let third = Origin::start("web").await;
    register_on(&node_b, &third).await;
    eventually(Duration::from_secs(15), "the third member UP", || async {
        (app_members_up(&api).await == 3).then_some(())
    })
    .await;
    load.wait_ok(300).await;
    let report = load.report_since(&before, fault_at);
    report.print("kill -9 of the registry node the aqueduct follows");
    load.stop().await;
    assert_eq!(
        report.failed, 0,
        "a registry node's death must cost no request"
    );
}

/// `thalassa registry --store <store>` on `127.0.0.1:<port>`: one node of a registry cluster.
async fn start_cluster_node(dir: &Path, name: &str, port: u16, store: &str) -> Proc {
    let data = dir.join(name);
    let mut proc = spawn_thalassa(
        dir,
        name,
        &[
            "registry",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            data.to_str().unwrap(),
            "--store",
            store,
        ],
    );
    support::wait_http(&format!("http://127.0.0.1:{port}/status"), &mut proc).await;
    proc
}

/// A registry cluster on a real Redis: three nodes, the aqueduct follows two of them
/// (`--registry A,B`), the members register on the third. `kill -9` of the node the aqueduct
/// reads from costs no request and no member change: it resumes on B by event id, and a
/// member registered on C afterwards still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aqueduct_following_two_of_three_cluster_nodes_survives_the_death_of_its_node() {
    if !require_haproxy() || !redis_support::require_redis() {
        return;
    }
    let redis = redis_support::RedisCluster::single().await;
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let mut node_a = start_cluster_node(dir.path(), "node-a", ports[0], &redis.primary.url()).await;
    let _node_b = start_cluster_node(dir.path(), "node-b", ports[1], &redis.primary.url()).await;
    let _node_c = start_cluster_node(dir.path(), "node-c", ports[2], &redis.primary.url()).await;
    let (api_port, proxy_port) = (free_port(), free_port());
    let api = format!("http://127.0.0.1:{api_port}");
    let _aqueduct = start_aqueduct(
        dir.path(),
        "aqueduct",
        api_port,
        &format!("{},{}", urls[0], urls[1]),
    )
    .await;
    configure_web_app(&api, proxy_port).await;
    let origins = vec![Origin::start("web").await, Origin::start("web").await];
    for origin in &origins {
        register_on(&urls[2], origin).await;
    }
    eventually(Duration::from_secs(15), "both members UP", || async {
        (app_members_up(&api).await == 2).then_some(())
    })
    .await;
    let follows = |text: &str, node: &str| {
        text.lines()
            .any(|line| line == format!("thalassa_feed_node{{url=\"{node}\"}} 1"))
    };
    assert!(follows(&aqueduct_metrics(&api).await, &urls[0]));
    let load = Load::start(proxy_port, 2);
    load.wait_ok(300).await;
    let before = load.snapshot();
    let fault_at = Instant::now();
    signal(node_a.pid(), "KILL");
    let _ = node_a.child.wait();
    // Watch the members through the failover: never one fewer.
    let mut lowest = usize::MAX;
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        lowest = lowest.min(app_members_up(&api).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually(
        Duration::from_secs(40),
        "the aqueduct following node B",
        || async { follows(&aqueduct_metrics(&api).await, &urls[1]).then_some(()) },
    )
    .await;
    assert_eq!(lowest, 2, "no member removed during the failover");
    let third = Origin::start("web").await;
    register_on(&urls[2], &third).await;
    eventually(Duration::from_secs(15), "the third member UP", || async {
        (app_members_up(&api).await == 3).then_some(())
    })
    .await;
    load.wait_ok(300).await;
    let report = load.report_since(&before, fault_at);
    report.print("kill -9 of the cluster node the aqueduct follows");
    load.stop().await;
    assert_eq!(
        report.failed, 0,
        "a registry node's death must cost no request"
    );
}
