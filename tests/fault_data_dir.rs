//! Fault tests: the data dir full, and the data dir read-only, under traffic. The registry and
//! the aqueduct keep their data on a small tmpfs (mounted by the test; needs root, which CI
//! has). A change that cannot be persisted is refused with a 5xx JSON error naming the file,
//! nothing of it is applied (GET shows the old state, HAProxy keeps the running config), and
//! traffic is unaffected. The registry keeps accepting registrations in memory (heartbeats
//! must not fail because a snapshot cannot be written) and logs the failed snapshot.

#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches start the real programs they measure"
)]
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{
    Load, Origin, Proc, app_members_up, client, configure_web_app, eventually, free_port,
    require_haproxy, spawn_thalassa, wait_for_body, wait_http,
};

/// A tmpfs mounted on a directory, unmounted on drop.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// `None` (after a skip line) when mounting is not possible here; under `CI` that fails.
    fn mount(path: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            if std::env::var_os("CI").is_some() {
                panic!("mounting a tmpfs needs root (CAP_SYS_ADMIN) under CI");
            }
            eprintln!("SKIP: cannot mount a tmpfs (needs root)");
            return None;
        }
        Some(SmallDisk {
            path: path.to_owned(),
        })
    }

    fn remount(&self, mode: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success(), "remount {mode}");
    }

    /// Writes zeros until the disk is full.
    fn fill(&self) {
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", self.path.join("filler").display()))
            .stderr(std::process::Stdio::null())
            .status();
    }

    fn free(&self) {
        std::fs::remove_file(self.path.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

struct Setup {
    processes: Vec<Proc>,
    registry: String,
    api: String,
    proxy_port: u16,
    _origins: Vec<Origin>,
}

/// Registry and aqueduct with their data dirs on `disk`, logs in `logs`, serving `app`.
async fn setup(disk: &SmallDisk, logs: &Path) -> Setup {
    let (registry_port, api_port, proxy_port) = (free_port(), free_port(), free_port());
    let registry = format!("http://127.0.0.1:{registry_port}");
    let api = format!("http://127.0.0.1:{api_port}");
    let registry_data = disk.path.join("registry");
    let mut registry_proc = spawn_thalassa(
        logs,
        "registry",
        &[
            "registry",
            "--listen",
            &format!("127.0.0.1:{registry_port}"),
            "--data-dir",
            registry_data.to_str().unwrap(),
        ],
    );
    wait_http(&format!("{registry}/status"), &mut registry_proc).await;
    let aqueduct_data = disk.path.join("aqueduct");
    let mut aqueduct = spawn_thalassa(
        logs,
        "aqueduct",
        &[
            "aqueduct",
            "--listen",
            &format!("127.0.0.1:{api_port}"),
            "--registry",
            &registry,
            "--data-dir",
            aqueduct_data.to_str().unwrap(),
        ],
    );
    wait_http(&format!("{api}/frontends"), &mut aqueduct).await;
    configure_web_app(&api, proxy_port).await;
    let origins = vec![Origin::start("web").await, Origin::start("web").await];
    for origin in &origins {
        register(&registry, origin.port()).await;
    }
    wait_for_body(proxy_port, "web").await;
    eventually(Duration::from_secs(15), "both members UP", || async {
        (app_members_up(&api).await == 2).then_some(())
    })
    .await;
    Setup {
        processes: vec![registry_proc, aqueduct],
        registry,
        api,
        proxy_port,
        _origins: origins,
    }
}

async fn register(registry: &str, port: u16) {
    let url = format!("{registry}/registrations/app/1/127.0.0.1/{port}");
    let response = client()
        .post(url)
        .body(r#"{"secondsToExpire":600}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// PUT of a new frontend `extra`: (status, body).
async fn put_extra_frontend(api: &str) -> (u16, serde_json::Value) {
    let body = format!(
        r#"{{"bind":"127.0.0.1:{}","backend":"app","mode":"http"}}"#,
        free_port()
    );
    let response = client()
        .put(format!("{api}/frontends/extra"))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

async fn frontend_keys(api: &str) -> Vec<String> {
    let list: serde_json::Value = client()
        .get(format!("{api}/frontends"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap().to_owned())
        .collect()
}

/// The data dir breaks (`break_it`), a change is refused cleanly while traffic flows, the
/// registry still takes registrations; then it is repaired (`repair`) and the change applies.
async fn refused_while_broken(fault: &str, break_it: fn(&SmallDisk), repair: fn(&SmallDisk)) {
    if !require_haproxy() {
        return;
    }
    let logs = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&logs.path().join("data"), "16m") else {
        return;
    };
    let setup = setup(&disk, logs.path()).await;
    let load = Load::start(setup.proxy_port, 2);
    load.wait_ok(300).await;

    let before = load.snapshot();
    let fault_at = Instant::now();
    break_it(&disk);
    let (status, body) = put_extra_frontend(&setup.api).await;
    println!("fault: {fault}: PUT answered {status} {body}");
    assert!((500..600).contains(&status), "{status} {body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(disk.path.to_str().unwrap()),
        "names the file: {error}"
    );
    assert_eq!(frontend_keys(&setup.api).await, ["web"], "nothing applied");

    // The registry keeps taking registrations (in memory) and the aqueduct follows them.
    let third = Origin::start("web").await;
    register(&setup.registry, third.port()).await;
    eventually(Duration::from_secs(15), "the third member UP", || async {
        (app_members_up(&setup.api).await == 3).then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "the registry to report its failed snapshot",
        || async {
            setup.processes[0]
                .log_text()
                .contains("cannot write the registrations snapshot")
                .then_some(())
        },
    )
    .await;
    load.wait_ok(300).await;
    let report = load.report_since(&before, fault_at);
    report.print(fault);
    assert_eq!(report.failed, 0, "traffic is unaffected by the data dir");

    repair(&disk);
    let (status, body) = put_extra_frontend(&setup.api).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(frontend_keys(&setup.api).await, ["extra", "web"]);
    load.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_dir_refuses_changes_and_keeps_serving() {
    refused_while_broken("data dir full", SmallDisk::fill, SmallDisk::free).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_data_dir_refuses_changes_and_keeps_serving() {
    refused_while_broken(
        "data dir read-only",
        |disk| disk.remount("ro"),
        |disk| disk.remount("rw"),
    )
    .await;
}
