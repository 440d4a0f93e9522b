//! Fault test: `kill -9` of the aqueduct while traffic flows through its HAProxy. HAProxy is
//! left running (it is not killed with its parent) and keeps serving; the restarted aqueduct
//! takes over from it without a gap, restores the members, and exactly one HAProxy remains.
//! Both as separate processes (registry + aqueduct) and as one `thalassa up` process.

#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches start the real programs they measure"
)]
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

mod support;

use std::time::{Duration, Instant};
use support::{
    KillHaproxiesOnDrop, Load, Origin, Stack, app_members_up, client, configure_web_app,
    eventually, free_port, haproxy_masters, haproxy_workers, require_haproxy, signal,
    start_aqueduct, start_registry, wait_for_body,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_aqueduct_leaves_traffic_flowing_and_a_restart_takes_over() {
    if !require_haproxy() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (registry_port, api_port, proxy_port) = (free_port(), free_port(), free_port());
    let registry = format!("http://127.0.0.1:{registry_port}");
    let api = format!("http://127.0.0.1:{api_port}");
    let _registry = start_registry(dir.path(), registry_port).await;
    let mut aqueduct = start_aqueduct(dir.path(), "aqueduct-1", api_port, &registry).await;
    configure_web_app(&api, proxy_port).await;
    let origins = [Origin::start("web").await, Origin::start("web").await];
    for origin in &origins {
        let url = format!("{registry}/registrations/app/1/127.0.0.1/{}", origin.port());
        let response = client()
            .post(url)
            .body(r#"{"secondsToExpire":600}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    wait_for_body(proxy_port, "web").await;
    eventually(Duration::from_secs(10), "both members UP", || async {
        (app_members_up(&api).await == 2).then_some(())
    })
    .await;
    let run_dir = dir.path().join("aqueduct").join("haproxy");
    let _reaper = KillHaproxiesOnDrop(run_dir.clone());
    let first_master = haproxy_masters(&run_dir);
    assert_eq!(first_master.len(), 1);

    let load = Load::start(proxy_port, 4);
    load.wait_ok(300).await;
    let before = load.snapshot();
    let fault_at = Instant::now();
    signal(aqueduct.pid(), "KILL");
    let _ = aqueduct.child.wait();

    // While the aqueduct is dead, its HAProxy keeps serving.
    load.wait_ok(500).await;
    let orphaned = load.report_since(&before, fault_at);
    orphaned.print("kill -9 aqueduct (while it is down)");
    assert_eq!(
        haproxy_masters(&run_dir),
        first_master,
        "haproxy outlived the aqueduct"
    );

    // A new aqueduct on the same data dir takes over.
    let restart_at = Instant::now();
    let restarted = start_aqueduct(dir.path(), "aqueduct-2", api_port, &registry).await;
    eventually(Duration::from_secs(15), "both members UP again", || async {
        (app_members_up(&api).await == 2).then_some(())
    })
    .await;
    let masters_gone = eventually(
        Duration::from_secs(40),
        "the old haproxy to be gone",
        || async {
            let masters = haproxy_masters(&run_dir);
            (masters.len() == 1 && masters != first_master).then_some(restart_at.elapsed())
        },
    )
    .await;
    // The adopted setup takes changes (a reload of the new master) and keeps serving.
    let response = client()
        .put(format!("{api}/backends/app"))
        .body(r#"{"type":"dynamic","name":"app","version":"1","health":{"interval":150}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    load.wait_ok(500).await;
    let report = load.report_since(&before, fault_at);
    report.print("kill -9 aqueduct, restart");
    println!(
        "fault: kill -9 aqueduct: restarted aqueduct took over in {:.2} s (old haproxy gone)",
        masters_gone.as_secs_f64()
    );
    load.stop().await;

    assert!(
        restarted
            .log_text()
            .contains("took over the listening sockets"),
        "the restart took the running haproxy over"
    );
    assert_eq!(
        haproxy_masters(&run_dir).len(),
        1,
        "exactly one haproxy master"
    );
    // The restarted aqueduct reloads its HAProxy at startup; the replaced worker leaves once
    // its connections (the load's) have ended.
    let workers = eventually(
        Duration::from_secs(20),
        "exactly one haproxy worker",
        || async {
            let workers = haproxy_workers(&run_dir);
            (workers.len() == 1).then_some(workers)
        },
    )
    .await;
    assert_eq!(workers.len(), 1, "exactly one haproxy worker");
    assert_eq!(
        report.failed,
        0,
        "no request may fail when the aqueduct dies and restarts; log:\n{}",
        restarted.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_thalassa_up_is_taken_over_too() {
    if !require_haproxy() {
        return;
    }
    let mut stack = Stack::start().await;
    let run_dir = stack.dir.path().join("haproxy");
    let _reaper = KillHaproxiesOnDrop(run_dir.clone());
    let proxy_port = free_port();
    configure_web_app(&stack.aqueduct, proxy_port).await;
    let origins = [Origin::start("web").await, Origin::start("web").await];
    for origin in &origins {
        stack.register_origin("app", "1", origin).await;
    }
    eventually(Duration::from_secs(15), "both members UP", || async {
        (app_members_up(&stack.aqueduct).await == 2).then_some(())
    })
    .await;
    // The in-process registry snapshots at most a second after a change; what its file holds
    // survives its kill -9.
    let snapshot = stack.dir.path().join("registry").join("registrations.json");
    eventually(
        Duration::from_secs(10),
        "both members in the registry's snapshot",
        || async {
            let text = std::fs::read_to_string(&snapshot).ok()?;
            origins
                .iter()
                .all(|o| text.contains(&format!("/app/1/127.0.0.1/{}", o.port())))
                .then_some(())
        },
    )
    .await;
    let first_master = haproxy_masters(&run_dir);

    let load = Load::start(proxy_port, 4);
    load.wait_ok(300).await;
    let before = load.snapshot();
    let fault_at = Instant::now();
    stack.kill_9_and_restart().await;
    eventually(Duration::from_secs(15), "both members UP again", || async {
        (app_members_up(&stack.aqueduct).await == 2).then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(40),
        "the old haproxy to be gone",
        || async {
            let masters = haproxy_masters(&run_dir);
            (masters.len() == 1 && masters != first_master).then_some(())
        },
    )
    .await;
    load.wait_ok(500).await;
    let report = load.report_since(&before, fault_at);
    report.print("kill -9 thalassa up, restart");
    load.stop().await;
    assert!(
        stack
            .proc
            .log_text()
            .contains("took over the listening sockets"),
        "the restart took the running haproxy over"
    );
    let workers = eventually(
        Duration::from_secs(20),
        "exactly one haproxy worker",
        || async {
            let workers = haproxy_workers(&run_dir);
            (workers.len() == 1).then_some(workers)
        },
    )
    .await;
    assert_eq!(workers.len(), 1, "exactly one haproxy worker");
    assert_eq!(report.failed, 0, "log:\n{}", stack.proc.log_text());
}

/// A stop (SIGTERM) of `thalassa up` without `--stop-haproxy` leaves HAProxy serving, and the
/// next start takes it over: a restart or upgrade of the control plane drops no request, and
/// membership works again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_thalassa_up_hands_haproxy_to_the_next_start() {
    if !require_haproxy() {
        return;
    }
    let mut stack = Stack::start_leaving_haproxy_serving().await;
    let run_dir = stack.dir.path().join("haproxy");
    let _reaper = KillHaproxiesOnDrop(run_dir.clone());
    let (proxy_port, _origin) = serve_one_member(&stack).await;
    let first_master = haproxy_masters(&run_dir);
    assert_eq!(first_master.len(), 1);

    let load = Load::start(proxy_port, 4);
    load.wait_ok(300).await;
    let before = load.snapshot();
    let fault_at = Instant::now();
    let exited = stack.proc.terminate_within(Duration::from_secs(20));
    assert!(exited.is_some(), "thalassa up exits on SIGTERM");
    let stopped_log = stack.proc.log_text();
    assert!(
        stopped_log.contains("haproxy left serving"),
        "log:\n{stopped_log}"
    );
    // With the control plane gone, its HAProxy keeps serving.
    assert_eq!(haproxy_masters(&run_dir), first_master);
    load.wait_ok(500).await;
    stack.start_again().await;
    eventually(Duration::from_secs(40), "the old haproxy gone", || async {
        let masters = haproxy_masters(&run_dir);
        (masters.len() == 1 && masters != first_master).then_some(())
    })
    .await;
    assert!(
        stack
            .proc
            .log_text()
            .contains("took over the listening sockets"),
        "the next start took the running haproxy over"
    );
    // Membership is live again: a second member joins without a reload and serves.
    let _second = join_a_second_member(&stack, proxy_port).await;
    load.wait_ok(500).await;
    let report = load.report_since(&before, fault_at);
    report.print("SIGTERM thalassa up, start again");
    load.stop().await;
    assert_eq!(report.failed, 0, "log:\n{}", stack.proc.log_text());
}

/// `--haproxy-external`: HAProxy runs on its own (here a process this test starts once the
/// config exists, as compose's HAProxy container does); the control plane attaches to it,
/// applies members live, and a stop and start of the control plane leaves it serving, with
/// no failed request and no new HAProxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_haproxy_keeps_serving_while_the_control_plane_restarts() {
    if !require_haproxy() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("haproxy");
    let _reaper = KillHaproxiesOnDrop(run_dir.clone());
    // The "HAProxy container": waits for the config, then runs HAProxy in master-worker mode.
    let external_run_dir = run_dir.clone();
    let external = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !external_run_dir.join("haproxy.cfg").exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        start_external_haproxy(&external_run_dir)
    });
    let mut stack = Stack::start_in(dir, &["--haproxy-external"], false).await;
    let mut external = external.join().unwrap();
    let (proxy_port, _origin) = serve_one_member(&stack).await;
    let masters = haproxy_masters(&run_dir);
    assert_eq!(
        masters,
        vec![external.id()],
        "the test's haproxy is the only one"
    );

    let load = Load::start(proxy_port, 4);
    load.wait_ok(300).await;
    let before = load.snapshot();
    let fault_at = Instant::now();
    let exited = stack.proc.terminate_within(Duration::from_secs(20));
    assert!(exited.is_some(), "thalassa up exits on SIGTERM");
    load.wait_ok(500).await;
    stack.start_again().await;
    // Attached again: a new member joins live and serves.
    let _second = join_a_second_member(&stack, proxy_port).await;
    load.wait_ok(500).await;
    let report = load.report_since(&before, fault_at);
    report.print("external haproxy, control plane SIGTERM and start again");
    load.stop().await;
    assert_eq!(
        haproxy_masters(&run_dir),
        vec![external.id()],
        "still the same haproxy"
    );
    assert!(
        stack
            .proc
            .log_text()
            .contains("attached to the external haproxy"),
        "log:\n{}",
        stack.proc.log_text()
    );
    assert_eq!(report.failed, 0, "log:\n{}", stack.proc.log_text());

    // The external HAProxy dies and its keeper starts it again (from the config on disk):
    // the control plane notices the new master and applies every member again.
    signal(external.id(), "KILL");
    let _ = external.wait();
    let mut external = start_external_haproxy(&run_dir);
    eventually(
        Duration::from_secs(20),
        "both members UP on the new haproxy",
        || async { (app_members_up(&stack.aqueduct).await == 2).then_some(()) },
    )
    .await;
    wait_for_body(proxy_port, "web-2").await;
    wait_for_body(proxy_port, "web").await;
    assert!(
        stack
            .proc
            .log_text()
            .contains("the external haproxy was restarted"),
        "log:\n{}",
        stack.proc.log_text()
    );
    drop(stack);
    let _ = external.kill();
    let _ = external.wait();
}

/// `haproxy -W -S <run_dir>/master.sock -f <run_dir>/haproxy.cfg`, as compose's HAProxy
/// container runs it.
fn start_external_haproxy(run_dir: &std::path::Path) -> std::process::Child {
    let bin = support::haproxy_path().unwrap();
    std::process::Command::new(&bin)
        .arg("-W")
        .arg("-S")
        .arg(format!(
            "{},mode,600",
            run_dir.join("master.sock").display()
        ))
        .arg("-f")
        .arg(run_dir.join("haproxy.cfg"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// The app behind a frontend on a free port, with one serving member; its port and origin.
async fn serve_one_member(stack: &Stack) -> (u16, Origin) {
    let proxy_port = free_port();
    configure_web_app(&stack.aqueduct, proxy_port).await;
    let origin = Origin::start("web").await;
    stack.register_origin("app", "1", &origin).await;
    eventually(Duration::from_secs(15), "the member UP", || async {
        (app_members_up(&stack.aqueduct).await == 1).then_some(())
    })
    .await;
    (proxy_port, origin)
}

/// Membership is live: a second member (`web-2`) joins without a reload and serves.
async fn join_a_second_member(stack: &Stack, proxy_port: u16) -> Origin {
    let second = Origin::start("web-2").await;
    stack.register_origin("app", "1", &second).await;
    eventually(Duration::from_secs(15), "both members UP", || async {
        (app_members_up(&stack.aqueduct).await == 2).then_some(())
    })
    .await;
    wait_for_body(proxy_port, "web-2").await;
    second
}
