//! The supervisor against a real HAProxy: start, verified reloads, rejected and failed
//! reloads rolling back, restarts after kill -9, server state across reloads, clean stop.

#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches start the real programs they measure"
)]

mod haproxy_support;
mod support;

use haproxy_support::*;
use std::time::Duration;
use thalassa::haproxy::runtime::{AdminState, ServerCommand};
use thalassa::haproxy::supervisor::Supervisor;
use thalassa::haproxy::{ConfigTarget, ReloadError};

#[tokio::test]
async fn starts_reloads_and_verifies_the_new_worker() {
    let Some(bin) = haproxy_bin() else { return };
    let one = Origin::start("one").await;
    let two = Origin::start("two").await;
    let port = free_port();
    let lab = Lab::start(bin, |s| proxy_config(s, port, &[("s1", one.port)])).await;
    wait_for_body(port, "one").await;

    let before = lab.supervisor.show_proc().await.unwrap();
    let old_worker = before.current_worker().unwrap().pid;
    // A client on a connection of its own (like the membership manager's), connected to the
    // old worker before the reload.
    let separate = lab.supervisor.runtime().separate();
    assert_eq!(separate.show_info().await.unwrap().pid(), Some(old_worker));
    let mut reloads = lab.supervisor.reloads();
    let report = lab
        .supervisor
        .reload(
            &proxy_config(&lab.settings, port, &[("s2", two.port)]),
            "test",
        )
        .await
        .expect("reload succeeds");

    let new_worker = report.worker_pid.expect("new worker pid");
    assert_ne!(new_worker, old_worker);
    assert!(reloads.has_changed().unwrap());
    assert_eq!(*reloads.borrow_and_update(), 1);
    // The reload returns once the new worker serves: no waiting needed.
    assert_eq!(http_get(port, "/").await.unwrap(), (200, "two".to_owned()));
    let info = lab.supervisor.runtime().show_info().await.unwrap();
    assert_eq!(info.pid(), Some(new_worker));
    assert_eq!(
        separate.show_info().await.unwrap().pid(),
        Some(new_worker),
        "a separate client moves to the new worker too"
    );
    let after = lab.supervisor.show_proc().await.unwrap();
    assert_eq!(after.master.reloads, before.master.reloads + 1);
    assert_eq!(after.master.failed_reloads, 0);
    assert_eq!(after.current_worker().unwrap().pid, new_worker);
    // The old worker drains and exits; one master and one worker remain.
    eventually(Duration::from_secs(10), "old worker to exit", || async {
        (our_haproxy_pids(&lab.settings).len() == 2).then_some(())
    })
    .await;
    assert_eq!(lab.supervisor.metrics().reloads.get(&["ok"]), 1);
    assert_eq!(
        std::fs::read_to_string(lab.settings.config_path()).unwrap(),
        lab.supervisor.current_config().await
    );
    lab.assert_no_unexpected_alerts(&[]);
}

