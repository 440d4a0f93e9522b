//! `RuntimeClient` against a real HAProxy and a real loopback origin: the dynamic-server
//! lifecycle, typed refusals, deletion blocked by a request in flight, batches, injection,
//! and following the worker across reloads and idle timeouts.

#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches start the real programs they measure"
)]

mod haproxy_support;
mod support;

use haproxy_support::*;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use thalassa::haproxy::ConfigTarget;
use thalassa::haproxy::runtime::{
    AdminState, CommandFailure, RuntimeError, ServerCommand, ServerOptions,
};
use thalassa::haproxy::stat::{CheckStatus, ProxyKind, StatStatus};
use thalassa::haproxy::supervisor::SupervisorSettings;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn runtime_config(settings: &SupervisorSettings, port: u16, origin: u16) -> String {
    format!(
        "{base}
frontend fe_dyn
    bind 127.0.0.1:{port}
    default_backend dyn

backend dyn
    balance roundrobin

backend be
    balance roundrobin
    server s1 127.0.0.1:{origin} check

backend static_src
    balance source
    server s1 127.0.0.1:{origin}
",
        base = base_config(settings)
    )
}

fn fast_check() -> ServerOptions {
    ServerOptions {
        check: true,
        inter_ms: 100,
        rise: 1,
        fall: 2,
        ..ServerOptions::default()
    }
}

/// `add server <backend>/<server>` on the loopback origin's `port`.
fn add(backend: &str, server: &str, port: u16, options: ServerOptions) -> ServerCommand {
    ServerCommand::Add {
        backend: backend.to_owned(),
        server: server.to_owned(),
        addr: LOOPBACK,
        port,
        options,
    }
}

fn delete(backend: &str, server: &str) -> ServerCommand {
    ServerCommand::Delete {
        backend: backend.to_owned(),
        server: server.to_owned(),
    }
}

fn failure<T: std::fmt::Debug>(result: Result<T, RuntimeError>) -> Option<CommandFailure> {
    match result {
        Err(err) => err.failure(),
        Ok(value) => panic!("expected a refusal, got Ok({value:?})"),
    }
}

