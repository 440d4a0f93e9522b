//! Fleet benchmark (`cargo bench --bench fleet`): a fleet of two aqueducts on one real
//! `redis-server` (`--store`), each with its own real HAProxy on its own loopback address, and
//! one aqueduct alone (the baseline), all started from the real binary in one invocation:
//!
//! - **config change -> live**: a new frontend PUT on the lone aqueduct, until its HAProxy
//!   accepts connections on the new port (the single-node time); the same PUT on fleet node 1,
//!   until node 2's HAProxy accepts on it (committed to the store, followed by node 2, checked
//!   and reloaded there), printed beside it with the ratio;
//! - **membership change -> present on both HAProxies**: a registration POSTed on the registry
//!   until both nodes' HAProxies list the server (`show servers state`): membership is not part
//!   of the shared config, each node applies it live (target: p99 under 10 ms).
//!
//! Without HAProxy or redis-server installed it says so and measures nothing (a smoke run under
//! `cargo test` fails instead under `CI=true`).

#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches start the real programs they measure"
)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

/// Whether the HAProxy binary (`THALASSA_HAPROXY_BIN`, or `haproxy`) and `redis-server` run.
fn prerequisites_installed() -> bool {
    let bin = std::env::var("THALASSA_HAPROXY_BIN").unwrap_or_else(|_| "haproxy".to_owned());
    let runs = |command: &mut Command| {
        command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    runs(Command::new(bin).arg("-v")) && runs(Command::new("redis-server").arg("--version"))
}

fn spawn(args: &[&str]) -> Process {
    Process(
        Command::new(BIN)
            .args(args)
            .env("THALASSA_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start thalassa"),
    )
}

async fn wait_up(url: &str) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never answered 200");
}

/// An aqueduct: its API, the address its HAProxy binds wildcards on, and its admin socket.
struct Aqueduct {
    api: String,
    address: Ipv4Addr,
    admin: PathBuf,
    _process: Process,
}

async fn start_aqueduct(
    dir: &Path,
    name: &str,
    address: Ipv4Addr,
    registry: &str,
    store: Option<&str>,
) -> Aqueduct {
    let port = free_port();
    let data = dir.join(name);
    let listen = format!("127.0.0.1:{port}");
    let address_text = address.to_string();
    let data_text = data.to_string_lossy().into_owned();
    let mut args = vec![
        "aqueduct",
        "--listen",
        &listen,
        "--registry",
        registry,
        "--stop-haproxy",
        "--data-dir",
        &data_text,
        "--bind-address",
        &address_text,
    ];
    if let Some(store) = store {
        args.extend(["--store", store, "--node-id", name]);
    }
    let process = spawn(&args);
    let api = format!("http://{listen}");
    wait_up(&format!("{api}/frontends")).await;
    Aqueduct {
        api,
        address,
        admin: data.join("haproxy").join("admin.sock"),
        _process: process,
    }
}

async fn put(api: &str, path: &str, body: serde_json::Value) {
    let response = reqwest::Client::new()
        .put(format!("{api}{path}"))
        .json(&body)
        .send()
        .await
        .expect("PUT");
    let status = response.status();
    assert_eq!(
        status,
        200,
        "PUT {path}: {}",
        response.text().await.unwrap_or_default()
    );
}

/// Polls (back to back) until something accepts on `address:port`; the time since `started`.
async fn until_listening(address: Ipv4Addr, port: u16, started: Instant) -> Duration {
    loop {
        if tokio::net::TcpStream::connect((address, port))
            .await
            .is_ok()
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{address}:{port} never listened"
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// Times for `runs` new frontends PUT on `taker`, each until `watcher`'s HAProxy listens.
async fn change_to_live(taker: &Aqueduct, watcher: &Aqueduct, runs: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(runs);
    for run in 0..runs + 2 {
        let port = free_port();
        let body =
            serde_json::json!({"bind": format!("*:{port}"), "backend": "web", "mode": "http"});
        let started = Instant::now();
        put(&taker.api, &format!("/frontends/f{run}"), body).await;
        let took = until_listening(watcher.address, port, started).await;
        // The first two warm up the path (connections, the first reload).
        if run >= 2 {
            times.push(took);
        }
    }
    times
}

/// Times for `runs` registrations until both HAProxies list the server.
async fn membership_to_both(registry: &str, nodes: &[&Aqueduct], runs: usize) -> Vec<Duration> {
    let client = reqwest::Client::new();
    let mut times = Vec::with_capacity(runs);
    for run in 0..runs + 3 {
        let port = 30_000 + run;
        let server = format!("presence_127.0.0.1:{port}");
        let started = Instant::now();
        let response = client
            .post(format!(
                "{registry}/registrations/presence/1/127.0.0.1/{port}"
            ))
            .body(r#"{"secondsToExpire":600}"#)
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), 200);
        for node in nodes {
            while !admin_socket::present(&node.admin, "presence", &server).await {
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "{server} never appeared"
                );
            }
        }
        if run >= 3 {
            times.push(started.elapsed());
        }
    }
    times
}