#[tokio::test]
async fn a_rejected_config_leaves_the_old_worker_serving() {
    let Some(bin) = haproxy_bin() else { return };
    let one = Origin::start("one").await;
    let port = free_port();
    let lab = Lab::start(bin, |s| proxy_config(s, port, &[("s1", one.port)])).await;
    wait_for_body(port, "one").await;
    let worker = lab
        .supervisor
        .show_proc()
        .await
        .unwrap()
        .current_worker()
        .unwrap()
        .pid;
    let good = lab.supervisor.current_config().await;

    let bad = format!("{good}\nbackend broken\n    bogus_keyword 1\n");
    let err = lab.supervisor.check(&bad).await.expect_err("check rejects");
    assert!(
        err.lines.iter().any(|l| l.contains("bogus_keyword")),
        "{err:?}"
    );
    assert!(
        err.lines.iter().any(|l| l.contains("haproxy.cfg:")),
        "line numbers name haproxy.cfg, not the scratch copy: {err:?}"
    );

    match lab.supervisor.reload(&bad, "test").await {
        Err(ReloadError::Rejected(rejected)) => {
            assert!(
                rejected.lines.iter().any(|l| l.contains("bogus_keyword")),
                "{rejected:?}"
            )
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    let procs = lab.supervisor.show_proc().await.unwrap();
    assert_eq!(procs.current_worker().unwrap().pid, worker);
    assert_eq!(procs.master.reloads, 0, "haproxy was never asked to reload");
    assert_eq!(
        std::fs::read_to_string(lab.settings.config_path()).unwrap(),
        good
    );
    assert_eq!(http_get(port, "/").await.unwrap(), (200, "one".to_owned()));
    assert_eq!(lab.supervisor.metrics().reloads.get(&["rejected"]), 1);
    // No scratch copies left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&lab.settings.run_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".check-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn a_reload_binding_a_busy_port_fails_and_rolls_back() {
    let Some(bin) = haproxy_bin() else { return };
    let one = Origin::start("one").await;
    let port = free_port();
    let lab = Lab::start(bin, |s| proxy_config(s, port, &[("s1", one.port)])).await;
    wait_for_body(port, "one").await;
    let worker = lab
        .supervisor
        .show_proc()
        .await
        .unwrap()
        .current_worker()
        .unwrap()
        .pid;
    let good = lab.supervisor.current_config().await;

    // `haproxy -c` does not bind, so only the reload itself can notice the busy port.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let clashing =
        format!("{good}\nfrontend clash\n    bind 127.0.0.1:{busy_port}\n    default_backend be\n");
    lab.supervisor
        .check(&clashing)
        .await
        .expect("haproxy -c accepts it");
    match lab.supervisor.reload(&clashing, "test").await {
        Err(ReloadError::Failed(reason)) => {
            assert!(reason.contains("cannot bind socket"), "{reason}");
            assert!(reason.contains(&busy_port.to_string()), "{reason}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }

    let procs = lab.supervisor.show_proc().await.unwrap();
    assert_eq!(procs.master.failed_reloads, 1);
    assert_eq!(
        procs.all_worker_pids(),
        vec![worker],
        "a single worker, the old one"
    );
    assert_eq!(
        our_haproxy_pids(&lab.settings).len(),
        2,
        "one master, one worker"
    );
    assert_eq!(
        std::fs::read_to_string(lab.settings.config_path()).unwrap(),
        good
    );
    assert_eq!(lab.supervisor.current_config().await, good);
    assert_eq!(http_get(port, "/").await.unwrap(), (200, "one".to_owned()));
    assert_eq!(lab.supervisor.metrics().reloads.get(&["failed"]), 1);

    // The runtime client still talks to the serving worker, and a good reload recovers.
    let info = lab.supervisor.runtime().show_info().await.unwrap();
    assert_eq!(info.pid(), Some(worker));
    drop(busy);
    let report = lab
        .supervisor
        .reload(&clashing, "port freed")
        .await
        .expect("reload");
    assert_ne!(report.worker_pid, Some(worker));
    let procs = lab.supervisor.show_proc().await.unwrap();
    assert_eq!(procs.master.failed_reloads, 0);
    lab.assert_no_unexpected_alerts(&["cannot bind socket", "failed to start", "Exiting"]);
}

#[tokio::test]
async fn start_rejects_a_bad_config_and_runs_nothing() {
    let Some(bin) = haproxy_bin() else { return };
    let (settings, _dir) = lab_settings(bin);
    let config = format!(
        "{}\nfrontend fe\n    bind 127.0.0.1:1\n    nonsense\n",
        base_config(&settings)
    );
    match Supervisor::start(settings.clone(), &config).await {
        Err(ReloadError::Rejected(rejected)) => {
            assert!(
                rejected.lines.iter().any(|l| l.contains("nonsense")),
                "{rejected:?}"
            )
        }
        Err(other) => panic!("expected Rejected, got {other:?}"),
        Ok(_) => panic!("expected Rejected, got a running haproxy"),
    }
    assert!(our_haproxy_pids(&settings).is_empty());
}

#[tokio::test]
async fn start_fails_with_haproxys_reason_when_the_port_is_busy() {
    let Some(bin) = haproxy_bin() else { return };
    let (settings, _dir) = lab_settings(bin);
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let config = proxy_config(&settings, busy_port, &[]);
    match Supervisor::start(settings.clone(), &config).await {
        Err(ReloadError::Failed(reason)) => assert!(reason.contains("cannot bind"), "{reason}"),
        Err(other) => panic!("expected Failed, got {other:?}"),
        Ok(_) => panic!("expected Failed, got a running haproxy"),
    }
    assert!(our_haproxy_pids(&settings).is_empty());
}

#[tokio::test]
async fn kill_9_of_the_worker_restarts_haproxy() {
    let Some(bin) = haproxy_bin() else { return };
    let one = Origin::start("one").await;
    let port = free_port();
    let lab = Lab::start(bin, |s| proxy_config(s, port, &[("s1", one.port)])).await;
    wait_for_body(port, "one").await;
    let mut restarts = lab.supervisor.restarts();
    let master = lab.supervisor.master_pid().unwrap();
    let worker = lab
        .supervisor
        .show_proc()
        .await
        .unwrap()
        .current_worker()
        .unwrap()
        .pid;

    kill_9(worker);
    tokio::time::timeout(Duration::from_secs(20), restarts.changed())
        .await
        .expect("restarted in time")
        .unwrap();
    assert_eq!(*restarts.borrow(), 1);
    // The master exits when its worker dies (exit-on-failure), so a new master runs.
    let new_master = lab.supervisor.master_pid().expect("running again");
    assert_ne!(new_master, master);
    wait_for_body(port, "one").await;
    let info = lab.supervisor.runtime().show_info().await.unwrap();
    assert_ne!(info.pid(), Some(worker));
    assert_eq!(our_haproxy_pids(&lab.settings).len(), 2);
    assert_eq!(lab.supervisor.metrics().restarts.get(), 1);
}

#[tokio::test]
async fn kill_9_of_the_master_restarts_haproxy_without_a_second_one() {
    let Some(bin) = haproxy_bin() else { return };
    let one = Origin::start("one").await;
    let two = Origin::start("two").await;
    let port = free_port();
    let lab = Lab::start(bin, |s| proxy_config(s, port, &[("s1", one.port)])).await;
    // The restart must use the last config HAProxy accepted, not the initial one.
    lab.supervisor
        .reload(
            &proxy_config(&lab.settings, port, &[("s2", two.port)]),
            "test",
        )
        .await
        .unwrap();
    let mut restarts = lab.supervisor.restarts();
    let master = lab.supervisor.master_pid().unwrap();
    let worker = lab
        .supervisor
        .show_proc()
        .await
        .unwrap()
        .current_worker()
        .unwrap()
        .pid;

    kill_9(master);
    tokio::time::timeout(Duration::from_secs(20), restarts.changed())
        .await
        .expect("restarted in time")
        .unwrap();
    let new_master = lab.supervisor.master_pid().expect("running again");
    assert_ne!(new_master, master);
    let pids = our_haproxy_pids(&lab.settings);
    assert!(
        !pids.contains(&worker),
        "the orphaned worker is gone: {pids:?}"
    );
    assert_eq!(pids.len(), 2, "one master, one worker: {pids:?}");
    assert_eq!(http_get(port, "/").await.unwrap(), (200, "two".to_owned()));
    // Reloads still work on the new master.
    let report = lab
        .supervisor
        .reload(&lab.supervisor.current_config().await, "after restart")
        .await
        .expect("reload after restart");
    assert!(report.worker_pid.is_some());
}

#[tokio::test]
async fn concurrent_reloads_are_serialised() {
    let Some(bin) = haproxy_bin() else { return };
    let one = Origin::start("one").await;
    let port = free_port();
    let lab = Lab::start(bin, |s| proxy_config(s, port, &[("s1", one.port)])).await;
    let configs: Vec<String> = (0..4)
        .map(|i| {
            let mut config = proxy_config(&lab.settings, port, &[("s1", one.port)]);
            config.push_str(&format!("\nbackend extra{i}\n    server x 127.0.0.1:1\n"));
            config
        })
        .collect();
    let reloads = configs
        .iter()
        .map(|config| lab.supervisor.reload(config, "concurrent"));
    let reports = futures_util::future::join_all(reloads).await;
    let mut workers: Vec<u32> = reports
        .into_iter()
        .map(|report| report.expect("every reload succeeds").worker_pid.unwrap())
        .collect();
    workers.sort();
    workers.dedup();
    assert_eq!(workers.len(), 4, "each reload got its own worker");
    let procs = lab.supervisor.show_proc().await.unwrap();
    assert_eq!((procs.master.reloads, procs.master.failed_reloads), (4, 0));
    assert_eq!(*lab.supervisor.reloads().borrow(), 4);
    assert!(configs.contains(&lab.supervisor.current_config().await));
    assert_eq!(http_get(port, "/").await.unwrap(), (200, "one".to_owned()));
}

#[tokio::test]
async fn server_state_is_carried_across_a_reload() {
    let Some(bin) = haproxy_bin() else { return };
    let one = Origin::start("one").await;
    let two = Origin::start("two").await;
    let port = free_port();
    let config = |s: &_| proxy_config(s, port, &[("s1", one.port), ("s2", two.port)]);
    let lab = Lab::start(bin, config).await;
    let runtime = lab.supervisor.runtime();
    runtime
        .set_server_state("be", "s1", AdminState::Drain)
        .await
        .unwrap();
    runtime
        .run(&ServerCommand::SetWeight {
            backend: "be".to_owned(),
            server: "s2".to_owned(),
            weight: 7,
        })
        .await
        .unwrap();

    // A config change elsewhere (a new backend) reloads; the runtime changes must survive.
    let mut changed = config(&lab.settings);
    changed.push_str("\nbackend other\n    server o1 127.0.0.1:1\n");
    lab.supervisor
        .reload(&changed, "test")
        .await
        .expect("reload");

    let rows = runtime.show_servers_state(Some("be")).await.unwrap();
    let state = |name: &str| rows.iter().find(|r| r.server == name).unwrap().clone();
    assert_eq!(state("s1").admin_state(), AdminState::Drain);
    assert_eq!(state("s2").admin_state(), AdminState::Ready);
    assert_eq!(state("s2").weight, 7);
    let state_file_warnings: Vec<_> = lab
        .supervisor
        .recent_log()
        .into_iter()
        .filter(|line| line.message.contains("server state file"))
        .collect();
    assert!(state_file_warnings.is_empty(), "{state_file_warnings:#?}");
    // Drained: every new request goes to s2.
    for _ in 0..4 {
        assert_eq!(http_get(port, "/").await.unwrap(), (200, "two".to_owned()));
    }
    lab.assert_no_unexpected_alerts(&[]);
}

#[tokio::test]
async fn shutdown_and_drop_leave_no_haproxy_behind() {
    let Some(bin) = haproxy_bin() else { return };
    let port = free_port();
    let lab = Lab::start(bin.clone(), |s| proxy_config(s, port, &[])).await;
    assert_eq!(our_haproxy_pids(&lab.settings).len(), 2);
    lab.supervisor.shutdown().await;
    assert!(our_haproxy_pids(&lab.settings).is_empty());
    assert_eq!(lab.supervisor.master_pid(), None);

    let port = free_port();
    let dropped = Lab::start(bin, |s| proxy_config(s, port, &[])).await;
    let settings = dropped.settings.clone();
    assert_eq!(our_haproxy_pids(&settings).len(), 2);
    drop(dropped);
    eventually(
        Duration::from_secs(5),
        "haproxy gone after drop",
        || async { our_haproxy_pids(&settings).is_empty().then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn start_replaces_a_haproxy_left_by_an_earlier_run() {
    let Some(bin) = haproxy_bin() else { return };
    let (settings, _dir) = lab_settings(bin);
    let port = free_port();
    let config = proxy_config(&settings, port, &[]);
    // Simulate a crashed control plane: an HAProxy of this run dir with no supervisor.
    std::fs::create_dir_all(&settings.run_dir).unwrap();
    std::fs::write(settings.config_path(), &config).unwrap();
    let mut orphan = std::process::Command::new(&settings.bin)
        .arg("-W")
        .arg("-S")
        .arg(format!(
            "{},mode,600",
            settings.master_socket_path().display()
        ))
        .arg("-f")
        .arg(settings.config_path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let first_pids = eventually(
        Duration::from_secs(10),
        "orphan master and worker",
        || async {
            let pids = our_haproxy_pids(&settings);
            (pids.len() == 2).then_some(pids)
        },
    )
    .await;

    // The new supervisor takes over (its own master and worker) and soft-stops the orphan.
    let second = Supervisor::start(settings.clone(), &config).await.unwrap();
    let pids = eventually(Duration::from_secs(10), "the orphan to exit", || async {
        let pids = our_haproxy_pids(&settings);
        (pids.len() == 2).then_some(pids)
    })
    .await;
    assert!(
        pids.iter().all(|pid| !first_pids.contains(pid)),
        "{pids:?} vs {first_pids:?}"
    );
    assert_eq!(
        second.master_pid().map(|pid| pids.contains(&pid)),
        Some(true)
    );
    // The orphan master exited; reap it here (it is our child).
    let _ = orphan.wait().unwrap();
    second.shutdown().await;
}
