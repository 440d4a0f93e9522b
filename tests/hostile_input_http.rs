//! Limits of the real `thalassa registry` listener: oversized bodies (413 JSON), oversized or
//! too many headers (431), a slow-loris client (connection closed after the header deadline),
//! a stalled body upload (503 JSON after the request timeout, while `/events` streams stay
//! open), and the registrations cap (429 JSON naming the limit; refreshes still work).

#![allow(clippy::unwrap_used)] // Test code: a panic here is a test failure.

mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::{Proc, client, free_port, spawn_thalassa, wait_http};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Registry {
    _dir: tempfile::TempDir,
    proc: Proc,
    port: u16,
    url: String,
}

async fn registry(extra: &[&str]) -> Registry {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let data = dir.path().join("registry");
    let mut args = vec![
        "registry",
        "--listen",
        &listen,
        "--data-dir",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut proc = spawn_thalassa(dir.path(), "registry", &args);
    let url = format!("http://{listen}");
    wait_http(&format!("{url}/status"), &mut proc).await;
    Registry {
        _dir: dir,
        proc,
        port,
        url,
    }
}

/// Sends raw bytes on a fresh connection and reads until the server closes (or `limit`).
async fn raw_exchange(port: u16, request: &[u8], limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // The server may answer and close before the whole request is written.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut answer)).await;
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

fn status_of(answer: &str) -> Option<u16> {
    answer.split_whitespace().nth(1)?.parse().ok()
}

async fn post(url: &str, body: &str) -> (u16, Value) {
    let response = client()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn oversized_bodies_and_heads_are_refused() {
    let registry = registry(&[]).await;
    let url = format!("{}/registrations/web/1/127.0.0.1/8080", registry.url);

    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(70 * 1024));
    let (status, answer) = post(&url, &big).await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer["error"].is_string(), "{answer}");

    for size in [40 * 1024, 100 * 1024, 1024 * 1024] {
        let huge_header = format!(
            "GET /registrations HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(size)
        );
        let (answer, _) = raw_exchange(
            registry.port,
            huge_header.as_bytes(),
            Duration::from_secs(10),
        )
        .await;
        assert!(
            answer.is_empty() || status_of(&answer) == Some(431),
            "a {size}-byte header got {answer:?}"
        );
    }
    // Just over the limit: the JSON error.
    let (answer, _) = raw_exchange(
        registry.port,
        format!(
            "GET /registrations HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(33 * 1024)
        )
        .as_bytes(),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(status_of(&answer), Some(431), "{answer:?}");
    assert!(
        answer.contains(r#""error":"request headers are larger than 32768 bytes""#),
        "{answer}"
    );

    let mut many = String::from("GET /registrations HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for i in 0..200 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let (answer, _) = raw_exchange(registry.port, many.as_bytes(), Duration::from_secs(10)).await;
    assert!(
        answer.is_empty() || status_of(&answer) == Some(431),
        "200 headers got {answer:?}"
    );

    // Nothing of that reached the store, and the registry still serves.
    let list: Value = client()
        .get(format!("{}/registrations/web", registry.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list, serde_json::json!([]));
    drop(registry.proc);
}

#[tokio::test]
async fn slow_clients_are_cut_off_but_event_streams_are_not() {
    let registry = registry(&["--header-read-timeout", "1s", "--request-timeout", "1s"]).await;

    // Slow-loris: a head that never ends.
    let (answer, took) = raw_exchange(
        registry.port,
        b"GET /registrations HTTP/1.1\r\nHost: x\r\n",
        Duration::from_secs(20),
    )
    .await;
    assert!(
        took < Duration::from_secs(15),
        "an unfinished head kept the connection for {took:?}"
    );
    assert!(
        answer.is_empty() || status_of(&answer) == Some(408),
        "{answer:?}"
    );

    // A body that never arrives: the request times out with the JSON error.
    let (answer, took) = raw_exchange(
        registry.port,
        b"POST /registrations/web/1/127.0.0.1/8080 HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(status_of(&answer), Some(503), "{answer:?} after {took:?}");
    assert!(
        answer.contains(r#""error":"request not completed within 1 s""#),
        "{answer}"
    );

    // The event stream outlives the request timeout.
    let mut stream = TcpStream::connect(("127.0.0.1", registry.port))
        .await
        .unwrap();
    stream
        .write_all(b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < deadline {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut chunk)).await {
            Ok(Ok(0)) => panic!("the event stream closed after {:?}", deadline.elapsed()),
            Ok(Ok(n)) => seen.extend_from_slice(&chunk[..n]),
            Ok(Err(err)) => panic!("event stream error: {err}"),
            Err(_) => {}
        }
    }
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.contains("event: snapshot"), "{seen}");
    drop(registry.proc);
}

#[tokio::test]
async fn the_registrations_cap_refuses_new_ones_and_keeps_refreshes() {
    // The registry's own registration counts: 1 + 2 = 3.
    let registry = registry(&["--max-registrations", "3"]).await;
    let key = |port: u16| format!("{}/registrations/web/1/127.0.0.1/{port}", registry.url);
    assert_eq!(post(&key(1), "").await.0, 200);
    assert_eq!(post(&key(2), "").await.0, 200);
    let (status, answer) = post(&key(3), "").await;
    assert_eq!(status, 429, "{answer}");
    assert_eq!(answer["field"], "registrations");
    assert!(
        answer["error"].as_str().unwrap().contains("maximum of 3"),
        "{answer}"
    );
    // A refresh of an existing registration still works at the cap, and so does a change.
    assert_eq!(post(&key(1), "").await.0, 200);
    assert_eq!(post(&key(2), r#"{"secondsToExpire": 30}"#).await.0, 200);
    // Room again after a delete.
    let deleted = client().delete(key(2)).send().await.unwrap().status();
    assert_eq!(deleted, 200);
    assert_eq!(post(&key(3), "").await.0, 200);

    let metrics = client()
        .get(format!("{}/metrics", registry.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "thalassa_registry_refused_at_capacity_total 1"),
        "{metrics}"
    );
    drop(registry.proc);
}

#[tokio::test]
async fn a_full_dynamic_backend_leaves_further_registrations_out() {
    if !support::require_haproxy() {
        return;
    }
    let stack = support::Stack::start_with(&["--max-members", "2"]).await;
    let (status, body) = stack
        .put(
            "/backends/web",
            r#"{"type": "dynamic", "name": "web", "version": "1"}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for port in [18081, 18082, 18083] {
        let (status, body) = stack
            .register(
                &format!("web/1/127.0.0.1/{port}"),
                r#"{"secondsToExpire": 600}"#,
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    support::eventually(Duration::from_secs(15), "the left-out metric", || async {
        let metrics = stack.get_text("/metrics").await;
        metrics
            .lines()
            .any(|l| l == r#"thalassa_members_left_out{backend="web"} 1"#)
            .then_some(())
    })
    .await;
    // The manager sets the metric, then records the activity, then hands the capped list to
    // the API: each is awaited.
    let ports_of = |members: &Value| -> Vec<u64> {
        members
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["port"].as_u64().unwrap())
            .collect()
    };
    let members = support::eventually(
        Duration::from_secs(10),
        "the capped members in the API",
        || async {
            let members = stack.get_json("/backends/web/members").await;
            (ports_of(&members) == [18081, 18082]).then_some(members)
        },
    )
    .await;
    assert_eq!(ports_of(&members), [18081, 18082]);
    let capped = |activity: &Value| {
        activity
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["verb"] == "members-capped" && a["detail"]["left_out"] == 1)
    };
    let activity = support::eventually(
        Duration::from_secs(10),
        "the members-capped activity",
        || async {
            let activity = stack.get_json("/ui/api/activity").await;
            capped(&activity).then_some(activity)
        },
    )
    .await;
    assert!(capped(&activity), "{activity}");
    // A member leaving makes room for the one left out.
    stack.deregister("web/1/127.0.0.1/18081").await;
    support::eventually(
        Duration::from_secs(15),
        "the left-out registration to join",
        || async {
            let members = stack.get_json("/backends/web/members").await;
            let ports: Vec<u64> = members
                .as_array()?
                .iter()
                .filter_map(|m| m["port"].as_u64())
                .collect();
            (ports == [18082, 18083]).then_some(())
        },
    )
    .await;
}
