//! Real HAProxy 2.6.12 outputs kept in tests/fixtures/haproxy/, and the rows they must parse
//! to. `capture_fixtures` (ignored; run with `--ignored`) regenerates them from a live
//! process with frontends, a listener, and servers UP, DOWN, MAINT, DRAIN, without checks,
//! layer-7 checked, and added at runtime.

mod haproxy_support;
mod support;

use haproxy_support::*;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;
use thalassa::haproxy::ConfigTarget;
use thalassa::haproxy::master_cli;
use thalassa::haproxy::runtime::{AdminState, RuntimeClient, ServerCommand, ServerOptions};
use thalassa::haproxy::stat::{
    CheckStatus, OperationalState, ProxyKind, StatStatus, parse_servers_conn, parse_servers_state,
    parse_show_info, parse_show_proc, parse_show_stat,
};
use thalassa::haproxy::supervisor::SupervisorSettings;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/haproxy")
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixture_dir().join(name))
        .unwrap_or_else(|err| panic!("fixture {name}: {err}"))
}

fn lab_config(settings: &SupervisorSettings, port: u16, origin: u16, closed: u16) -> String {
    format!(
        "{base}
frontend fe
    bind 127.0.0.1:{port} name web_listener
    option socket-stats
    default_backend web

backend web
    balance roundrobin
    server up1 127.0.0.1:{origin} check
    server down1 127.0.0.1:{closed} check
    server maint1 127.0.0.1:{origin} check disabled
    server drain1 127.0.0.1:{origin} check
    server nocheck1 127.0.0.1:{origin}

backend api
    balance leastconn
    option httpchk GET /
    http-check expect status 200
    server l7ok 127.0.0.1:{origin} check

backend empty
    balance roundrobin
",
        base = base_config(settings)
    )
}

#[tokio::test]
#[ignore = "rewrites tests/fixtures/haproxy from a live haproxy; run with --ignored"]
async fn capture_fixtures() {
    let Some(bin) = haproxy_bin() else { return };
    let origin = Origin::start("origin").await;
    let port = free_port();
    let closed = free_port();
    let config = |s: &SupervisorSettings| lab_config(s, port, origin.port, closed);
    let lab = Lab::start(bin, config).await;
    let runtime = lab.supervisor.runtime();
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let checked = ServerOptions {
        inter_ms: 100,
        rise: 1,
        fall: 2,
        id: Some(101),
        ..ServerOptions::default()
    };

    runtime
        .set_server_state("web", "drain1", AdminState::Drain)
        .await
        .unwrap();
    runtime
        .run(&ServerCommand::Add {
            backend: "web".to_owned(),
            server: "dyn_ready".to_owned(),
            addr: loopback,
            port: origin.port,
            options: checked,
        })
        .await
        .unwrap();
    runtime.enable_health("web", "dyn_ready").await.unwrap();
    runtime
        .set_server_state("web", "dyn_ready", AdminState::Ready)
        .await
        .unwrap();
    let unchecked = ServerOptions {
        check: false,
        id: Some(102),
        weight: 5,
        ..ServerOptions::default()
    };
    runtime
        .run(&ServerCommand::Add {
            backend: "web".to_owned(),
            server: "dyn_maint".to_owned(),
            addr: loopback,
            port: origin.port,
            options: unchecked,
        })
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "checks to settle", || async {
        let rows = runtime.show_servers_state(None).await.ok()?;
        let status = |name: &str| {
            rows.iter()
                .find(|r| r.server == name)
                .map(|r| r.check_status)
        };
        (status("down1") == Some(CheckStatus::L4Con)
            && status("up1") == Some(CheckStatus::L4Ok)
            && status("l7ok") == Some(CheckStatus::L7Ok)
            && status("dyn_ready") == Some(CheckStatus::L4Ok))
        .then_some(())
    })
    .await;
    for _ in 0..6 {
        http_get(port, "/").await.unwrap();
    }

    let dir = fixture_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let save = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
    save(
        "show_stat.csv",
        &runtime.command("show stat").await.unwrap(),
    );
    save(
        "servers_state.txt",
        &runtime.command("show servers state").await.unwrap(),
    );
    save(
        "servers_state_web.txt",
        &runtime.command("show servers state web").await.unwrap(),
    );
    save(
        "servers_conn_web.txt",
        &runtime.command("show servers conn web").await.unwrap(),
    );
    save(
        "show_info.txt",
        &runtime.command("show info").await.unwrap(),
    );
    let master = lab.settings.master_socket_path();
    save(
        "show_proc.txt",
        &master_cli::send(&master, "show proc").await.unwrap(),
    );

    // An open CLI connection keeps the old worker alive after a reload: "# old workers".
    let old_worker_client = RuntimeClient::new(lab.settings.admin_socket_path());
    old_worker_client.show_info().await.unwrap();
    lab.supervisor
        .reload(&config(&lab.settings), "fixture")
        .await
        .unwrap();
    save(
        "show_proc_old_worker.txt",
        &master_cli::send(&master, "show proc").await.unwrap(),
    );
    old_worker_client.disconnect().await;

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let clash = format!(
        "{}\nfrontend clash\n    bind 127.0.0.1:{}\n    default_backend web\n",
        config(&lab.settings),
        busy.local_addr().unwrap().port()
    );
    lab.supervisor.reload(&clash, "fixture").await.unwrap_err();
    save(
        "show_proc_failed.txt",
        &master_cli::send(&master, "show proc").await.unwrap(),
    );
}

