//! Axon push socket benchmark (`cargo bench --bench axon`): the real registry binary, started
//! twice in one invocation, the baseline without `--axon-listen` and then with it and
//! subscribers reading:
//!
//! - **heartbeats/s** with keep-alive clients POSTing plain heartbeats as fast as they are
//!   answered: without the socket, and with it and 10 subscribers (every heartbeat becomes a
//!   message to each of them, as the original sent it), with the ratio;
//! - **POST -> subscriber** latency of a meta change (an event on the feed) and of a plain
//!   heartbeat (relayed from the registry's heartbeat tap), p50/p99, one at a time.

#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches start the real programs they measure"
)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

#[path = "common/http.rs"]
mod http;
#[path = "common/process.rs"]
mod process;
#[path = "common/run_mode.rs"]
mod run_mode;

use http::{Connection, post_request, wait_until_up};
use process::{Process, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_thalassa");

fn start_registry(dir: &std::path::Path, axon_port: Option<u16>) -> (Process, u16) {
    let port = free_port();
    let mut command = Command::new(BIN);
    command
        .args(["registry", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir)
        .env("THALASSA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(axon_port) = axon_port {
        command.args(["--axon-listen", &format!("127.0.0.1:{axon_port}")]);
    }
    (Process(command.spawn().expect("start thalassa")), port)
}

/// Reads whole axon messages (codec byte, 24-bit length, body) and counts them; returns the
/// count when the publisher closes.
async fn count_messages(port: u16) -> u64 {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("subscribe");
    let mut count = 0;
    let mut header = [0u8; 4];
    let mut body = Vec::new();
    while stream.read_exact(&mut header).await.is_ok() {
        let length = u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
        body.resize(length, 0);
        if stream.read_exact(&mut body).await.is_err() {
            break;
        }
        count += 1;
    }
    count
}

/// Plain heartbeats from `clients` keep-alive connections for `secs`; returns heartbeats/s.
async fn heartbeats(port: u16, clients: usize, secs: f64) -> f64 {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            tokio::spawn(async move {
                let mut conn = Connection::open(port).await.expect("connect");
                let request = post_request(
                    &format!("/registrations/bench/1.0.0/127.0.0.1/{}", 10_000 + client),
                    r#"{"secondsToExpire":60}"#,
                );
                let mut done = 0u64;
                while Instant::now() < until {
                    let (status, _) = conn.exchange(&request).await.expect("heartbeat");
                    assert_eq!(status, 200);
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("client");
    }
    total as f64 / secs
}

/// One POST at a time, each timed until the subscriber has read a message: p50 and p99 in µs.
async fn latencies(port: u16, axon_port: u16, samples: usize, change_meta: bool) -> (u64, u64) {
    let mut stream = TcpStream::connect(("127.0.0.1", axon_port))
        .await
        .expect("subscribe");
    let mut conn = Connection::open(port).await.expect("connect");
    // The subscriber is registered by the publisher shortly after the TCP handshake: warm up
    // until messages arrive.
    let path = "/registrations/latency/1.0.0/127.0.0.1/9999";
    let mut header = [0u8; 4];
    let mut body = Vec::new();
    let mut read_one = async |stream: &mut TcpStream| {
        stream.read_exact(&mut header).await.expect("header");
        let length = u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
        body.resize(length, 0);
        stream.read_exact(&mut body).await.expect("body");
    };
    loop {
        conn.exchange(&post_request(path, "{}"))
            .await
            .expect("post");
        if tokio::time::timeout(Duration::from_millis(200), read_one(&mut stream))
            .await
            .is_ok()
        {
            break;
        }
    }
    let mut micros = Vec::with_capacity(samples);
    for n in 0..samples {
        let meta = if change_meta {
            format!(r#"{{"n":{n}}}"#)
        } else {
            "{}".to_owned()
        };
        let started = Instant::now();
        conn.exchange(&post_request(path, &meta))
            .await
            .expect("post");
        read_one(&mut stream).await;
        micros.push(started.elapsed().as_micros() as u64);
    }
    micros.sort_unstable();
    let at = |q: f64| micros[((micros.len() as f64 * q) as usize).min(micros.len() - 1)];
    (at(0.50), at(0.99))
}

fn main() {
    let Some(mode) = run_mode::run_mode("axon") else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let secs = mode.pick(5.0, 0.5);
        let clients = 16;
        let subscribers = 10;
        let samples = mode.pick(2_000, 50);
        let temp = tempfile::tempdir().expect("temp dir");

        let (baseline_process, baseline_port) = start_registry(&temp.path().join("plain"), None);
        wait_until_up(baseline_port, "/status").await;
        let baseline = heartbeats(baseline_port, clients, secs).await;
        drop(baseline_process);

        let axon_port = free_port();
        let (_registry, port) = start_registry(&temp.path().join("axon"), Some(axon_port));
        wait_until_up(port, "/status").await;
        let readers: Vec<_> = (0..subscribers)
            .map(|_| tokio::spawn(count_messages(axon_port)))
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let with_axon = heartbeats(port, clients, secs).await;
        let (event_p50, event_p99) = latencies(port, axon_port, samples, true).await;
        let (beat_p50, beat_p99) = latencies(port, axon_port, samples, false).await;
        drop(_registry);
        let mut delivered = 0;
        for reader in readers {
            delivered += reader.await.expect("reader");
        }

        println!("axon push socket ({clients} heartbeat clients, {secs} s each; {subscribers} subscribers)");
        println!("  heartbeats/s, no socket (baseline)      {baseline:>10.0}");
        println!(
            "  heartbeats/s, socket + {subscribers} subscribers    {with_axon:>10.0}   ({:.2}x the baseline)",
            with_axon / baseline
        );
        println!("  messages read by the subscribers      {delivered:>10}");
        println!(
            "  POST -> subscriber, meta change       p50 {event_p50} us, p99 {event_p99} us ({samples} samples)"
        );
        println!(
            "  POST -> subscriber, plain heartbeat   p50 {beat_p50} us, p99 {beat_p99} us ({samples} samples)"
        );
        assert!(delivered > 0, "no subscriber received anything");
    });
}
