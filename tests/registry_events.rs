//! `GET /events` against the real binary: a snapshot first, then `online` only for new or changed
//! registrations (never for plain heartbeats), `offline` with a reason, monotonic ids, resume
//! with `Last-Event-ID`, and a fresh snapshot when resuming is impossible.

mod registry_support;
mod support;

use registry_support::{EventStream, Registry};
use std::time::Duration;
use thalassa::registry::feed::{FeedItem, OfflineReason, RegistryEvent};

const WAIT: Duration = Duration::from_secs(5);
/// How long to listen to be confident nothing else is coming.
const QUIET: Duration = Duration::from_millis(300);

fn snapshot_ids(item: &FeedItem) -> Vec<String> {
    match item {
        FeedItem::Snapshot { registrations, .. } => {
            registrations.iter().map(|r| r.id.clone()).collect()
        }
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

fn online(item: &FeedItem) -> &thalassa::registry::model::Registration {
    match item {
        FeedItem::Event {
            event: RegistryEvent::Online(registration),
            ..
        } => registration,
        other => panic!("expected online, got {other:?}"),
    }
}

fn offline(item: &FeedItem) -> (&str, OfflineReason) {
    match item {
        FeedItem::Event {
            event: RegistryEvent::Offline { id, reason },
            ..
        } => (id, *reason),
        other => panic!("expected offline, got {other:?}"),
    }
}

#[tokio::test]
async fn snapshot_then_online_for_changes_and_offline_with_a_reason() {
    let registry = Registry::start(&[]).await;
    registry.post("/registrations/a/1/127.0.0.1/80", "{}").await;
    let mut events = EventStream::open(&registry.url, None).await;

    let snapshot = events.next(WAIT).await;
    let own = format!(
        "/thalassa/{}/127.0.0.1/{}",
        env!("CARGO_PKG_VERSION"),
        registry.port
    );
    assert_eq!(
        snapshot_ids(&snapshot),
        ["/a/1/127.0.0.1/80".to_owned(), own]
    );
    let mut last = snapshot.seq();

    // A new registration: online with the full registration.
    registry
        .post(
            "/registrations/b/2/127.0.0.1/81",
            r#"{"secondsToExpire":60}"#,
        )
        .await;
    let item = events.next(WAIT).await;
    let reg = online(&item);
    assert_eq!(reg.id, "/b/2/127.0.0.1/81");
    assert_eq!(reg.port, 81);
    assert_eq!(reg.meta["secondsToExpire"], 60);
    assert_eq!(reg.meta["hostname"], "127.0.0.1");
    assert_eq!(item.seq(), last + 1);
    last = item.seq();

    // Plain heartbeats are not events.
    for _ in 0..3 {
        registry
            .post(
                "/registrations/b/2/127.0.0.1/81",
                r#"{"secondsToExpire":60}"#,
            )
            .await;
    }
    assert_eq!(events.try_next(QUIET).await, None);

    // Changed meta is.
    registry
        .post(
            "/registrations/b/2/127.0.0.1/81",
            r#"{"secondsToExpire":60,"v":2}"#,
        )
        .await;
    let item = events.next(WAIT).await;
    assert_eq!(online(&item).meta["v"], 2);
    assert_eq!(item.seq(), last + 1);
    last = item.seq();

    // Deleted.
    registry.delete("/registrations/b/2/127.0.0.1/81").await;
    let item = events.next(WAIT).await;
    assert_eq!(
        offline(&item),
        ("/b/2/127.0.0.1/81", OfflineReason::Deleted)
    );
    assert_eq!(item.seq(), last + 1);
    last = item.seq();
    // Deleting something unknown is not an event.
    registry.delete("/registrations/b/2/127.0.0.1/81").await;
    assert_eq!(events.try_next(QUIET).await, None);

    // Expired.
    registry
        .post(
            "/registrations/c/1/127.0.0.1/82",
            r#"{"secondsToExpire":0.2}"#,
        )
        .await;
    let item = events.next(WAIT).await;
    assert_eq!(online(&item).id, "/c/1/127.0.0.1/82");
    let item = events.next(WAIT).await;
    assert_eq!(
        offline(&item),
        ("/c/1/127.0.0.1/82", OfflineReason::Expired)
    );
    assert_eq!(item.seq(), last + 2);

    // The wire format: `id:`, `event:`, one `data:` line, blank line.
    assert!(
        events.raw.contains(&format!(
            "id: {}\nevent: offline\ndata: {{\"id\":\"/c/1/127.0.0.1/82\",\"reason\":\"expired\"}}\n\n",
            item.seq()
        )),
        "{}",
        events.raw
    );
    assert_eq!(registry.metric("thalassa_registry_subscribers").await, 1.0);
}

#[tokio::test]
async fn last_event_id_resumes_without_loss() {
    let registry = Registry::start(&[]).await;
    let mut events = EventStream::open(&registry.url, None).await;
    let seen = events.next(WAIT).await.seq();
    drop(events);

    // Changes while disconnected.
    registry.post("/registrations/r/1/127.0.0.1/1", "{}").await;
    registry.post("/registrations/r/1/127.0.0.1/2", "{}").await;
    registry.delete("/registrations/r/1/127.0.0.1/1").await;

    let mut resumed = EventStream::open(&registry.url, Some(&seen.to_string())).await;
    let first = resumed.next(WAIT).await;
    assert_eq!(first.seq(), seen + 1);
    assert_eq!(online(&first).id, "/r/1/127.0.0.1/1");
    let second = resumed.next(WAIT).await;
    assert_eq!(second.seq(), seen + 2);
    assert_eq!(online(&second).id, "/r/1/127.0.0.1/2");
    let third = resumed.next(WAIT).await;
    assert_eq!(third.seq(), seen + 3);
    assert_eq!(offline(&third).0, "/r/1/127.0.0.1/1");
    // Then live events continue on the same stream.
    registry.post("/registrations/r/1/127.0.0.1/3", "{}").await;
    let live = resumed.next(WAIT).await;
    assert_eq!(live.seq(), seen + 4);

    // Resuming at the current position sends nothing until the next change.
    let mut caught_up = EventStream::open(&registry.url, Some(&live.seq().to_string())).await;
    assert_eq!(caught_up.try_next(QUIET).await, None);
    registry.delete("/registrations/r/1/127.0.0.1/3").await;
    assert_eq!(caught_up.next(WAIT).await.seq(), live.seq() + 1);

    // The query parameter works like the header (for clients that cannot set headers).
    let url = format!("{}/events?lastEventId={}", registry.url, live.seq());
    let mut by_query = EventStream::open_url(&url, None).await;
    let replayed = by_query.next(WAIT).await;
    assert_eq!(replayed.seq(), live.seq() + 1);
    assert_eq!(offline(&replayed).0, "/r/1/127.0.0.1/3");
}

#[tokio::test]
async fn a_follower_too_far_behind_gets_a_fresh_snapshot() {
    let registry = Registry::start(&[]).await;
    let mut events = EventStream::open(&registry.url, None).await;
    let seen = events.next(WAIT).await.seq();
    drop(events);

    // More changes than the registry retains (4096 events), each with a lease far longer
    // than posting them all takes on a loaded machine (the default 10 s is not: the first
    // ones would expire before the snapshot is read).
    let tasks: Vec<_> = (0..8)
        .map(|worker| {
            let url = registry.url.clone();
            tokio::spawn(async move {
                let client = registry_support::client();
                for n in (worker..4200).step_by(8) {
                    let response = client
                        .post(format!("{url}/registrations/many/1/127.0.0.1/{}", 1 + n))
                        .body(r#"{"secondsToExpire":600}"#)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    let mut stale = EventStream::open(&registry.url, Some(&seen.to_string())).await;
    let item = stale.next(WAIT).await;
    let ids = snapshot_ids(&item);
    assert_eq!(ids.len(), 4201, "4200 plus the registry itself");
    assert_eq!(item.seq(), seen + 4200);

    // An id this registry never issued, or garbage, also gets a snapshot.
    for bogus in [(seen + 1_000_000).to_string(), "not-a-number".to_owned()] {
        let mut stream = EventStream::open(&registry.url, Some(&bogus)).await;
        assert_eq!(
            snapshot_ids(&stream.next(WAIT).await).len(),
            4201,
            "{bogus}"
        );
    }
}