#[tokio::test]
async fn dynamic_server_lifecycle_on_a_real_backend() {
    let Some(bin) = haproxy_bin() else { return };
    let origin = Origin::start("origin").await;
    let port = free_port();
    let lab = Lab::start(bin, |s| runtime_config(s, port, origin.port)).await;
    let runtime = lab.supervisor.runtime();

    runtime
        .run(&add("dyn", "m1", origin.port, fast_check()))
        .await
        .unwrap();
    let rows = runtime.show_servers_state(Some("dyn")).await.unwrap();
    assert_eq!(rows.len(), 1);
    let m1 = &rows[0];
    assert_eq!(
        (m1.server.as_str(), m1.admin_state()),
        ("m1", AdminState::Maint)
    );
    assert_eq!((m1.addr, m1.port), (Some(LOOPBACK), Some(origin.port)));
    assert!(
        m1.check_flags.configured() && !m1.check_flags.enabled(),
        "{m1:?}"
    );
    assert_eq!(
        http_get(port, "/").await.unwrap().0,
        503,
        "a new server takes no traffic"
    );

    // The safe order: check while in maintenance, ready once it passed.
    runtime.enable_health("dyn", "m1").await.unwrap();
    eventually(Duration::from_secs(10), "m1's check to pass", || async {
        let rows = runtime.show_servers_state(Some("dyn")).await.ok()?;
        rows.first()
            .filter(|row| row.check_status.passed())
            .map(|_| ())
    })
    .await;
    assert_eq!(
        http_get(port, "/").await.unwrap().0,
        503,
        "still in maintenance"
    );
    runtime
        .set_server_state("dyn", "m1", AdminState::Ready)
        .await
        .unwrap();
    assert_eq!(
        http_get(port, "/").await.unwrap(),
        (200, "origin".to_owned())
    );

    let stats = runtime.show_stat_for("dyn").await.unwrap();
    let row = stats.iter().find(|r| r.svname == "m1").unwrap();
    assert_eq!(row.kind, ProxyKind::Server);
    assert_eq!(row.status_kind(), Some(StatStatus::Up));
    assert_eq!(row.check(), Some(CheckStatus::L4Ok));
    assert!(row.stot.unwrap_or(0) >= 1, "{row:?}");

    runtime
        .run(&ServerCommand::SetWeight {
            backend: "dyn".to_owned(),
            server: "m1".to_owned(),
            weight: 10,
        })
        .await
        .unwrap();
    runtime
        .set_server_state("dyn", "m1", AdminState::Drain)
        .await
        .unwrap();
    let m1 = runtime
        .show_servers_state(Some("dyn"))
        .await
        .unwrap()
        .remove(0);
    assert_eq!((m1.admin_state(), m1.weight), (AdminState::Drain, 10));
    let stats = runtime.show_stat_for("dyn").await.unwrap();
    let row = stats.iter().find(|r| r.svname == "m1").unwrap();
    assert_eq!(row.status_kind(), Some(StatStatus::Drain));

    assert_eq!(
        failure(runtime.run(&delete("dyn", "m1")).await),
        Some(CommandFailure::NotInMaintenance)
    );
    runtime.disable_health("dyn", "m1").await.unwrap();
    runtime
        .set_server_state("dyn", "m1", AdminState::Maint)
        .await
        .unwrap();
    runtime.run(&delete("dyn", "m1")).await.unwrap();
    assert!(
        runtime
            .show_servers_state(Some("dyn"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(http_get(port, "/").await.unwrap().0, 503);
    // Taking the only server out is meant to leave the backend empty.
    lab.assert_no_unexpected_alerts(&["backend 'dyn' has no server available"]);
}

/// What `<bin> -v` says its version is (`HAProxy version 2.6.12-1+deb12u4 2026/10/17 - ...`).
fn version_of(bin: &std::path::Path) -> String {
    let out = std::process::Command::new(bin)
        .arg("-v")
        .output()
        .expect("haproxy -v runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn refusals_are_typed() {
    let Some(bin) = haproxy_bin() else { return };
    let version = version_of(&bin);
    let origin = Origin::start("origin").await;
    let port = free_port();
    let lab = Lab::start(bin, |s| runtime_config(s, port, origin.port)).await;
    let runtime = lab.supervisor.runtime();
    let options = ServerOptions::default();

    assert_eq!(
        failure(
            runtime
                .run(&add("be", "s1", origin.port, options.clone()))
                .await
        ),
        Some(CommandFailure::AlreadyExists)
    );
    assert_eq!(
        failure(
            runtime
                .run(&add("nope", "x", origin.port, options.clone()))
                .await
        ),
        Some(CommandFailure::NoSuchBackend)
    );
    assert_eq!(
        failure(
            runtime
                .run(&add("static_src", "x", origin.port, options))
                .await
        ),
        Some(CommandFailure::BackendNotDynamic)
    );
    assert_eq!(
        failure(
            runtime
                .set_server_state("be", "ghost", AdminState::Ready)
                .await
        ),
        Some(CommandFailure::NoSuchServer)
    );
    assert_eq!(
        failure(
            runtime
                .set_server_state("nope", "s1", AdminState::Ready)
                .await
        ),
        Some(CommandFailure::NoSuchBackend)
    );
    assert_eq!(
        failure(runtime.show_servers_conn("nope").await),
        Some(CommandFailure::NoSuchBackend)
    );
    assert_eq!(
        failure(runtime.show_servers_state(Some("nope")).await),
        Some(CommandFailure::NoSuchBackend)
    );
    // The raw command returns whatever HAProxy says, errors included.
    let reply = runtime.command("show nonsense").await.unwrap();
    assert_eq!(
        CommandFailure::classify(&reply),
        CommandFailure::UnknownCommand
    );
    // After all that the connection is still in step.
    let info = runtime.show_info().await.unwrap();
    assert_eq!(info.version(), Some(version.as_str()), "{info:?}");
}

#[tokio::test]
async fn a_server_with_a_request_in_flight_cannot_be_deleted() {
    let Some(bin) = haproxy_bin() else { return };
    let origin = Origin::start_with_delay("slow", Duration::from_millis(1500)).await;
    let port = free_port();
    let lab = Lab::start(bin, |s| runtime_config(s, port, origin.port)).await;
    let runtime = lab.supervisor.runtime();
    let no_check = ServerOptions {
        check: false,
        ..ServerOptions::default()
    };
    runtime
        .run(&add("dyn", "slow", origin.port, no_check))
        .await
        .unwrap();
    runtime
        .set_server_state("dyn", "slow", AdminState::Ready)
        .await
        .unwrap();

    let request = tokio::spawn(http_get(port, "/slow"));
    eventually(
        Duration::from_secs(5),
        "the request to be in flight",
        || async {
            let rows = runtime.show_servers_conn("dyn").await.ok()?;
            rows.iter()
                .find(|row| row.server == "slow" && row.used_cur == 1)
                .map(|_| ())
        },
    )
    .await;
    runtime
        .set_server_state("dyn", "slow", AdminState::Maint)
        .await
        .unwrap();
    assert_eq!(
        failure(runtime.run(&delete("dyn", "slow")).await),
        Some(CommandFailure::StillHasConnections)
    );
    // Maintenance does not cut the request short.
    assert_eq!(request.await.unwrap().unwrap(), (200, "slow".to_owned()));
    eventually(Duration::from_secs(5), "the delete to succeed", || async {
        runtime.run(&delete("dyn", "slow")).await.ok()
    })
    .await;
}

#[tokio::test]
async fn batches_run_many_commands_in_one_round_trip() {
    let Some(bin) = haproxy_bin() else { return };
    let origin = Origin::start("origin").await;
    let port = free_port();
    let lab = Lab::start(bin, |s| runtime_config(s, port, origin.port)).await;
    let runtime = lab.supervisor.runtime();

    let mut commands = Vec::new();
    for i in 0..100 {
        commands.push(ServerCommand::Add {
            backend: "dyn".to_owned(),
            server: format!("m{i}"),
            addr: LOOPBACK,
            port: origin.port,
            options: ServerOptions {
                id: Some(1000 + i),
                ..fast_check()
            },
        });
        commands.push(ServerCommand::SetState {
            backend: "dyn".to_owned(),
            server: format!("m{i}"),
            state: AdminState::Ready,
        });
    }
    let results = runtime.batch(&commands).await.unwrap();
    assert_eq!(results.len(), 200);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let rows = runtime.show_servers_state(Some("dyn")).await.unwrap();
    assert_eq!(rows.len(), 100);
    assert!(rows.iter().all(|r| r.admin_state() == AdminState::Ready));
    assert!(
        rows.iter()
            .any(|r| r.server == "m99" && r.server_id == 1099)
    );

    // One refused command does not stop the others, and an invalid one is never sent.
    let ready = |server: &str| ServerCommand::SetState {
        backend: "dyn".to_owned(),
        server: server.to_owned(),
        state: AdminState::Maint,
    };
    let results = runtime
        .batch(&[ready("m1"), ready("ghost"), ready("m 2"), ready("m3")])
        .await
        .unwrap();
    assert!(results[0].is_ok() && results[3].is_ok(), "{results:?}");
    assert!(
        matches!(&results[1], Err(e) if e.failure() == Some(CommandFailure::NoSuchServer)),
        "{results:?}"
    );
    assert!(
        matches!(&results[2], Err(RuntimeError::InvalidArgument { .. })),
        "{results:?}"
    );
    let rows = runtime.show_servers_state(Some("dyn")).await.unwrap();
    let maint: Vec<_> = rows
        .iter()
        .filter(|r| r.admin_state() == AdminState::Maint)
        .map(|r| r.server.as_str())
        .collect();
    assert_eq!(maint, vec!["m1", "m3"]);
    assert!(runtime.batch(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn injection_never_reaches_the_socket() {
    let Some(bin) = haproxy_bin() else { return };
    let origin = Origin::start("origin").await;
    let port = free_port();
    let lab = Lab::start(bin, |s| runtime_config(s, port, origin.port)).await;
    let runtime = lab.supervisor.runtime();

    for server in [
        "s1;del server be/s1",
        "s1 state maint",
        "s1\nset server be/s1 state maint",
    ] {
        let result = runtime
            .set_server_state("be", server, AdminState::Drain)
            .await;
        assert!(
            matches!(result, Err(RuntimeError::InvalidArgument { .. })),
            "{result:?}"
        );
    }
    let result = runtime
        .command("show info;set server be/s1 state maint")
        .await;
    assert!(
        matches!(result, Err(RuntimeError::InvalidArgument { .. })),
        "{result:?}"
    );
    let rows = runtime.show_servers_state(Some("be")).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].admin_state(), AdminState::Ready);
}

#[tokio::test]
async fn the_client_follows_the_worker_across_reloads_and_idle_timeouts() {
    let Some(bin) = haproxy_bin() else { return };
    let origin = Origin::start("origin").await;
    let port = free_port();
    // A short CLI idle timeout, so HAProxy closes the idle connection under the client.
    let config = |s: &SupervisorSettings| {
        runtime_config(s, port, origin.port).replace("stats timeout 2m", "stats timeout 300ms")
    };
    let lab = Lab::start(bin, config).await;
    let runtime = lab.supervisor.runtime();
    let first = runtime.show_info().await.unwrap().pid();

    let report = lab
        .supervisor
        .reload(&config(&lab.settings), "test")
        .await
        .unwrap();
    let second = runtime.show_info().await.unwrap().pid();
    assert_ne!(first, second);
    assert_eq!(second, report.worker_pid);

    // Let HAProxy drop the idle connection; the next command reconnects transparently.
    tokio::time::sleep(Duration::from_millis(800)).await;
    runtime
        .run(&add("dyn", "after_idle", origin.port, fast_check()))
        .await
        .unwrap();
    assert_eq!(
        runtime.show_servers_state(Some("dyn")).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn show_stat_parses_the_live_table() {
    let Some(bin) = haproxy_bin() else { return };
    let origin = Origin::start("origin").await;
    let port = free_port();
    let lab = Lab::start(bin, |s| runtime_config(s, port, origin.port)).await;
    let rows = lab.supervisor.runtime().show_stat().await.unwrap();
    let find = |px: &str, sv: &str| {
        rows.iter()
            .find(|r| r.pxname == px && r.svname == sv)
            .unwrap_or_else(|| panic!("{px}/{sv} missing from {rows:#?}"))
    };
    assert_eq!(find("fe_dyn", "FRONTEND").kind, ProxyKind::Frontend);
    assert_eq!(
        find("fe_dyn", "FRONTEND").status_kind(),
        Some(StatStatus::Open)
    );
    assert_eq!(find("dyn", "BACKEND").kind, ProxyKind::Backend);
    assert_eq!(
        find("static_src", "BACKEND").algo.as_deref(),
        Some("source")
    );
    let s1 = find("be", "s1");
    assert_eq!(s1.kind, ProxyKind::Server);
    assert_eq!(
        s1.addr.as_deref(),
        Some(format!("127.0.0.1:{}", origin.port).as_str())
    );
}

#[tokio::test]
async fn raw_commands_are_pipelined_and_answered_in_order() {
    let Some(bin) = haproxy_bin() else { return };
    let origin = Origin::start("origin").await;
    let port = free_port();
    let lab = Lab::start(bin, |s| runtime_config(s, port, origin.port)).await;
    let runtime = lab.supervisor.runtime();
    runtime
        .run(&add("dyn", "m1", origin.port, fast_check()))
        .await
        .unwrap();
    // Many more than fit on one command line: they are split over several.
    let mut lines = vec!["get weight dyn/m1", "get weight dyn/nope"];
    lines.extend(std::iter::repeat_n("get weight dyn/m1", 1000));
    let replies = runtime.commands(&lines).await.unwrap();
    assert_eq!(replies.len(), lines.len());
    assert!(replies[0].starts_with('1'), "{:?}", replies[0]);
    assert!(replies[1].contains("No such server"), "{:?}", replies[1]);
    assert!(replies[2..].iter().all(|r| r.starts_with('1')));
    assert!(runtime.commands(&["show info; show stat"]).await.is_err());
    assert!(runtime.commands(&[]).await.unwrap().is_empty());
}

/// The health-check ring, streamed: a runtime-added server's first passing check (still in
/// maintenance) arrives as a `CheckPassed` line on a connection of its own, while another
/// connection keeps sending commands; an unknown ring says so and ends the stream.
#[tokio::test]
async fn health_check_results_stream_from_the_ring() {
    use thalassa::haproxy::stat::{HealthEvent, parse_health_event};
    let Some(bin) = haproxy_bin() else { return };
    let origin = Origin::start("origin").await;
    let port = free_port();
    let config = |s: &SupervisorSettings| {
        runtime_config(s, port, origin.port)
            .replace(
                "backend dyn\n    balance roundrobin\n",
                "backend dyn\n    balance roundrobin\n    log ring@health local0 info\n    option log-health-checks\n",
            )
            + "\nring health\n    format raw\n    maxlen 1024\n    size 65536\n"
    };
    let lab = Lab::start(bin, config).await;
    let runtime = lab.supervisor.runtime();
    let mut events = runtime.separate().stream_events("health").await.unwrap();
    runtime
        .run(&add("dyn", "joining", origin.port, fast_check()))
        .await
        .unwrap();
    runtime.enable_health("dyn", "joining").await.unwrap();
    let passed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let line = events.next_line().await.unwrap().expect("the stream ended");
            if let HealthEvent::CheckPassed { backend, server } = parse_health_event(&line) {
                break (backend, server);
            }
        }
    })
    .await
    .expect("a passing check within 10 s");
    assert_eq!(passed, ("dyn".to_owned(), "joining".to_owned()));
    // Still in maintenance: the event came before anyone set it ready.
    let rows = runtime.show_servers_state(Some("dyn")).await.unwrap();
    assert_eq!(rows[0].admin_state(), AdminState::Maint);

    let mut unknown = runtime
        .separate()
        .stream_events("nosuchring")
        .await
        .unwrap();
    let said = tokio::time::timeout(Duration::from_secs(5), unknown.next_line())
        .await
        .expect("an answer")
        .unwrap();
    assert!(
        said.is_some_and(|l| l.contains("No such event sink")),
        "an unknown ring is refused"
    );
    assert!(
        runtime
            .separate()
            .stream_events("bad ring\nshow info")
            .await
            .is_err(),
        "a ring name cannot smuggle a command"
    );
}
