//! Faults injected into a registry cluster on a real Redis: `kill -9` of a registry node under
//! heartbeat load, `kill -9` of the Redis primary with three Sentinels, a cut network between
//! one node and Redis (a fault proxy: blackhole, reset, latency), and a `SIGSTOP` of the
//! primary. Each checks what the registry promises: nothing acknowledged is lost, services
//! that kept heartbeating never expire, nothing is invented while out of touch, and every
//! follower ends with the store's state.
#![allow(clippy::unwrap_used)] // a panic in a test is a test failure

mod redis_support;
mod registry_support;
mod support;

use redis_support::{Fault, FaultProxy, RawHttp, RedisCluster, require_redis};
use registry_support::{EventStream, Registry};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::eventually;
use thalassa::registry::feed::{FeedItem, OfflineReason, RegistryEvent};

const WAIT: Duration = Duration::from_secs(30);

/// Every item a follower received, read in the background until dropped.
struct Follower {
    items: Arc<std::sync::Mutex<Vec<FeedItem>>>,
    ended: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Follower {
    async fn open(url: &str, last_event_id: Option<u64>) -> Follower {
        let mut stream =
            EventStream::open(url, last_event_id.map(|id| id.to_string()).as_deref()).await;
        let items = Arc::new(std::sync::Mutex::new(Vec::new()));
        let ended = Arc::new(AtomicBool::new(false));
        let (sink, done) = (items.clone(), ended.clone());
        let task = tokio::spawn(async move {
            while let Some(item) = stream.try_next_or_end(Duration::from_secs(3600)).await {
                sink.lock().unwrap().push(item);
            }
            done.store(true, Ordering::SeqCst);
        });
        Follower { items, ended, task }
    }

    fn items(&self) -> Vec<FeedItem> {
        self.items.lock().unwrap().clone()
    }

    fn last_seq(&self) -> Option<u64> {
        self.items.lock().unwrap().last().map(FeedItem::seq)
    }

    /// Offline events for ids starting with `prefix`.
    fn offline(&self, prefix: &str) -> Vec<(String, OfflineReason)> {
        self.items()
            .into_iter()
            .filter_map(|item| match item {
                FeedItem::Event {
                    event: RegistryEvent::Offline { id, reason },
                    ..
                } if id.starts_with(prefix) => Some((id, reason)),
                _ => None,
            })
            .collect()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The ids a follower's items add up to (snapshots replace, events apply).
fn view(items: &[FeedItem], prefix: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for item in items {
        match item {
            FeedItem::Snapshot { registrations, .. } => {
                ids = registrations.iter().map(|r| r.id.clone()).collect();
            }
            FeedItem::Event {
                event: RegistryEvent::Online(r),
                ..
            } => {
                ids.insert(r.id.clone());
            }
            FeedItem::Event {
                event: RegistryEvent::Offline { id, .. },
                ..
            } => {
                ids.remove(id);
            }
        }
    }
    ids.into_iter()
        .filter(|id| id.starts_with(prefix))
        .collect()
}

async fn ids_on(node: &Registry, name: &str) -> BTreeSet<String> {
    let all = node.get(&format!("/registrations/{name}")).await;
    all.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until `follower`'s view of `prefix` equals `expected`.
async fn converges(follower: &Follower, prefix: &str, expected: &BTreeSet<String>, what: &str) {
    eventually(WAIT, what, || async {
        (view(&follower.items(), prefix) == *expected).then_some(())
    })
    .await;
}

/// Heartbeats for `ports` of `svc@1`, spread over `every`, on `ports.len() / every` per second:
/// each POST goes to the task's node first and to the next node when that one fails (as
/// `thalassa register --registry A,B,C` does). Counts POSTs that no node took.
struct Heartbeats {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    unanswered: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Heartbeats {
    fn start(
        node_ports: &[u16],
        name: &str,
        ports: Vec<u16>,
        lease_secs: u64,
        every: Duration,
        tasks: usize,
    ) -> Heartbeats {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let unanswered = Arc::new(AtomicU64::new(0));
        let mut handles = Vec::new();
        for t in 0..tasks {
            let mine: Vec<u16> = ports.iter().copied().skip(t).step_by(tasks).collect();
            let nodes: Vec<u16> = node_ports.to_vec();
            let (stop, sent, unanswered) = (stop.clone(), sent.clone(), unanswered.clone());
            let name = name.to_owned();
            handles.push(tokio::spawn(async move {
                let mut clients: Vec<RawHttp> = nodes.iter().map(|p| RawHttp::new(*p)).collect();
                let body = format!(r#"{{"secondsToExpire":{lease_secs}}}"#);
                let pause = every / (mine.len().max(1) as u32);
                let mut first = t % clients.len();
                while !stop.load(Ordering::SeqCst) {
                    let round = Instant::now();
                    for (n, port) in mine.iter().enumerate() {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let path = format!("/registrations/{name}/1/127.0.0.1/{port}");
                        let mut taken = false;
                        for attempt in 0..clients.len() {
                            let k = (first + attempt) % clients.len();
                            if clients[k].request("POST", &path, &body).await == 200 {
                                taken = true;
                                first = k;
                                break;
                            }
                        }
                        sent.fetch_add(1, Ordering::Relaxed);
                        if !taken {
                            unanswered.fetch_add(1, Ordering::Relaxed);
                        }
                        let due = round + pause * (n as u32 + 1);
                        tokio::time::sleep_until(due.into()).await;
                    }
                }
            }));
        }
        Heartbeats {
            stop,
            sent,
            unanswered,
            tasks: handles,
        }
    }

    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            let _ = task.await;
        }
        (
            self.sent.load(Ordering::SeqCst),
            self.unanswered.load(Ordering::SeqCst),
        )
    }
}

/// Creates `svc@1` on `ports` through `node`, in parallel.
async fn create(node_port: u16, name: &str, ports: &[u16], lease_secs: u64) {
    let mut tasks = Vec::new();
    for chunk in ports.chunks(ports.len().div_ceil(8).max(1)) {
        let chunk = chunk.to_vec();
        let name = name.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut http = RawHttp::new(node_port);
            let body = format!(r#"{{"secondsToExpire":{lease_secs}}}"#);
            for port in chunk {
                let status = http
                    .request(
                        "POST",
                        &format!("/registrations/{name}/1/127.0.0.1/{port}"),
                        &body,
                    )
                    .await;
                assert_eq!(status, 200, "create {name} {port}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_heartbeat_load_loses_nothing() {
    if !require_redis() {
        return;
    }
    const N: u16 = 20_000;
    let redis = RedisCluster::single().await;
    let url = redis.primary.url();
    let a = Registry::start(&["--store", &url]).await;
    let b = Registry::start(&["--store", &url]).await;
    let mut c = Registry::start(&["--store", &url]).await;
    let ports: Vec<u16> = (1..=N).collect();
    create(a.port, "hb", &ports, 10).await;
    let on_a = Follower::open(&a.url, None).await;
    let on_c = Follower::open(&c.url, None).await;
    // About 5,000 heartbeats a second: every registration every 4 s (lease 10 s).
    let load = Heartbeats::start(
        &[a.port, b.port, c.port],
        "hb",
        ports.clone(),
        10,
        Duration::from_secs(4),
        12,
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    c.process.kill();
    // C's follower sees its stream end, and resumes on A from the last id it processed.
    eventually(WAIT, "the stream from the killed node to end", || async {
        on_c.ended.load(Ordering::SeqCst).then_some(())
    })
    .await;
    let resumed_from = on_c.last_seq().unwrap();
    let moved = Follower::open(&a.url, Some(resumed_from)).await;
    // Longer than a lease after the kill: anything not refreshed would have expired.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let (sent, unanswered) = load.stop().await;
    eprintln!("heartbeats sent {sent}, taken by no node {unanswered}");
    assert_eq!(unanswered, 0, "every heartbeat was taken by some node");
    assert!(sent > 20_000, "the load ran ({sent} heartbeats)");
    let expected: BTreeSet<String> = ports
        .iter()
        .map(|p| format!("/hb/1/127.0.0.1/{p}"))
        .collect();
    for node in [&a, &b] {
        let held = ids_on(node, "hb").await;
        let lost: Vec<&String> = expected.difference(&held).take(5).collect();
        assert!(
            lost.is_empty(),
            "{} of {N} registrations lost, e.g. {lost:?}",
            expected.len() - held.len()
        );
    }
    assert_eq!(
        on_a.offline("/hb/"),
        vec![],
        "no heartbeating service expired"
    );
    converges(&on_a, "/hb/", &expected, "A's follower").await;
    // The follower that moved: C's items up to the kill, then A's from the resume point.
    let mut joined = on_c.items();
    let after = moved.items();
    assert!(
        !after.iter().any(FeedItem::is_snapshot),
        "resumed without a snapshot"
    );
    joined.extend(after);
    assert_eq!(view(&joined, "/hb/"), expected, "the moved follower's view");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_with_sentinels_fails_over_without_mass_expiry() {
    if !require_redis() {
        return;
    }
    let mut redis = RedisCluster::with_sentinels().await;
    let url = redis.sentinel_url();
    let a = Registry::start(&["--store", &url]).await;
    let b = Registry::start(&["--store", &url]).await;
    let ports: Vec<u16> = (1..=300).collect();
    create(a.port, "fo", &ports, 10).await;
    // A delete acknowledged before the failover stays deleted after it. A delete no replica
    // confirmed in time is a 503, which a client retries (the replica may be slow to ack on a
    // loaded machine).
    eventually(WAIT, "the delete to be acknowledged", || async {
        let (status, body) = a.delete("/registrations/fo/1/127.0.0.1/300").await;
        assert!(status == 200 || status == 503, "{status} {body}");
        (status == 200).then_some(())
    })
    .await;
    let live: Vec<u16> = (1..300).collect();
    let on_a = Follower::open(&a.url, None).await;
    let on_b = Follower::open(&b.url, None).await;
    let load = Heartbeats::start(
        &[a.port, b.port],
        "fo",
        live.clone(),
        10,
        Duration::from_secs(1),
        2,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let old_primary = redis.primary.port;
    let killed_at = Instant::now();
    redis.primary.kill_9();
    eventually(
        Duration::from_secs(30),
        "Sentinel to promote the replica",
        || async {
            redis
                .primary_port_by_sentinel()
                .await
                .filter(|port| *port != old_primary)
        },
    )
    .await;
    eprintln!("failover after {:?}", killed_at.elapsed());
    // Writes work again on both nodes.
    for node in [&a, &b] {
        eventually(WAIT, "a write to succeed after the failover", || async {
            let (status, _) = node.post("/registrations/probe/1/127.0.0.1/1", "{}").await;
            (status == 200).then_some(())
        })
        .await;
    }
    let healed_at = Instant::now();
    // Longer than a lease after the failover.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let unanswered_before_stop = load.unanswered.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (sent, unanswered) = load.stop().await;
    eprintln!(
        "heartbeats sent {sent}, refused by every node {unanswered} (all during the failover: {:?})",
        healed_at - killed_at
    );
    assert_eq!(
        unanswered, unanswered_before_stop,
        "writes refused only during the failover"
    );
    let expected: BTreeSet<String> = live
        .iter()
        .map(|p| format!("/fo/1/127.0.0.1/{p}"))
        .collect();
    assert_eq!(
        ids_on(&a, "fo").await,
        expected,
        "no mass expiry, the delete not resurrected"
    );
    assert_eq!(ids_on(&b, "fo").await, expected);
    for (name, follower) in [("A", &on_a), ("B", &on_b)] {
        converges(
            follower,
            "/fo/",
            &expected,
            &format!("{name}'s follower to match the store"),
        )
        .await;
        let expired: Vec<_> = follower
            .offline("/fo/")
            .into_iter()
            .filter(|(_, reason)| *reason == OfflineReason::Expired)
            .collect();
        assert_eq!(expired, vec![], "{name}: no heartbeating service expired");
    }
}

/// `GET` with the status, the stale header and the body.
async fn get_raw(url: &str) -> (u16, Option<String>, String) {
    let response = registry_support::client().get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let stale = response
        .headers()
        .get("x-thalassa-stale-ms")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, stale, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_cut_to_redis_refuses_writes_serves_stale_reads_and_invents_nothing() {
    if !require_redis() {
        return;
    }
    let redis = RedisCluster::single().await;
    let proxy = FaultProxy::start(redis.primary.port).await;
    let cut = Registry::start(&["--store", &proxy.url()]).await;
    let direct = Registry::start(&["--store", &redis.primary.url()]).await;
    assert_eq!(
        direct
            .post(
                "/registrations/keep/1/127.0.0.1/1",
                r#"{"secondsToExpire":600}"#
            )
            .await
            .0,
        200
    );
    assert_eq!(
        direct
            .post(
                "/registrations/short/1/127.0.0.1/1",
                r#"{"secondsToExpire":2}"#
            )
            .await
            .0,
        200
    );
    let follower = Follower::open(&cut.url, None).await;
    eventually(WAIT, "the cut node's follower to see both", || async {
        (view(&follower.items(), "/").len() >= 2).then_some(())
    })
    .await;
    for fault in [Fault::Blackhole, Fault::Reset] {
        proxy.set(fault);
        let started = Instant::now();
        let response = registry_support::client()
            .post(format!("{}/registrations/new/1/127.0.0.1/1", cut.url))
            .body("{}")
            .send()
            .await
            .unwrap();
        let took = started.elapsed();
        eprintln!(
            "{fault:?}: a write answered {} after {took:?}",
            response.status()
        );
        assert_eq!(response.status(), 503, "{fault:?}");
        assert_eq!(response.headers()["retry-after"], "1");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("store"), "{body}");
        assert!(
            took < Duration::from_secs(2),
            "{fault:?}: the 503 took {took:?}"
        );
        // Reads come from the local copy, marked stale; /status drains the node after 1 s.
        let (status, _, body) = get_raw(&format!("{}/registrations/keep", cut.url)).await;
        assert_eq!(status, 200);
        assert!(body.contains("/keep/1/127.0.0.1/1"), "{body}");
        eventually(WAIT, "/status to answer 503", || async {
            let (status, stale, body) = get_raw(&format!("{}/status", cut.url)).await;
            (status == 503 && stale.is_some() && body.contains("staleMs")).then_some(())
        })
        .await;
        let (_, stale, _) = get_raw(&format!("{}/registrations", cut.url)).await;
        assert!(stale.is_some(), "{fault:?}: a listing marked stale");
        // Meanwhile the rest of the cluster works.
        assert_eq!(
            direct
                .post("/registrations/during/1/127.0.0.1/1", "{}")
                .await
                .0,
            200
        );
        proxy.set(Fault::Pass);
        eventually(WAIT, "writes on the healed node", || async {
            (cut.post("/registrations/after/1/127.0.0.1/1", "{}").await.0 == 200).then_some(())
        })
        .await;
        let (status, stale, body) = get_raw(&format!("{}/registrations/during", cut.url)).await;
        assert_eq!(
            (status, stale),
            (200, None),
            "{fault:?}: caught up and fresh"
        );
        assert!(body.contains("/during/1/127.0.0.1/1"), "{body}");
    }
    // The short lease expired (reaped by the node in touch): the cut node relays exactly that
    // one offline event, and invented none of its own.
    eventually(WAIT, "the short lease's expiry on the cut node", || async {
        (follower.offline("/") == vec![("/short/1/127.0.0.1/1".to_owned(), OfflineReason::Expired)])
            .then_some(())
    })
    .await;
    // Latency: slower, still correct.
    proxy.set_latency(Duration::from_millis(100));
    assert_eq!(
        cut.post("/registrations/slow/1/127.0.0.1/1", "{}").await.0,
        200
    );
    proxy.set(Fault::Pass);
    let everything = direct.get("/registrations").await;
    let all: BTreeSet<String> = everything
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    converges(
        &follower,
        "/",
        &all,
        "the cut node's follower to match the store",
    )
    .await;
    assert_eq!(follower.offline("/").len(), 1, "no invented offline event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_primary_holds_the_leases_then_expires_the_dead() {
    if !require_redis() {
        return;
    }
    let redis = RedisCluster::single().await;
    let a = Registry::start(&["--store", &redis.primary.url()]).await;
    let b = Registry::start(&["--store", &redis.primary.url()]).await;
    let live: Vec<u16> = (1..=30).collect();
    let dead: Vec<u16> = (101..=110).collect();
    create(a.port, "st", &live, 3).await;
    create(a.port, "st", &dead, 3).await;
    let follower = Follower::open(&b.url, None).await;
    let load = Heartbeats::start(
        &[a.port, b.port],
        "st",
        live.clone(),
        3,
        Duration::from_secs(1),
        2,
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.primary.stop();
    tokio::time::sleep(Duration::from_secs(15)).await;
    redis.primary.cont();
    let resumed = Instant::now();
    // The dead ones ran out during the stop; they go once the hold (one lease) is over.
    let dead_ids: BTreeSet<String> = dead
        .iter()
        .map(|p| format!("/st/1/127.0.0.1/{p}"))
        .collect();
    eventually(
        WAIT,
        "the dead services to expire after the hold",
        || async {
            let gone: BTreeSet<String> = follower
                .offline("/st/")
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            (gone == dead_ids).then_some(())
        },
    )
    .await;
    eprintln!(
        "the dead expired {:?} after the primary resumed",
        resumed.elapsed()
    );
    // Longer than a lease more: the heartbeating ones survive.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let _ = load.stop().await;
    let live_ids: BTreeSet<String> = live
        .iter()
        .map(|p| format!("/st/1/127.0.0.1/{p}"))
        .collect();
    let gone: BTreeSet<String> = follower
        .offline("/st/")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        gone, dead_ids,
        "only the services that stopped heartbeating expired"
    );
    assert_eq!(ids_on(&a, "st").await, live_ids);
    let mut metrics = BTreeMap::new();
    for node in [&a, &b] {
        metrics.insert(
            node.port,
            node.metric("thalassa_registry_store_connections_total")
                .await,
        );
    }
    eprintln!("primary connections per node: {metrics:?}");
}
