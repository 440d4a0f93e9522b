//! Reproductions of membership defects found by trying the stack as a user would, each against
//! `thalassa up` and a real HAProxy. (The version switch on hash-balanced backends is in
//! tests/membership_switch.rs.)

#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

mod support;

use std::time::{Duration, Instant};
use support::{Stack, eventually, free_port, require_haproxy, stack_with_backend};
use thalassa::haproxy::runtime::RuntimeClient;
use thalassa::haproxy::stat::{AdminState, CheckResult, ServerStateRow};

/// A member still joining (added in maintenance, no passing check yet) that is deleted and
/// registered again within a second must stay gated: HAProxy never has it ready before a
/// check passed, and the API never calls it UP. Its address answers nothing, so no check can
/// ever pass; a slow check interval leaves the window wide open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_member_deleted_and_registered_again_stays_gated() {
    if !require_haproxy() {
        return;
    }
    let (stack, _port) = stack_with_backend(
        "web-backend",
        r#"{"type":"dynamic","name":"web","version":"1","mode":"http","health":{"interval":5000}}"#,
    )
    .await;
    let dead_port = free_port();
    let member = format!("web/1/127.0.0.3/{dead_port}");
    let server = format!("web-backend_127.0.0.3:{dead_port}");
    let client = RuntimeClient::new(stack.admin_socket());
    let lease = r#"{"secondsToExpire":600}"#;

    assert_eq!(stack.register(&member, lease).await.0, 200);
    eventually(Duration::from_secs(10), "the member in haproxy", || async {
        let rows = client.show_servers_state(Some("web-backend")).await.ok()?;
        rows.iter().any(|r| r.server == server).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stack.deregister(&member).await.0, 200);
    assert_eq!(stack.register(&member, lease).await.0, 200);

    // For the next 3 s (well before a 5 s check could even have failed), watch both.
    let until = Instant::now() + Duration::from_secs(3);
    let mut looks = 0;
    while Instant::now() < until {
        if let Ok(rows) = client.show_servers_state(Some("web-backend")).await
            && let Some(row) = rows.iter().find(|r| r.server == server)
        {
            let passed = matches!(
                row.check_result,
                CheckResult::Passed | CheckResult::ConditionallyPassed
            );
            assert!(
                row.admin_state() == AdminState::Maint || passed,
                "{server} is {:?} in haproxy without a passing check ({:?})",
                row.admin_state(),
                row.check_result
            );
            looks += 1;
        }
        let status = stack
            .member_status("web-backend", &format!("127.0.0.3:{dead_port}"))
            .await;
        assert_ne!(status.as_deref(), Some("UP"), "the API calls {server} UP");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(looks > 10, "haproxy was looked at only {looks} times");
}

/// Deleting a backend that a frontend still uses leaves no server of it in HAProxy (the
/// frontend's placeholder backend of the same name has none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_backend_in_use_removes_every_server_it_had() {
    if !require_haproxy() {
        return;
    }
    let (stack, _port) = stack_with_backend(
        "web-backend",
        r#"{"type":"dynamic","name":"web","version":"1","mode":"http","health":{"interval":100}}"#,
    )
    .await;
    let dead_port = free_port();
    let server = format!("web-backend_127.0.0.3:{dead_port}");
    let member = format!("web/1/127.0.0.3/{dead_port}");
    assert_eq!(
        stack
            .register(&member, r#"{"secondsToExpire":600}"#)
            .await
            .0,
        200
    );
    eventually(Duration::from_secs(10), "the member in haproxy", || async {
        let rows = current_servers(&stack).await?;
        rows.iter().any(|r| r.server == server).then_some(())
    })
    .await;

    let response = support::client()
        .delete(format!("{}/backends/web-backend", stack.aqueduct))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        stack.get_json("/frontends/web").await["waitingForBackend"],
        true
    );
    eventually(
        Duration::from_secs(10),
        "the deleted backend's servers to be gone from haproxy",
        || async {
            let rows = current_servers(&stack).await?;
            let left: Vec<&str> = rows
                .iter()
                .filter(|r| r.backend == "web-backend")
                .map(|r| r.server.as_str())
                .collect();
            left.is_empty().then_some(())
        },
    )
    .await;
    // And it stays so: nothing adds it back while the registration lives on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows = current_servers(&stack).await.unwrap();
    assert!(
        rows.iter().all(|r| r.backend != "web-backend"),
        "{:?}",
        rows.iter().map(|r| &r.server).collect::<Vec<_>>()
    );
}

/// Every server of HAProxy's current worker, on a connection of its own: a lasting connection
/// would stay with the worker it first reached, and an old worker lingers after a reload
/// (serving its keep-alive clients) with the servers it had.
async fn current_servers(stack: &Stack) -> Option<Vec<ServerStateRow>> {
    RuntimeClient::new(stack.admin_socket())
        .show_servers_state(None)
        .await
        .ok()
}
