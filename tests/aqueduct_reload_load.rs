//! Structural changes under continuous keep-alive load drop no request: 50 keep-alive
//! connections loop through a frontend while 20 changes go through the apply pipeline, each
//! answered only once its reload is verified by the real supervisor (master-worker `-W -S`,
//! master CLI reload, `show proc` check). The rendered config
//! carries `option idle-close-on-response` and `hard-stop-after`, which is what makes this hold.

#![allow(clippy::unwrap_used)] // Test code: a panic here is a test failure.

mod aqueduct_support;

use aqueduct_support::haproxy_bin;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use thalassa::aqueduct::controller::{Change, Controller, ControllerOptions};
use thalassa::aqueduct::{state_file, validate};
use thalassa::config::Config;
use thalassa::haproxy::render::{RenderMembers, RenderSettings, render};
use thalassa::haproxy::supervisor::{LogLevel, Supervisor, SupervisorSettings};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const CONNECTIONS: usize = 50;
const CHANGES: usize = 20;

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    /// Responses that asked to close: the graceful hand-over to the new worker.
    closed_gracefully: AtomicU64,
}

/// One keep-alive client: sends requests back to back on one connection and reconnects
/// only when a response said `Connection: close`. A request written without a complete
/// `200` back is a failure (what wrk counts as a read error).
async fn client(port: u16, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let mut connection: Option<BufReader<TcpStream>> = None;
    while !stop.load(Ordering::Relaxed) {
        let stream = match connection.as_mut() {
            Some(stream) => stream,
            None => match TcpStream::connect(("127.0.0.1", port)).await {
                Ok(stream) => connection.insert(BufReader::new(stream)),
                Err(_) => {
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            },
        };
        match exchange(stream).await {
            Ok(keep_alive) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
                if !keep_alive {
                    tally.closed_gracefully.fetch_add(1, Ordering::Relaxed);
                    connection = None;
                }
            }
            Err(_) => {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                connection = None;
            }
        }
    }
}

/// One request and its response; `Ok(false)` when the server asked to close.
async fn exchange(stream: &mut BufReader<TcpStream>) -> std::io::Result<bool> {
    let bad = |what: &str| std::io::Error::other(what.to_owned());
    stream
        .get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: load\r\n\r\n")
        .await?;
    let mut status = String::new();
    if stream.read_line(&mut status).await? == 0 || !status.starts_with("HTTP/1.1 200") {
        return Err(bad("no 200 status line"));
    }
    let (mut length, mut keep_alive) = (None, true);
    loop {
        let mut header = String::new();
        if stream.read_line(&mut header).await? == 0 {
            return Err(bad("eof in headers"));
        }
        let header = header.trim_end().to_ascii_lowercase();
        if header.is_empty() {
            break;
        }
        if let Some(value) = header.strip_prefix("content-length:") {
            length = value.trim().parse::<usize>().ok();
        }
        if header == "connection: close" {
            keep_alive = false;
        }
    }
    let mut body = vec![0; length.ok_or_else(|| bad("no content-length"))?];
    stream.read_exact(&mut body).await?;
    Ok(keep_alive)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_structural_changes_under_keep_alive_load_fail_no_request() {
    let Some(bin) = haproxy_bin() else { return };
    let origin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin_addr = origin.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(origin, axum::Router::new().fallback(|| async { "ok" })).await
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let mut config = Config::default();
    let frontend = json!({"bind": format!("127.0.0.1:{port}"), "backend":"site"});
    config
        .frontends
        .insert("web".into(), validate::frontend("web", &frontend).unwrap());
    let site = |generation: usize| {
        json!({"type":"static","natives":[format!("http-response set-header X-Generation {generation}")],
            "members":[{"host": origin_addr.ip().to_string(), "port": origin_addr.port()}]})
    };
    config
        .backends
        .insert("site".into(), validate::backend("site", &site(0)).unwrap());

    let dir = tempfile::tempdir().unwrap();
    let supervisor_settings = SupervisorSettings::new(bin, dir.path().join("haproxy"));
    let render_settings = RenderSettings::new(
        supervisor_settings.admin_socket_path(),
        supervisor_settings.server_state_path(),
    );
    let initial = render(&config, &RenderMembers::new(), &render_settings);
    let haproxy = Arc::new(
        Supervisor::start(supervisor_settings, &initial)
            .await
            .unwrap(),
    );
    let options = ControllerOptions {
        state_file: state_file::path_in(dir.path()),
        render: render_settings,
    };
    let controller = Controller::start(haproxy.clone(), options, config);
    controller.apply_startup().await.unwrap();

    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|_| tokio::spawn(client(port, stop.clone(), tally.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await; // warm-up, not a correctness wait

    let started = Instant::now();
    let mut reload_times = Vec::new();
    for generation in 1..=CHANGES {
        let backend = validate::backend("site", &site(generation)).unwrap();
        let change_started = Instant::now();
        controller
            .submit(Change::PutBackend(backend))
            .await
            .unwrap();
        reload_times.push(change_started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await; // pacing between changes
    }
    let changes_took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }

    reload_times.sort();
    let (ok, failed, graceful) = (
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        tally.closed_gracefully.load(Ordering::Relaxed),
    );
    println!(
        "{CHANGES} changes in {changes_took:?} under {CONNECTIONS} keep-alive connections: \
         {ok} requests ok, {failed} failed, {graceful} closed gracefully by old workers; \
         change-to-live median {:?}, max {:?}",
        reload_times[CHANGES / 2],
        reload_times[CHANGES - 1]
    );
    let metrics = controller.metrics().text();
    assert!(
        metrics.contains(&format!(
            "thalassa_haproxy_reloads_total{{outcome=\"ok\"}} {}",
            CHANGES + 1
        )),
        "{metrics}"
    );
    assert_eq!(failed, 0, "requests failed during reloads");
    assert!(ok > 1000, "the load really ran: {ok} requests");
    // HAProxy logged no alert or warning besides the normal lifecycle of old workers.
    let unexpected: Vec<String> = haproxy
        .recent_log()
        .into_iter()
        .filter(|l| matches!(l.level, LogLevel::Alert | LogLevel::Warning))
        .map(|l| l.message)
        .filter(|m| {
            let lifecycle = (m.starts_with("Proxy ") && m.contains(" stopped (cumulated conns: "))
                || (m.starts_with("Former worker (") && m.ends_with("exited with code 0 (Exit)"));
            // 3.3+ warn at every start as root (only tests start it so).
            !lifecycle && !aqueduct_support::is_root_start_warning(m)
        })
        .collect();
    assert_eq!(unexpected, Vec::<String>::new());
    haproxy.shutdown().await;
}
