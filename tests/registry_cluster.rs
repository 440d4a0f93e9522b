//! Several registry nodes on one real Redis (`--store redis://...`): one shared state, one
//! event stream with the same ids on every node, exact expiry once across the cluster, and
//! resuming a follower on another node. Redis is a real `redis-server` the test starts.
//!
//! The randomized test is seeded and replayable: the seed comes from `THALASSA_CLUSTER_SEED`
//! (else the clock) and is printed at the start and in every failure.

#![allow(clippy::unwrap_used)] // a panic in a test is a test failure

mod redis_support;
mod registry_support;
mod support;

use redis_support::{RedisCluster, require_redis};
use registry_support::{EventStream, Registry};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use thalassa::registry::feed::{FeedItem, OfflineReason, RegistryEvent};

const WAIT: Duration = Duration::from_secs(20);

async fn nodes(url: &str, n: usize) -> Vec<Registry> {
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(Registry::start(&["--store", url]).await);
    }
    nodes
}

/// A follower's view: id -> meta JSON, from a snapshot and the events after it.
#[derive(Default, Debug, PartialEq)]
struct View(BTreeMap<String, String>);

impl View {
    fn apply(&mut self, item: &FeedItem) {
        match item {
            FeedItem::Snapshot { registrations, .. } => {
                self.0 = registrations
                    .iter()
                    .map(|r| (r.id.clone(), serde_json::to_string(&r.meta).unwrap()))
                    .collect();
            }
            FeedItem::Event {
                event: RegistryEvent::Online(r),
                ..
            } => {
                self.0
                    .insert(r.id.clone(), serde_json::to_string(&r.meta).unwrap());
            }
            FeedItem::Event {
                event: RegistryEvent::Offline { id, .. },
                ..
            } => {
                self.0.remove(id);
            }
        }
    }