#[test]
fn show_stat_fixture() {
    let rows = parse_show_stat(&fixture("show_stat.csv")).unwrap();
    let by_name: BTreeMap<(String, String), _> = rows
        .iter()
        .map(|r| ((r.pxname.clone(), r.svname.clone()), r))
        .collect();
    let row = |px: &str, sv: &str| {
        *by_name
            .get(&(px.to_owned(), sv.to_owned()))
            .unwrap_or_else(|| panic!("{px}/{sv} missing"))
    };
    let check =
        |px: &str, sv: &str, kind: ProxyKind, status: StatStatus, check: Option<CheckStatus>| {
            let r = row(px, sv);
            assert_eq!(
                (r.kind, r.status_kind(), r.check()),
                (kind, Some(status), check),
                "{px}/{sv}: {r:?}"
            );
        };
    check(
        "fe",
        "FRONTEND",
        ProxyKind::Frontend,
        StatStatus::Open,
        None,
    );
    check(
        "fe",
        "web_listener",
        ProxyKind::Listener,
        StatStatus::Open,
        None,
    );
    check(
        "web",
        "up1",
        ProxyKind::Server,
        StatStatus::Up,
        Some(CheckStatus::L4Ok),
    );
    check(
        "web",
        "down1",
        ProxyKind::Server,
        StatStatus::Down,
        Some(CheckStatus::L4Con),
    );
    check("web", "maint1", ProxyKind::Server, StatStatus::Maint, None);
    check(
        "web",
        "drain1",
        ProxyKind::Server,
        StatStatus::Drain,
        Some(CheckStatus::L4Ok),
    );
    check(
        "web",
        "nocheck1",
        ProxyKind::Server,
        StatStatus::NoCheck,
        None,
    );
    check(
        "web",
        "dyn_ready",
        ProxyKind::Server,
        StatStatus::Up,
        Some(CheckStatus::L4Ok),
    );
    check(
        "web",
        "dyn_maint",
        ProxyKind::Server,
        StatStatus::Maint,
        None,
    );
    check("web", "BACKEND", ProxyKind::Backend, StatStatus::Up, None);
    check(
        "api",
        "l7ok",
        ProxyKind::Server,
        StatStatus::Up,
        Some(CheckStatus::L7Ok),
    );
    // HAProxy reports a backend without servers as UP with no active server.
    check("empty", "BACKEND", ProxyKind::Backend, StatStatus::Up, None);
    assert_eq!(row("empty", "BACKEND").active_servers, Some(0));
    assert_eq!(row("api", "l7ok").check_code, Some(200));
    assert_eq!(
        row("web", "down1").last_chk.as_deref(),
        Some("Connection refused")
    );
    assert_eq!(row("web", "dyn_ready").server_id, Some(101));
    assert_eq!(row("api", "BACKEND").algo.as_deref(), Some("leastconn"));
    assert_eq!(row("fe", "FRONTEND").req_tot, Some(6));
    assert_eq!(row("web", "BACKEND").stot, Some(6));
}

