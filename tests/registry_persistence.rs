//! Nothing is lost on restart, against the real binary: registrations and their absolute
//! deadlines survive a graceful restart and a crash (after the once-a-second snapshot write);
//! deadlines that passed while the registry was down are honoured; a torn or corrupt snapshot
//! is reported, set aside, and never stops the start.

mod registry_support;
mod support;

use registry_support::{Process, Registry, eventually};
use serde_json::Value;
use std::time::Duration;

const A: &str = "/registrations/a/1.0.0/10.0.0.1/80";
const B: &str = "/registrations/b/2.0.0/10.0.0.2/81";

/// The registrations and leases of everything but the registry itself.
async fn state(registry: &Registry) -> (Value, Value) {
    let registrations: Vec<Value> = registry
        .get("/registrations")
        .await
        .as_array()
        .expect("array")
        .iter()
        .filter(|r| r["name"] != "thalassa")
        .cloned()
        .collect();
    let leases: Vec<Value> = registry
        .get("/leases")
        .await
        .as_array()
        .expect("array")
        .iter()
        .filter(|l| !l["id"].as_str().unwrap_or("").starts_with("/thalassa/"))
        .cloned()
        .collect();
    (Value::from(registrations), Value::from(leases))
}

#[tokio::test]
async fn a_graceful_restart_keeps_registrations_and_absolute_deadlines() {
    let mut first = Registry::start(&[]).await;
    first
        .post(A, r#"{"secondsToExpire":100,"role":"primary"}"#)
        .await;
    first.post(B, r#"{"secondsToExpire":"1000"}"#).await;
    let before = state(&first).await;
    assert_eq!(before.0.as_array().map(Vec::len), Some(2));

    let status = first.process.terminate().await;
    assert!(status.success(), "{status:?}\n{}", first.process.log());
    let temp = first.take_temp();

    let second = Registry::start_in(&first.data_dir, first.port, &[]).await;
    // Identical: same meta, same lastKnown, same absolute expiresAt.
    assert_eq!(state(&second).await, before);
    assert!(second.process.log().contains("restored registrations"));
    drop(temp);
}

#[tokio::test]
async fn a_crash_keeps_what_the_periodic_snapshot_wrote() {
    let mut first = Registry::start(&[]).await;
    first.post(A, r#"{"secondsToExpire":100}"#).await;
    let before = state(&first).await;
    // The snapshot is written within about a second of a change.
    let file = first.data_dir.join("registrations.json");
    eventually(Duration::from_secs(5), "the snapshot to contain A", || {
        let file = file.clone();
        async move {
            let text = std::fs::read_to_string(&file).ok()?;
            text.contains("/a/1.0.0/10.0.0.1/80").then_some(())
        }
    })
    .await;
    first.process.kill();
    let temp = first.take_temp();

    let second = Registry::start_in(&first.data_dir, first.port, &[]).await;
    assert_eq!(state(&second).await, before);
    drop(temp);
}

#[tokio::test]
async fn deadlines_that_passed_while_down_expire_at_start() {
    let mut first = Registry::start(&[]).await;
    first.post(A, r#"{"secondsToExpire":1}"#).await;
    first.post(B, r#"{"secondsToExpire":600}"#).await;
    let status = first.process.terminate().await;
    assert!(status.success());
    let temp = first.take_temp();
    let deadline = state_deadline(&first.data_dir, "/a/1.0.0/10.0.0.1/80");
    // Stay down past A's deadline.
    eventually(Duration::from_secs(5), "A's deadline to pass", || async {
        (thalassa::registry::clock::now_ms() > deadline).then_some(())
    })
    .await;

    let second = Registry::start_in(&first.data_dir, first.port, &[]).await;
    eventually(Duration::from_secs(2), "A to be expired", || async {
        (second.ids().await == ["/b/2.0.0/10.0.0.2/81"]).then_some(())
    })
    .await;
    let expired = eventually(Duration::from_secs(2), "the expiry counted", || async {
        let expired = second.metric("thalassa_registry_expired_total").await;
        (expired == 1.0).then_some(expired)
    })
    .await;
    assert_eq!(expired, 1.0);
    drop(temp);
}

/// `expiresAt` of `id` in the snapshot file of `data_dir`.
fn state_deadline(data_dir: &std::path::Path, id: &str) -> u64 {
    let text = std::fs::read_to_string(data_dir.join("registrations.json")).expect("snapshot");
    let file: Value = serde_json::from_str(&text).expect("JSON snapshot");
    file["registrations"]
        .as_array()
        .expect("registrations")
        .iter()
        .find(|e| e["registration"]["id"] == id)
        .and_then(|e| e["expiresAt"].as_u64())
        .expect("entry with expiresAt")
}

async fn check_bad_snapshot(contents: &[u8]) {
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("data");
    std::fs::create_dir_all(&data_dir).expect("data dir");
    std::fs::write(data_dir.join("registrations.json"), contents).expect("write snapshot");

    let registry = Registry::start_in(&data_dir, registry_support::free_port(), &[]).await;
    // It serves, empty, and says why.
    assert_eq!(registry.ids().await, Vec::<String>::new());
    let (status, _) = registry.post(A, "{}").await;
    assert_eq!(status, 200);
    let log = registry.process.log();
    assert!(log.contains("ERROR"), "{log}");
    assert!(log.contains("unreadable"), "{log}");
    // The bad file is kept for inspection, not overwritten.
    let aside: Vec<_> = std::fs::read_dir(&data_dir)
        .expect("list data dir")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("registrations.json.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "{log}");
    assert_eq!(
        std::fs::read(aside[0].path()).expect("read aside"),
        contents
    );
}

#[tokio::test]
async fn a_torn_or_corrupt_snapshot_is_reported_and_never_stops_the_start() {
    // A real snapshot cut in half: what a torn write would leave without the atomic rename.
    let mut source = Registry::start(&[]).await;
    source.post(A, r#"{"secondsToExpire":100}"#).await;
    assert!(source.process.terminate().await.success());
    let whole = std::fs::read(source.data_dir.join("registrations.json")).expect("snapshot");
    check_bad_snapshot(&whole[..whole.len() / 2]).await;
    check_bad_snapshot(b"").await;
    check_bad_snapshot(b"\x00\x01\x02 not json at all").await;
    check_bad_snapshot(br#"{"version":99,"seq":1,"clean":true,"registrations":[]}"#).await;
}

#[tokio::test]
async fn an_unusable_data_dir_fails_the_start_with_a_clear_message() {
    let temp = tempfile::tempdir().expect("temp dir");
    let not_a_dir = temp.path().join("file");
    std::fs::write(&not_a_dir, b"x").expect("write file");
    let port = registry_support::free_port().to_string();
    let data_dir = not_a_dir.join("data");
    let mut process = Process::spawn(
        &[
            "registry",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            &data_dir.to_string_lossy(),
        ],
        temp.path().join("log"),
    );
    let status = process.wait(Duration::from_secs(10)).await;
    assert!(!status.success());
    assert!(
        process.log().contains("cannot create the data directory"),
        "{}",
        process.log()
    );
}