    /// Only the test's service (each node also registers itself).
    fn of(&self, name: &str) -> BTreeMap<String, String> {
        self.0
            .iter()
            .filter(|(id, _)| id.starts_with(&format!("/{name}/")))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// One event as comparable text.
fn describe(item: &FeedItem) -> String {
    match item {
        FeedItem::Snapshot { seq, .. } => format!("{seq} snapshot"),
        FeedItem::Event {
            seq,
            event: RegistryEvent::Online(r),
        } => format!(
            "{seq} online {} {}",
            r.id,
            serde_json::to_string(&r.meta).unwrap()
        ),
        FeedItem::Event {
            seq,
            event: RegistryEvent::Offline { id, reason },
        } => format!("{seq} offline {id} {}", reason.as_str()),
    }
}

/// `GET /registrations/{name}` on `node` as id -> meta JSON.
async fn listing(node: &Registry, name: &str) -> BTreeMap<String, String> {
    let all = node.get(&format!("/registrations/{name}")).await;
    all.as_array()
        .expect("array")
        .iter()
        .map(|r| {
            (
                r["id"].as_str().expect("id").to_owned(),
                serde_json::to_string(&r["meta"]).unwrap(),
            )
        })
        .collect()
}

/// Reads `stream` until an item numbered `last_seq` arrived; returns everything read.
async fn read_until(stream: &mut EventStream, last_seq: u64) -> Vec<FeedItem> {
    let mut items = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while items.last().map(FeedItem::seq) != Some(last_seq) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match stream.try_next(left).await {
            Some(item) => items.push(item),
            None => panic!(
                "no item {last_seq} within {WAIT:?}; got {:?}",
                items.iter().map(describe).collect::<Vec<_>>()
            ),
        }
    }
    items
}

/// The highest event id any node serves now (read from a fresh follower of `node`).
async fn last_seq(node: &Registry) -> u64 {
    let mut stream = EventStream::open(&node.url, None).await;
    stream.next(WAIT).await.seq()
}

#[tokio::test]
async fn three_nodes_one_state_one_stream_randomized() {
    if !require_redis() {
        return;
    }
    let seed = support::seed_from_env("THALASSA_CLUSTER_SEED");
    eprintln!("THALASSA_CLUSTER_SEED={seed}");
    let redis = RedisCluster::single().await;
    let nodes = nodes(&redis.primary.url(), 3).await;
    let mut streams = Vec::new();
    for node in &nodes {
        streams.push(EventStream::open(&node.url, None).await);
    }
    let mut rng = support::Rng(seed);
    // The model: what every acknowledged write says the state is.
    let mut model: BTreeMap<String, String> = BTreeMap::new();
    let (mut onlines, mut deletes) = (0usize, 0usize);
    // A follower that leaves halfway and resumes on another node.
    let mut leaver = EventStream::open(&nodes[0].url, None).await;
    let mut leaver_items = vec![leaver.next(WAIT).await];
    const STEPS: usize = 300;
    for step in 0..STEPS {
        let node = &nodes[rng.below(3) as usize];
        let port = 1 + rng.below(25);
        let id = format!("/svc/1/127.0.0.1/{port}");
        let path = format!("/registrations/svc/1/127.0.0.1/{port}");
        if rng.below(5) == 0 {
            let (status, body) = node.delete(&path).await;
            assert_eq!(
                status, 200,
                "seed {seed} step {step}: DELETE {path}: {body}"
            );
            if model.remove(&id).is_some() {
                deletes += 1;
            }
        } else {
            // Few distinct metas: many POSTs are plain heartbeats.
            let v = rng.below(3);
            let body = format!(r#"{{"secondsToExpire":600,"v":{v}}}"#);
            let (status, text) = node.post(&path, &body).await;
            assert_eq!(status, 200, "seed {seed} step {step}: POST {path}: {text}");
            let meta = format!(r#"{{"secondsToExpire":600,"v":{v},"hostname":"127.0.0.1"}}"#);
            if model.insert(id.clone(), meta.clone()).as_ref() != Some(&meta) {
                onlines += 1;
            }
        }
        // Read-your-writes across nodes: any node's listing reflects every acknowledged write.
        let reader = &nodes[rng.below(3) as usize];
        let seen = listing(reader, "svc").await;
        let expected: BTreeMap<String, String> = model
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    serde_json::to_string(&serde_json::from_str::<Value>(v).unwrap()).unwrap(),
                )
            })
            .collect();
        assert_eq!(
            seen, expected,
            "seed {seed} step {step}: listing on {}",
            reader.url
        );
        if step == STEPS / 2 {
            let left_at = last_seq(&nodes[0]).await;
            leaver_items.extend(
                read_until(&mut leaver, left_at)
                    .await
                    .into_iter()
                    .skip_while(|i| i.is_snapshot()),
            );
            drop(leaver);
            leaver = EventStream::open(&nodes[2].url, Some(&left_at.to_string())).await;
        }
    }
    // Every node's stream: the same events, with the same ids, in the same order.
    let end = last_seq(&nodes[1]).await;
    let mut histories = Vec::new();
    for (n, stream) in streams.iter_mut().enumerate() {
        let items = read_until(stream, end).await;
        let mut view = View::default();
        for item in &items {
            view.apply(item);
        }
        // The follower's view is the final state.
        let expected: BTreeMap<String, String> = listing(&nodes[n], "svc").await;
        assert_eq!(view.of("svc"), expected, "seed {seed}: node {n}'s follower");
        let events: Vec<String> = items
            .iter()
            .filter(|i| !i.is_snapshot())
            .map(describe)
            .filter(|d| d.contains(" /svc/"))
            .collect();
        histories.push(events);
    }
    assert_eq!(
        histories[0], histories[1],
        "seed {seed}: nodes 0 and 1 disagree"
    );
    assert_eq!(
        histories[0], histories[2],
        "seed {seed}: nodes 0 and 2 disagree"
    );
    // The history matches the acknowledged operations exactly: one online per creation or meta
    // change, one offline per delete of an existing registration, nothing else.
    let count = |kind: &str| histories[0].iter().filter(|d| d.contains(kind)).count();
    assert_eq!(count(" online "), onlines, "seed {seed}: online events");
    assert_eq!(
        count(" deleted"),
        deletes,
        "seed {seed}: offline (deleted) events"
    );
    assert_eq!(count(" expired"), 0, "seed {seed}: nothing expired");
    // The follower that moved to node 2 with Last-Event-ID got exactly what it missed.
    let resumed = read_until(&mut leaver, end).await;
    assert!(
        !resumed.iter().any(FeedItem::is_snapshot),
        "seed {seed}: resuming on another node needed a snapshot"
    );
    leaver_items.extend(resumed);
    let moved: Vec<String> = leaver_items
        .iter()
        .filter(|i| !i.is_snapshot())
        .map(describe)
        .filter(|d| d.contains(" /svc/"))
        .collect();
    assert_eq!(
        moved, histories[0],
        "seed {seed}: the follower that changed nodes"
    );
}

