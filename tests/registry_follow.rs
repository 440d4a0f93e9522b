//! How an aqueduct follows a registry: `follow::over_http` against the real binary (including a
//! registry restart and a crash, which must produce no offline events, and a cluster of nodes
//! one of which dies or hangs), and `follow::in_process` against the library (including a
//! follower so slow it must be resynchronised by snapshot).

mod registry_support;
mod support;

use registry_support::Registry;
use serde_json::Map;
use std::collections::BTreeMap;
use std::time::Duration;
use thalassa::registry::feed::{FeedItem, RegistryEvent};
use thalassa::registry::model::RegistrationKey;
use thalassa::registry::nodes::RegistryNodes;
use thalassa::registry::{RegistryConfig, follow};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);
/// A lease no test outlives.
const LEASE: &str = r#"{"secondsToExpire":60}"#;

async fn next(feed: &mut mpsc::Receiver<FeedItem>) -> FeedItem {
    tokio::time::timeout(WAIT, feed.recv())
        .await
        .expect("a feed item in time")
        .expect("the feed is open")
}

/// The `--registry` list of these base URLs.
fn nodes(urls: &[&str]) -> RegistryNodes {
    urls.join(",").parse().expect("valid registry URLs")
}

/// The ids of a snapshot, excluding the registries' own registrations.
fn snapshot_ids(item: &FeedItem) -> Vec<&str> {
    match item {
        FeedItem::Snapshot { registrations, .. } => registrations
            .iter()
            .filter(|r| r.name != "thalassa")
            .map(|r| r.id.as_str())
            .collect(),
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

/// Waits until `status` is connected to `node`.
async fn await_following(status: &follow::FollowerStatus, node: &str) {
    registry_support::eventually(WAIT, &format!("the follower on {node}"), || async {
        (status.connected() && status.node() == node).then_some(())
    })
    .await;
}

fn online_id(item: &FeedItem) -> &str {
    match item {
        FeedItem::Event {
            event: RegistryEvent::Online(r),
            ..
        } => &r.id,
        other => panic!("expected online, got {other:?}"),
    }
}

#[tokio::test]
async fn over_http_survives_restarts_without_offline_events() {
    let mut first = Registry::start(&[]).await;
    let follower = follow::over_http(nodes(&[&first.url]), None);
    let (mut feed, status) = (follower.items, follower.status);
    let snapshot = next(&mut feed).await;
    assert!(
        matches!(snapshot, FeedItem::Snapshot { .. }),
        "{snapshot:?}"
    );

    first
        .post(
            "/registrations/x/1/127.0.0.1/80",
            r#"{"secondsToExpire":60}"#,
        )
        .await;
    assert_eq!(online_id(&next(&mut feed).await), "/x/1/127.0.0.1/80");

    // Graceful restart: the follower resumes exactly where it was, so the first thing it sees
    // afterwards is the next real change (no offline, no snapshot).
    assert!(first.process.terminate().await.success());
    let temp = first.take_temp();
    tokio::time::sleep(Duration::from_millis(300)).await; // an outage the follower must sit out
    let mut second = Registry::start_in(&first.data_dir, first.port, &[]).await;
    second
        .post(
            "/registrations/y/1/127.0.0.1/81",
            r#"{"secondsToExpire":60}"#,
        )
        .await;
    assert_eq!(online_id(&next(&mut feed).await), "/y/1/127.0.0.1/81");

    // Crash: events after the last snapshot write may be lost with the process, so the
    // restarted registry cannot honour the old id and sends a fresh snapshot instead.
    let file = second.data_dir.join("registrations.json");
    registry_support::eventually(WAIT, "y to be in the snapshot", || {
        let file = file.clone();
        async move {
            let text = std::fs::read_to_string(&file).ok()?;
            text.contains("/y/1/127.0.0.1/81").then_some(())
        }
    })
    .await;
    second.process.kill();
    let third = Registry::start_in(&second.data_dir, second.port, &[]).await;
    match next(&mut feed).await {
        FeedItem::Snapshot { registrations, .. } => {
            let ids: Vec<&str> = registrations.iter().map(|r| r.id.as_str()).collect();
            assert!(ids.contains(&"/x/1/127.0.0.1/80"), "{ids:?}");
            assert!(ids.contains(&"/y/1/127.0.0.1/81"), "{ids:?}");
        }
        other => panic!("expected a snapshot after the crash, got {other:?}"),
    }
    third.delete("/registrations/x/1/127.0.0.1/80").await;
    match next(&mut feed).await {
        FeedItem::Event {
            event: RegistryEvent::Offline { id, .. },
            ..
        } => assert_eq!(id, "/x/1/127.0.0.1/80"),
        other => panic!("expected the deletion, got {other:?}"),
    }
    // One node: every reconnection was to it.
    assert_eq!((status.node(), status.failovers()), (first.url.as_str(), 0));
    drop(temp);
}

#[tokio::test]
async fn over_http_waits_for_a_registry_that_is_not_up_yet() {
    let port = registry_support::free_port();
    let temp = tempfile::tempdir().unwrap();
    let mut feed = follow::over_http(nodes(&[&format!("http://127.0.0.1:{port}/")]), None).items;
    // Nothing arrives while there is no registry.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), feed.recv())
            .await
            .is_err()
    );
    let registry = Registry::start_in(&temp.path().join("data"), port, &[]).await;
    assert!(matches!(next(&mut feed).await, FeedItem::Snapshot { .. }));
    registry
        .post("/registrations/late/1/127.0.0.1/80", "{}")
        .await;
    assert_eq!(online_id(&next(&mut feed).await), "/late/1/127.0.0.1/80");
}

#[tokio::test]
async fn over_http_fails_over_to_the_next_node_when_one_is_killed() {
    // Two independent registries stand for two nodes of one cluster: each has its own state,
    // so after a failover the follower must take the other node's snapshot (with a shared
    // store the same request resumes by event id instead).
    let mut a = Registry::start(&[]).await;
    let mut b = Registry::start(&[]).await;
    a.post("/registrations/on-a/1/127.0.0.1/80", LEASE).await;
    b.post("/registrations/on-b/1/127.0.0.1/80", LEASE).await;
    let follower = follow::over_http(nodes(&[&a.url, &b.url]), None);
    let (mut feed, status) = (follower.items, follower.status);
    assert_eq!(
        snapshot_ids(&next(&mut feed).await),
        ["/on-a/1/127.0.0.1/80"]
    );
    await_following(&status, &a.url).await;
    a.post("/registrations/more-a/1/127.0.0.1/80", LEASE).await;
    assert_eq!(online_id(&next(&mut feed).await), "/more-a/1/127.0.0.1/80");

    // kill -9 of the node followed: no offline event, the next item is b's snapshot.
    a.process.kill();
    let snapshot = next(&mut feed).await;
    assert_eq!(snapshot_ids(&snapshot), ["/on-b/1/127.0.0.1/80"]);
    await_following(&status, &b.url).await;
    assert_eq!(status.failovers(), 1);
    b.post("/registrations/more-b/1/127.0.0.1/80", LEASE).await;
    let event = next(&mut feed).await;
    assert_eq!(online_id(&event), "/more-b/1/127.0.0.1/80");
    assert!(event.seq() > snapshot.seq());

    // Round-robin: when b dies too, the follower goes back to the first node, restarted
    // (after a crash, so it cannot resume b's id either and sends its snapshot).
    let a_again = Registry::start_in(&a.data_dir, a.port, &[]).await;
    a_again
        .post("/registrations/back-on-a/1/127.0.0.1/80", LEASE)
        .await;
    b.process.kill();
    let ids = snapshot_ids(&next(&mut feed).await).join(" ");
    assert!(ids.contains("/back-on-a/1/127.0.0.1/80"), "{ids}");
    assert!(!ids.contains("-b/"), "{ids}");
    await_following(&status, &a.url).await;
    assert_eq!(status.failovers(), 2);
}

#[tokio::test]
async fn over_http_fails_over_from_a_node_that_stays_silent() {
    let a = Registry::start(&[]).await;
    let b = Registry::start(&[]).await;
    a.post("/registrations/on-a/1/127.0.0.1/80", LEASE).await;
    b.post("/registrations/on-b/1/127.0.0.1/80", LEASE).await;
    let follower = follow::over_http(nodes(&[&a.url, &b.url]), None);
    let (mut feed, status) = (follower.items, follower.status);
    assert_eq!(
        snapshot_ids(&next(&mut feed).await),
        ["/on-a/1/127.0.0.1/80"]
    );
    await_following(&status, &a.url).await;

    // A hung node keeps its connection open and sends nothing, not even its keep-alive: after
    // two missed keep-alives the follower moves on.
    a.process.pause();
    let started = std::time::Instant::now();
    let item = tokio::time::timeout(follow::IDLE_TIMEOUT + WAIT, feed.recv())
        .await
        .expect("b's snapshot after the idle timeout")
        .expect("the feed is open");
    assert_eq!(snapshot_ids(&item), ["/on-b/1/127.0.0.1/80"]);
    // Silence, not an error, ended the stream.
    assert!(started.elapsed() >= follow::IDLE_TIMEOUT / 2);
    await_following(&status, &b.url).await;
    a.process.resume();
}

#[tokio::test]
async fn in_process_follower_sees_snapshot_then_changes() {
    let registry = thalassa::registry::Registry::open(RegistryConfig::default()).unwrap();
    let key = RegistrationKey::parse("svc", "1", "127.0.0.1", "80").unwrap();
    registry
        .register(key.clone(), Map::new(), Duration::from_secs(60))
        .await
        .unwrap();
    let mut feed = follow::in_process(registry.clone());
    match next(&mut feed).await {
        FeedItem::Snapshot { registrations, .. } => assert_eq!(registrations.len(), 1),
        other => panic!("{other:?}"),
    }
    // A heartbeat is not an event; a deletion is.
    registry
        .register(key.clone(), Map::new(), Duration::from_secs(60))
        .await
        .unwrap();
    assert!(registry.deregister(&key.id()).await.unwrap());
    match next(&mut feed).await {
        FeedItem::Event {
            event: RegistryEvent::Offline { id, .. },
            ..
        } => assert_eq!(id, key.id()),
        other => panic!("{other:?}"),
    }
    registry.close().await;
    // Closing the registry ends the feed.
    assert_eq!(tokio::time::timeout(WAIT, feed.recv()).await.unwrap(), None);
}

/// Applies feed items to a follower's view: id -> meta JSON.
fn apply(view: &mut BTreeMap<String, String>, item: FeedItem) -> bool {
    match item {
        FeedItem::Snapshot { registrations, .. } => {
            view.clear();
            for r in registrations {
                view.insert(
                    r.id.clone(),
                    serde_json::to_string(&r.meta).expect("meta serialises"),
                );
            }
            true
        }
        FeedItem::Event {
            event: RegistryEvent::Online(r),
            ..
        } => {
            view.insert(
                r.id.clone(),
                serde_json::to_string(&r.meta).expect("meta serialises"),
            );
            false
        }
        FeedItem::Event {
            event: RegistryEvent::Offline { id, .. },
            ..
        } => {
            view.remove(&id);
            false
        }
    }
}

#[tokio::test]
async fn a_follower_that_lags_is_resynchronised_by_a_snapshot() {
    let registry = thalassa::registry::Registry::open(RegistryConfig::default()).unwrap();
    let mut feed = follow::in_process(registry.clone());
    let mut view = BTreeMap::new();
    apply(&mut view, next(&mut feed).await);

    // Far more changes than the follower's buffer and the live buffer hold, unread.
    let changes = (thalassa::registry::event_log::LIVE_BUFFER
        + thalassa::registry::fanout::FOLLOWER_BUFFER
        + 2_000) as u32;
    for n in 0..changes {
        let key =
            RegistrationKey::parse("lag", "1", "127.0.0.1", &(1 + n % 3000).to_string()).unwrap();
        let mut meta = Map::new();
        meta.insert("n".into(), n.into());
        registry
            .register(key, meta, Duration::from_secs(60))
            .await
            .unwrap();
        if n % 7 == 0 {
            let gone =
                RegistrationKey::parse("lag", "1", "127.0.0.1", &(1 + (n * 13) % 3000).to_string())
                    .unwrap();
            registry.deregister(&gone.id()).await.unwrap();
        }
    }
    let final_seq = match registry.subscribe(None).recv().await {
        Some(FeedItem::Snapshot { seq, .. }) => seq,
        other => panic!("{other:?}"),
    };

    // Drain: somewhere a snapshot must replace the dropped events, and the view must end up
    // exactly equal to the registry.
    let mut snapshots = 0;
    let mut last_seq = 0;
    while last_seq < final_seq {
        let item = next(&mut feed).await;
        assert!(item.seq() > last_seq || matches!(item, FeedItem::Snapshot { .. }));
        last_seq = item.seq();
        if apply(&mut view, item) {
            snapshots += 1;
        }
    }
    assert!(snapshots >= 1, "the lag was not reported with a snapshot");
    let expected: BTreeMap<String, String> = registry
        .list(&thalassa::registry::ListFilter::all())
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.id.clone(),
                serde_json::to_string(&r.meta).expect("meta serialises"),
            )
        })
        .collect();
    assert_eq!(view, expected);
}