fn main() {
    let Some(mode) = run_mode::run_mode("fleet") else {
        return;
    };
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !prerequisites_installed() {
        assert!(
            !ci,
            "the fleet bench needs haproxy and redis-server (.ci/run installs them)"
        );
        println!("SKIP fleet bench: haproxy or redis-server is not installed");
        return;
    }
    let runs = mode.pick(40, 3);
    let presence_runs = mode.pick(200, 5);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let dir = tempfile::tempdir().expect("temp dir");
        let redis_port = free_port();
        let _redis = Process(
            Command::new("redis-server")
                .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1", "--save", ""])
                .args(["--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server"),
        );
        let store = format!("redis://127.0.0.1:{redis_port}");
        let registry_port = free_port();
        let registry = format!("http://127.0.0.1:{registry_port}");
        let registry_data = dir.path().join("registry").to_string_lossy().into_owned();
        let _registry = spawn(&[
            "registry",
            "--listen",
            &format!("127.0.0.1:{registry_port}"),
            "--data-dir",
            &registry_data,
        ]);
        wait_up(&format!("{registry}/status")).await;
        let alone =
            start_aqueduct(dir.path(), "alone", Ipv4Addr::new(127, 0, 0, 4), &registry, None).await;
        let first = start_aqueduct(
            dir.path(),
            "node-1",
            Ipv4Addr::new(127, 0, 0, 2),
            &registry,
            Some(&store),
        )
        .await;
        let second = start_aqueduct(
            dir.path(),
            "node-2",
            Ipv4Addr::new(127, 0, 0, 3),
            &registry,
            Some(&store),
        )
        .await;
        let web = serde_json::json!({"type": "static", "mode": "http",
            "members": [{"host": "127.0.0.1", "port": registry_port}]});
        let presence = serde_json::json!({"type": "dynamic", "name": "presence", "version": "1",
            "mode": "http", "health": {"interval": 1000}});
        for api in [&alone.api, &first.api] {
            put(api, "/backends/web", web.clone()).await;
            put(api, "/backends/presence", presence.clone()).await;
        }
        // Node 2 has both backends before anything is measured.
        let probe = free_port();
        put(
            &first.api,
            "/frontends/probe?wait=fleet",
            serde_json::json!({"bind": format!("*:{probe}"), "backend": "web"}),
        )
        .await;
        until_listening(second.address, probe, Instant::now()).await;

        println!("fleet bench ({mode:?}): 2 fleet nodes on one redis-server, 1 aqueduct alone");
        let (alone_p50, alone_p99) =
            line("change -> live, aqueduct alone", change_to_live(&alone, &alone, runs).await);
        let (here_p50, here_p99) = line(
            "change on node 1 -> live on node 1",
            change_to_live(&first, &first, runs).await,
        );
        let (there_p50, there_p99) = line(
            "change on node 1 -> live on node 2's HAProxy",
            change_to_live(&first, &second, runs).await,
        );
        println!(
            "ratios to the lone aqueduct: node 1 x{:.2} / x{:.2}, node 2 x{:.2} / x{:.2} (p50 / p99)",
            here_p50 / alone_p50,
            here_p99 / alone_p99,
            there_p50 / alone_p50,
            there_p99 / alone_p99
        );
        let (_, both_p99) = line(
            "registration -> present on both fleet HAProxies",
            membership_to_both(&registry, &[&first, &second], presence_runs).await,
        );
        println!(
            "membership target p99 < 10 ms: {}",
            if both_p99 < 10.0 { "met" } else { "NOT met" }
        );
    });
}