#[tokio::test]
async fn simultaneous_deadlines_expire_once_each_and_on_time() {
    if !require_redis() {
        return;
    }
    const N: usize = 5000;
    let redis = RedisCluster::single().await;
    let nodes = nodes(&redis.primary.url(), 3).await;
    let mut connection = redis.primary.connection().await;
    // Create them through the API, then give them all one deadline two seconds ahead (the
    // API would spread the deadlines over the time the POSTs take).
    let mut http = redis_support::RawHttp::new(nodes[0].port);
    for port in 1..=N {
        let status = http
            .request(
                "POST",
                &format!("/registrations/mass/1/127.0.0.1/{port}"),
                r#"{"secondsToExpire":600}"#,
            )
            .await;
        assert_eq!(status, 200);
    }
    let mut streams = Vec::new();
    for node in &nodes {
        let mut stream = EventStream::open(&node.url, None).await;
        assert!(stream.next(WAIT).await.is_snapshot());
        streams.push(stream);
    }
    let (secs, micros): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut connection)
        .await
        .unwrap();
    let deadline = secs * 1000 + micros / 1000 + 2000;
    let mut zadd = redis::cmd("ZADD");
    zadd.arg("{thalassa}:dl").arg("XX");
    for port in 1..=N {
        zadd.arg(deadline).arg(format!("/mass/1/127.0.0.1/{port}"));
    }
    let _: u64 = zadd.query_async(&mut connection).await.unwrap();
    // Wake the reapers (they sleep at most a second): nothing else to do but wait.
    let mut per_node = Vec::new();
    for stream in &mut streams {
        let mut expired = Vec::new();
        while expired.len() < N {
            match stream.next(WAIT).await {
                FeedItem::Event {
                    seq,
                    event: RegistryEvent::Offline { id, reason },
                } => {
                    assert_eq!(reason, OfflineReason::Expired, "{id}");
                    expired.push((seq, id));
                }
                other => panic!("unexpected {}", describe(&other)),
            }
        }
        // Nothing more: each went exactly once.
        assert!(stream.try_next(Duration::from_millis(1500)).await.is_none());
        per_node.push(expired);
    }
    let ids: BTreeSet<&String> = per_node[0].iter().map(|(_, id)| id).collect();
    assert_eq!(ids.len(), N, "every registration expired exactly once");
    assert_eq!(per_node[0], per_node[1]);
    assert_eq!(per_node[0], per_node[2]);
    // Lateness on the store's clock: an event's id is the time its entry was written.
    let mut lateness: Vec<u64> = per_node[0]
        .iter()
        .map(|(seq, _)| (seq >> 20).saturating_sub(deadline))
        .collect();
    lateness.sort_unstable();
    let p99 = lateness[N * 99 / 100];
    eprintln!(
        "expiry lateness over {N} simultaneous deadlines: p50 {} ms, p99 {p99} ms, max {} ms",
        lateness[N / 2],
        lateness[N - 1]
    );
    assert!(p99 <= 100, "p99 lateness {p99} ms");
    for node in &nodes {
        assert!(node.ids().await.is_empty());
    }
}

#[tokio::test]
async fn a_bad_store_url_is_refused_at_startup_naming_the_flag() {
    let temp = tempfile::tempdir().unwrap();
    for bad in [
        "http://127.0.0.1:6379",
        "redis://127.0.0.1:0",
        "redis+sentinel://127.0.0.1:1",
    ] {
        let mut process = registry_support::Process::spawn(
            &["registry", "--listen", "127.0.0.1:0", "--store", bad],
            temp.path().join("registry.log"),
        );
        let status = process.wait(Duration::from_secs(10)).await;
        assert!(!status.success(), "{bad} was accepted");
        let log = process.log();
        assert!(log.contains("--store"), "{bad}: {log}");
    }
}