#[test]
fn servers_state_fixtures() {
    let all = parse_servers_state(&fixture("servers_state.txt")).unwrap();
    let web = parse_servers_state(&fixture("servers_state_web.txt")).unwrap();
    assert_eq!(all.iter().filter(|r| r.backend == "web").count(), web.len());
    assert!(all.iter().any(|r| r.backend == "api" && r.server == "l7ok"));
    let summary: Vec<(&str, AdminState, OperationalState, CheckStatus, u32)> = web
        .iter()
        .map(|r| {
            (
                r.server.as_str(),
                r.admin_state(),
                r.op_state,
                r.check_status,
                r.server_id,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "up1",
                AdminState::Ready,
                OperationalState::Running,
                CheckStatus::L4Ok,
                1
            ),
            (
                "down1",
                AdminState::Ready,
                OperationalState::Stopped,
                CheckStatus::L4Con,
                2
            ),
            (
                "maint1",
                AdminState::Maint,
                OperationalState::Stopped,
                CheckStatus::Init,
                3
            ),
            (
                "drain1",
                AdminState::Drain,
                OperationalState::Running,
                CheckStatus::L4Ok,
                4
            ),
            (
                "nocheck1",
                AdminState::Ready,
                OperationalState::Running,
                CheckStatus::Init,
                5
            ),
            (
                "dyn_ready",
                AdminState::Ready,
                OperationalState::Running,
                CheckStatus::L4Ok,
                101
            ),
            (
                "dyn_maint",
                AdminState::Maint,
                OperationalState::Stopped,
                CheckStatus::Init,
                102
            ),
        ]
    );
    let dyn_ready = web.iter().find(|r| r.server == "dyn_ready").unwrap();
    assert!(dyn_ready.check_flags.configured() && dyn_ready.check_flags.enabled());
    assert_eq!(dyn_ready.addr, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let dyn_maint = web.iter().find(|r| r.server == "dyn_maint").unwrap();
    assert_eq!((dyn_maint.weight, dyn_maint.initial_weight), (5, 5));
    assert!(!dyn_maint.check_flags.configured());
}

#[test]
fn servers_conn_fixture() {
    let rows = parse_servers_conn(&fixture("servers_conn_web.txt")).unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r.server.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "up1",
            "down1",
            "maint1",
            "drain1",
            "nocheck1",
            "dyn_ready",
            "dyn_maint"
        ]
    );
    assert!(rows.iter().all(|r| r.backend == "web" && r.used_cur == 0));
    assert_eq!(rows[5].server_id, Some(101));
}

#[test]
fn show_info_and_show_proc_fixtures() {
    let info = parse_show_info(&fixture("show_info.txt")).unwrap();
    assert!(info.version().unwrap().starts_with("2.6.12"));
    let worker = info.pid().unwrap();

    let procs = parse_show_proc(&fixture("show_proc.txt")).unwrap();
    assert_eq!((procs.master.reloads, procs.master.failed_reloads), (0, 0));
    assert_eq!(procs.all_worker_pids(), vec![worker]);
    assert!(
        procs
            .master
            .version
            .as_deref()
            .unwrap()
            .starts_with("2.6.12")
    );

    let after_reload = parse_show_proc(&fixture("show_proc_old_worker.txt")).unwrap();
    assert_eq!(after_reload.master.pid, procs.master.pid);
    assert_eq!(after_reload.master.reloads, 1);
    assert_eq!(after_reload.old_workers.len(), 1);
    assert_eq!(after_reload.old_workers[0].pid, worker);
    assert_eq!(after_reload.old_workers[0].reloads, 1);
    let new_worker = after_reload.current_worker().unwrap().pid;
    assert_ne!(new_worker, worker);

    let failed = parse_show_proc(&fixture("show_proc_failed.txt")).unwrap();
    assert_eq!(
        (failed.master.reloads, failed.master.failed_reloads),
        (2, 1)
    );
    assert_eq!(failed.current_worker().unwrap().pid, new_worker);
}

mod truncated_and_corrupted_fixtures_never_panic {
    use super::*;
    use proptest::prelude::*;

    const NAMES: &[&str] = &[
        "show_stat.csv",
        "servers_state.txt",
        "servers_conn_web.txt",
        "show_info.txt",
        "show_proc_old_worker.txt",
    ];

    proptest! {
        #[test]
        fn parse_any_prefix_with_noise(which in 0..NAMES.len(), cut in any::<prop::sample::Index>(), noise in "[,/ \\n0-9a-z\"#-]{0,8}") {
            let text = fixture(NAMES[which]);
            let mut at = cut.index(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            let mangled = format!("{}{noise}{}", &text[..at], &text[at..]);
            for input in [&text[..at], mangled.as_str()] {
                let _ = parse_show_stat(input);
                let _ = parse_servers_state(input);
                let _ = parse_servers_conn(input);
                let _ = parse_show_info(input);
                let _ = parse_show_proc(input);
            }
        }
    }
}
