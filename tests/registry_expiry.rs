//! Expiry is exact and uncapped, against the real binary: a 1 s registration is present until
//! 0.9 s and gone by 1.1 s, a refresh moves the deadline, the default lease applies to absent /
//! zero / null / empty values, and thousands of registrations expire together.

mod registry_support;
mod support;

use registry_support::{Registry, eventually};
use std::time::{Duration, Instant};

const PATH: &str = "/registrations/short/1.0.0/127.0.0.1/7000";

async fn present(registry: &Registry) -> bool {
    !registry
        .get("/registrations/short/1.0.0")
        .await
        .as_array()
        .expect("array")
        .is_empty()
}

/// Polls until the registration disappears; returns when it was first seen gone.
async fn first_seen_gone(registry: &Registry, limit: Duration) -> Instant {
    let deadline = Instant::now() + limit;
    loop {
        let asked = Instant::now();
        if !present(registry).await {
            return asked;
        }
        assert!(Instant::now() < deadline, "still present after {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_one_second_registration_lives_between_0_9_and_1_1_seconds() {
    let registry = Registry::start(&[]).await;
    let sent = Instant::now();
    let (status, _) = registry.post(PATH, r#"{"secondsToExpire":1}"#).await;
    assert_eq!(status, 200);
    let acked = Instant::now();
    let gone = first_seen_gone(&registry, Duration::from_secs(3)).await;
    assert!(
        gone >= sent + Duration::from_millis(900),
        "gone after only {:?}",
        gone - sent
    );
    assert!(
        gone <= acked + Duration::from_millis(1100),
        "still there {:?} after the POST",
        gone - acked
    );
    // The expiry task counts right after it removes (a window a busy machine can stretch).
    let expired = eventually(Duration::from_secs(5), "the expiry counted", || async {
        let expired = registry.metric("thalassa_registry_expired_total").await;
        (expired == 1.0).then_some(expired)
    })
    .await;
    assert_eq!(expired, 1.0);
}

#[tokio::test]
async fn a_refresh_moves_the_deadline() {
    let registry = Registry::start(&[]).await;
    let first = Instant::now();
    registry.post(PATH, r#"{"secondsToExpire":1}"#).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let refreshed = Instant::now();
    registry.post(PATH, r#"{"secondsToExpire":1}"#).await;
    let acked = Instant::now();
    let gone = first_seen_gone(&registry, Duration::from_secs(3)).await;
    // Had the first deadline held, it would be gone by first + 1.1 s.
    assert!(
        gone >= refreshed + Duration::from_millis(900),
        "gone {:?} after the first POST",
        gone - first
    );
    assert!(gone <= acked + Duration::from_millis(1100));
}

#[tokio::test]
async fn absent_zero_null_or_empty_expiry_means_the_default() {
    let registry = Registry::start(&["--default-secs-to-expire", "2"]).await;
    let bodies = [
        "",
        "{}",
        "null",
        r#"{"secondsToExpire":0}"#,
        r#"{"secondsToExpire":null}"#,
        r#"{"secondsToExpire":""}"#,
        r#"{"secondsToExpire":"0"}"#,
    ];
    for (i, body) in bodies.iter().enumerate() {
        let (status, _) = registry
            .post(&format!("/registrations/d/1/127.0.0.1/{}", 100 + i), body)
            .await;
        assert_eq!(status, 200, "{body:?}");
    }
    // A numeric string and a fraction are honoured, not defaulted.
    registry
        .post(
            "/registrations/d/1/127.0.0.1/200",
            r#"{"secondsToExpire":"30"}"#,
        )
        .await;
    registry
        .post(
            "/registrations/d/1/127.0.0.1/201",
            r#"{"secondsToExpire":1.5}"#,
        )
        .await;
    let leases = registry.get("/leases").await;
    let lease_ms = |port: u16| -> u64 {
        let id = format!("/d/1/127.0.0.1/{port}");
        let lease = leases
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["id"] == id.as_str())
            .unwrap_or_else(|| panic!("no lease for {id}"));
        lease["expiresAt"].as_u64().unwrap() - lease["lastKnown"].as_u64().unwrap()
    };
    for (i, body) in bodies.iter().enumerate() {
        assert_eq!(lease_ms(100 + i as u16), 2000, "{body:?}");
    }
    assert_eq!(lease_ms(200), 30_000);
    assert_eq!(lease_ms(201), 1500);
    // And the defaulted ones really go after about 2 s.
    eventually(
        Duration::from_secs(4),
        "defaulted registrations to expire",
        || async { (registry.ids().await.len() == 1).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn thousands_expire_at_once_without_a_cap() {
    const COUNT: usize = 3000;
    let registry = Registry::start(&[]).await;
    let mut feed = registry_support::EventStream::open(&registry.url, None).await;
    feed.next(Duration::from_secs(5)).await; // the snapshot

    let tasks: Vec<_> = (0..16)
        .map(|worker| {
            let url = registry.url.clone();
            tokio::spawn(async move {
                let client = registry_support::client();
                let mut n = worker;
                while n < COUNT {
                    let response = client
                        .post(format!("{url}/registrations/bulk/1/127.0.0.1/{}", 1000 + n))
                        .body(r#"{"secondsToExpire":1}"#)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200);
                    n += 16;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    // Posting takes a while on a busy machine, so by now many have expired already; the last
    // one's deadline is at most 1 s after this.
    let last_post = Instant::now();
    eventually(
        Duration::from_secs(3),
        "every bulk registration to expire",
        || async {
            (registry.metric("thalassa_registry_registrations").await == 1.0).then_some(())
        },
    )
    .await;
    assert!(
        last_post.elapsed() <= Duration::from_millis(1100 + 200),
        "took {:?} after the last POST",
        last_post.elapsed()
    );
    let expired = eventually(Duration::from_secs(5), "every expiry counted", || async {
        let expired = registry.metric("thalassa_registry_expired_total").await;
        (expired == COUNT as f64).then_some(expired)
    })
    .await;
    assert_eq!(expired, COUNT as f64);

    // Each one produced an `offline` event with reason `expired` after its `online`.
    let mut online = 0;
    let mut expired = std::collections::HashSet::new();
    while expired.len() < COUNT {
        match feed.next(Duration::from_secs(5)).await {
            thalassa::registry::feed::FeedItem::Event {
                event: thalassa::registry::feed::RegistryEvent::Online(_),
                ..
            } => online += 1,
            thalassa::registry::feed::FeedItem::Event {
                event: thalassa::registry::feed::RegistryEvent::Offline { id, reason },
                ..
            } => {
                assert_eq!(reason, thalassa::registry::feed::OfflineReason::Expired);
                assert!(expired.insert(id));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(online, COUNT);
}
