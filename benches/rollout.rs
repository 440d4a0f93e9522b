//! Rollout benchmark (`cargo bench --bench rollout`): one real aqueduct with its real HAProxy,
//! a dynamic backend with 4 members of version 1 and 4 of version 2, started from the real
//! binary:
//!
//! - **rollout step -> live**: `POST /backends/app/rollout` with the next weight, until
//!   HAProxy's `show servers state` shows every member at the split's weight (runtime
//!   `set server ... weight`, no reload);
//! - **baseline, the same change through a reload**: a PUT of the backend that only changes a
//!   comment line, answered once HAProxy reloaded (what each step would cost a controller that
//!   renders weights into the config and reloads), in the same invocation, with the ratio.
//!
//! Without HAProxy installed it says so and measures nothing (a smoke run under `cargo test`
//! fails instead under `CI=true`).

#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches start the real programs they measure"
)]

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use thalassa::config::rollout::split_weights;

#[path = "common/admin_socket.rs"]
mod admin_socket;
#[path = "common/latency.rs"]
mod latency;
#[path = "common/process.rs"]
mod process;
#[path = "common/run_mode.rs"]
mod run_mode;

use latency::line;
use process::{Process, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_thalassa");

/// The shares the steps cycle through.
const SHARES: [u8; 6] = [5, 25, 50, 75, 95, 50];

async fn send(method: reqwest::Method, url: &str, body: serde_json::Value) {
    let response = reqwest::Client::new()
        .request(method, url)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status();
    assert_eq!(
        status,
        200,
        "{url}: {}",
        response.text().await.unwrap_or_default()
    );
}

/// Polls HAProxy back to back until every server of `app` has the weight `expected` gives
/// its port's version; the time since `started`.
async fn until_weights(
    admin: &std::path::Path,
    expected: &BTreeMap<String, u32>,
    started: Instant,
) -> Duration {
    loop {
        if admin_socket::weights(admin, "app").await.as_ref() == Some(expected) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "weights never became {expected:?}"
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

fn main() {
    let Some(mode) = run_mode::run_mode("rollout") else {
        return;
    };
    if !process::haproxy_runs() {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "the rollout bench needs haproxy (.ci/run installs it)"
        );
        println!("SKIP rollout bench: haproxy is not installed");
        return;
    }
    let runs = mode.pick(60, 3);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let dir = tempfile::tempdir().expect("temp dir");
        let (registry_port, api_port) = (free_port(), free_port());
        let registry = format!("http://127.0.0.1:{registry_port}");
        let api = format!("http://127.0.0.1:{api_port}");
        let data = dir.path().join("up");
        let _up = Process(
            Command::new(BIN)
                .args(["up", "--stop-haproxy", "--data-dir"])
                .arg(&data)
                .args(["--registry-listen", &format!("127.0.0.1:{registry_port}")])
                .args(["--listen", &format!("127.0.0.1:{api_port}")])
                .env("THALASSA_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start thalassa up"),
        );
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !client
            .get(format!("{api}/frontends"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            assert!(Instant::now() < deadline, "the aqueduct never answered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Members are listening sockets: a layer-4 check passes on the handshake alone.
        let mut members = Vec::new();
        for version in ["1", "1", "1", "1", "2", "2", "2", "2"] {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let port = listener.local_addr().expect("addr").port();
            let url = format!("{registry}/registrations/app/{version}/127.0.0.1/{port}");
            send(
                reqwest::Method::POST,
                &url,
                serde_json::json!({"secondsToExpire": 3600}),
            )
            .await;
            members.push((listener, version, format!("app_127.0.0.1:{port}")));
        }
        let backend = |note: usize| {
            serde_json::json!({"type": "dynamic", "name": "app", "version": "1", "mode": "http",
                "health": {"interval": 1000}, "natives": [format!("# bench run {note}")]})
        };
        send(
            reqwest::Method::PUT,
            &format!("{api}/backends/app"),
            backend(0),
        )
        .await;
        let admin = data.join("haproxy").join("admin.sock");
        let weights_for = |share: Option<u8>| -> BTreeMap<String, u32> {
            let (old, new) = share.map_or((1, 1), |s| split_weights(s, 4, 4));
            members
                .iter()
                .filter(|(_, version, _)| share.is_some() || *version == "1")
                .map(|(_, version, server)| {
                    let weight = if *version == "2" { new } else { old };
                    (server.clone(), u32::from(weight))
                })
                .collect()
        };
        until_weights(&admin, &weights_for(None), Instant::now()).await;

        println!("rollout bench ({mode:?}): 4 members of version 1, 4 of version 2, one HAProxy");
        let mut steps = Vec::with_capacity(runs);
        for run in 0..runs + 2 {
            let share = SHARES[run % SHARES.len()];
            let started = Instant::now();
            send(
                reqwest::Method::POST,
                &format!("{api}/backends/app/rollout"),
                serde_json::json!({"version": "2", "weight": share, "sticky": false}),
            )
            .await;
            let took = until_weights(&admin, &weights_for(Some(share)), started).await;
            // The first two add version 2's members and warm up the path.
            if run >= 2 {
                steps.push(took);
            }
        }
        let mut reloads = Vec::with_capacity(runs);
        for run in 0..runs {
            let started = Instant::now();
            send(
                reqwest::Method::PUT,
                &format!("{api}/backends/app"),
                backend(run + 1),
            )
            .await;
            reloads.push(started.elapsed());
        }
        let (step_p50, step_p99) = line("rollout step -> every weight live (no reload)", steps);
        let (reload_p50, reload_p99) = line("baseline: the same change through a reload", reloads);
        println!(
            "ratio (reload / runtime weights): x{:.1} at p50, x{:.1} at p99",
            reload_p50 / step_p50,
            reload_p99 / step_p99
        );
    });
}
