//! Registry benchmark (`cargo bench --bench registry`): runs the real `thalassa registry`
//! binary twice in one invocation, first on its embedded store (one node), then as a cluster
//! of two nodes on one real `redis-server` (`--store`), and prints each measurement for both
//! with the cluster/embedded ratio:
//!
//! - heartbeats/s and latency from 64 concurrent keep-alive connections (spread over the
//!   nodes), saturated (each connection sends its next heartbeat as soon as the previous one
//!   is answered) and paced at the 40,000/s target;
//! - expiry lateness with 10,000 deadlines at the same instant (the embedded node starts from
//!   a snapshot file holding them; the cluster's are set in Redis), from a follower's
//!   `GET /events`;
//! - registration POSTed on node A -> server present in HAProxy through an aqueduct following
//!   node B (one node for the embedded run), when HAProxy is installed;
//! - memory with 100,000 registrations: node RSS, and Redis' `used_memory`.
//!
//! Targets (2 cores, load generator, Redis and nodes sharing them): >= 40,000 heartbeats/s
//! with p99 < 10 ms on the cluster, registration -> present p99 < 10 ms.
//!
//! The client is a minimal hand-written HTTP/1.1 client on a single-threaded runtime, so that
//! as much of the machine as possible goes to the servers being measured.

#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches start the real programs they measure"
)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[path = "common/admin_socket.rs"]
mod admin_socket;
#[path = "common/http.rs"]
mod http;
#[path = "common/process.rs"]
mod process;
#[path = "common/run_mode.rs"]
mod run_mode;

use http::{Connection, get_request, post_request, request, wait_until_up};
use process::{Process, free_port};

const CONNECTIONS: usize = 64;
/// The target rate: the paced phase offers exactly this load and measures latency under it.
const TARGET_RATE: f64 = 40_000.0;
const BIN: &str = env!("CARGO_BIN_EXE_thalassa");

/// How long each phase lasts and how many registrations are used: the full run's, or a
/// smoke run's few seconds.
#[derive(Clone, Copy)]
struct Plan {
    warmup: Duration,
    measure: Duration,
    loaded: usize,
    simultaneous: usize,
    presence_runs: usize,
}

impl Plan {
    fn of(mode: run_mode::RunMode) -> Plan {
        Plan {
            warmup: mode.pick(Duration::from_secs(1), Duration::from_millis(200)),
            measure: mode.pick(Duration::from_secs(5), Duration::from_millis(500)),
            loaded: mode.pick(100_000, 2_000),
            simultaneous: mode.pick(10_000, 500),
            presence_runs: mode.pick(200, 5),
        }
    }

    /// Room for every registration the run makes: the bench measures the load, not the
    /// `--max-registrations` refusal.
    fn max_registrations(&self) -> usize {
        self.loaded + self.simultaneous + self.presence_runs + CONNECTIONS + 100
    }
}

/// `thalassa registry` on a free port with `data_dir`, plus `extra` flags.
fn start_node(plan: Plan, data_dir: &Path, extra: &[&str]) -> (Process, u16) {
    let port = free_port();
    let child = Command::new(BIN)
        .args(["registry", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--max-registrations", &plan.max_registrations().to_string()])
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .env("THALASSA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start thalassa registry");
    (Process(child), port)
}

/// A `redis-server` on a free port (no persistence: the bench measures the registry).
fn start_redis(dir: &Path) -> (Process, u16) {
    let port = free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--protected-mode", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server (apt-get install redis-server)");
    (Process(child), port)
}

async fn redis_connection(port: u16) -> redis::aio::MultiplexedConnection {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("redis url");
        match client.get_multiplexed_async_connection().await {
            Ok(mut connection) => {
                let pong: redis::RedisResult<String> =
                    redis::cmd("PING").query_async(&mut connection).await;
                if pong.is_ok() {
                    return connection;
                }
            }
            Err(err) if Instant::now() > deadline => panic!("redis did not come up: {err}"),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Heartbeats one registration as fast as the server answers until `until`; returns the
/// latencies (µs) of requests started after `measure_from`.
async fn heartbeat_loop(
    port: u16,
    index: usize,
    measure_from: Instant,
    until: Instant,
) -> Vec<u32> {
    let mut conn = Connection::open(port).await.expect("connect");
    let request = post_request(
        &format!("/registrations/bench/1.0.0/127.0.0.1/{}", 10_000 + index),
        r#"{"secondsToExpire":60}"#,
    );
    let mut latencies = Vec::with_capacity(64 * 1024);
    loop {
        let started = Instant::now();
        if started >= until {
            return latencies;
        }
        let (status, _) = conn.exchange(&request).await.expect("heartbeat");
        assert_eq!(status, 200, "heartbeat refused");
        if started >= measure_from {
            latencies.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
        }
    }
}

/// Heartbeats one registration at a fixed pace (one every `period`, starting at `first`) until
/// `until`; returns the latencies (µs) of requests started after `measure_from`.
async fn paced_loop(
    port: u16,
    index: usize,
    first: tokio::time::Instant,
    period: Duration,
    measure_from: Instant,
    until: Instant,
) -> Vec<u32> {
    let mut conn = Connection::open(port).await.expect("connect");
    let request = post_request(
        &format!("/registrations/bench/1.0.0/127.0.0.1/{}", 10_000 + index),
        r#"{"secondsToExpire":60}"#,
    );
    let mut latencies = Vec::with_capacity(8 * 1024);
    let mut next = first;
    loop {
        tokio::time::sleep_until(next).await;
        next += period;
        let started = Instant::now();
        if started >= until {
            return latencies;
        }
        let (status, _) = conn.exchange(&request).await.expect("heartbeat");
        assert_eq!(status, 200, "heartbeat refused");
        if started >= measure_from {
            latencies.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
        }
    }
}

/// Latency samples (µs) and the window they were taken in.
struct Latencies {
    sorted: Vec<u32>,
    window: Duration,
}

impl Latencies {
    fn new(mut samples: Vec<u32>, window: Duration) -> Latencies {
        samples.sort_unstable();
        Latencies {
            sorted: samples,
            window,
        }
    }

    fn rate(&self) -> f64 {
        self.sorted.len() as f64 / self.window.as_secs_f64()
    }

    fn ms(&self, p: f64) -> f64 {
        percentile(&self.sorted, p) as f64 / 1000.0
    }

    fn max_ms(&self) -> f64 {
        self.sorted.last().copied().unwrap_or(0) as f64 / 1000.0
    }

    fn line(&self, label: &str) -> String {
        format!(
            "{label}: {:.0} heartbeats/s, latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            self.rate(),
            self.ms(50.0),
            self.ms(99.0),
            self.ms(99.9),
            self.max_ms(),
        )
    }
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Offers exactly [`TARGET_RATE`] (spread evenly over the connections, and the connections
/// over `ports`) and reports the latency at that load.
async fn paced(ports: &[u16], plan: Plan) -> Latencies {
    let period = Duration::from_secs_f64(CONNECTIONS as f64 / TARGET_RATE);
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let measure_from = Instant::now() + Duration::from_millis(50) + plan.warmup;
    let until = measure_from + plan.measure;
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            // Stagger the connections across one period so the load is smooth.
            let first = start + period.mul_f64(i as f64 / CONNECTIONS as f64);
            let port = ports[i % ports.len()];
            tokio::spawn(paced_loop(port, i, first, period, measure_from, until))
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("paced task"));
    }
    Latencies::new(all, plan.measure)
}

/// Saturated heartbeats from every connection; prints the CPU cost per heartbeat of each
/// process in `pids` (nodes, and Redis when there is one).
async fn saturated(ports: &[u16], pids: &[(&str, u32)], plan: Plan) -> Latencies {
    let measure_from = Instant::now() + plan.warmup;
    let cpu_before: Vec<Duration> = pids
        .iter()
        .map(|(_, pid)| cpu_time(&pid.to_string()))
        .collect();
    let client_before = cpu_time("self");
    let until = measure_from + plan.measure;
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            tokio::spawn(heartbeat_loop(
                ports[i % ports.len()],
                i,
                measure_from,
                until,
            ))
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("heartbeat task"));
    }
    // CPU cost per request (warm-up included on both sides, so this slightly overstates it):
    // independent of what else the machine is running, unlike the rate.
    let requests =
        all.len().max(1) as f64 * (1.0 + plan.warmup.as_secs_f64() / plan.measure.as_secs_f64());
    let mut costs: Vec<String> = pids
        .iter()
        .zip(cpu_before)
        .map(|((name, pid), before)| {
            let used = cpu_time(&pid.to_string()).saturating_sub(before);
            format!("{name} {:.1} µs", used.as_secs_f64() * 1e6 / requests)
        })
        .collect();
    costs.push(format!(
        "bench client {:.1} µs",
        cpu_time("self").saturating_sub(client_before).as_secs_f64() * 1e6 / requests
    ));
    println!("  cpu per heartbeat: {}", costs.join(", "));
    Latencies::new(all, plan.measure)
}

/// Registers `total` registrations of `name` (lease `secs`) through `ports` in parallel.
async fn load(ports: &[u16], name: &str, total: usize, secs: u64) -> Duration {
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|worker| {
            let port = ports[worker % ports.len()];
            let name = name.to_owned();
            tokio::spawn(async move {
                let mut conn = Connection::open(port).await.expect("connect");
                let body = format!(r#"{{"secondsToExpire":{secs}}}"#);
                let mut n = worker;
                while n < total {
                    let (status, _) = conn
                        .exchange(&post_request(&registration_path(&name, n), &body))
                        .await
                        .expect("register");
                    assert_eq!(status, 200);
                    n += CONNECTIONS;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("load task");
    }
    started.elapsed()
}

/// The `n`th registration of `name`: distinct ids, the host changing every 50,000 ports.
fn registration_path(name: &str, n: usize) -> String {
    format!(
        "/registrations/{name}/1.0.0/10.1.{}.1/{}",
        n / 50_000,
        1 + n % 50_000
    )
}

fn registration_id(name: &str, n: usize) -> String {
    format!("/{name}/1.0.0/10.1.{}.1/{}", n / 50_000, 1 + n % 50_000)
}

/// Follows `GET /events` on `port` and records each `offline` event for `name` as it arrives:
/// (arrival, event id), arrival in epoch ms; until `count` arrived or `limit` passed.
async fn offline_arrivals(port: u16, name: &str, count: usize, limit: Duration) -> Vec<(u64, u64)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream
        .write_all(&get_request("/events"))
        .await
        .expect("GET /events");
    let mut lines = BufReader::new(stream).lines();
    let needle = format!("\"id\":\"/{name}/");
    let mut arrivals = Vec::with_capacity(count);
    let (mut offline, mut id) = (false, 0u64);
    let deadline = tokio::time::Instant::now() + limit;
    while arrivals.len() < count {
        let line = match tokio::time::timeout_at(deadline, lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            _ => break,
        };
        if let Some(value) = line.strip_prefix("id:") {
            id = value.trim().parse().unwrap_or(0);
        } else if line.starts_with("event:") {
            offline = line.contains("offline");
        } else if offline && line.starts_with("data:") && line.contains(&needle) {
            arrivals.push((now_ms(), id));
        }
    }
    arrivals
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Lateness of each time after `deadline`, sorted, in µs (the unit of [`percentile`]).
fn lateness(times: impl Iterator<Item = u64>, deadline: u64) -> Vec<u32> {
    let mut late: Vec<u32> = times
        .map(|at| (at.saturating_sub(deadline) * 1000).min(u32::MAX as u64) as u32)
        .collect();
    late.sort_unstable();
    late
}

/// A snapshot file holding `count` registrations of `name` that all expire at `deadline`.
fn write_snapshot(dir: &Path, name: &str, count: usize, deadline: u64) {
    use std::fmt::Write as _;
    let mut text =
        String::from(r#"{"version":1,"seq":1,"clean":true,"savedAt":0,"registrations":["#);
    for n in 0..count {
        if n > 0 {
            text.push(',');
        }
        let _ = write!(
            text,
            r#"{{"expiresAt":{deadline},"registration":{{"name":"{name}","version":"1.0.0","host":"10.1.{}.1","port":{},"lastKnown":{},"meta":{{}},"id":"{}"}}}}"#,
            n / 50_000,
            1 + n % 50_000,
            deadline.saturating_sub(600_000),
            registration_id(name, n)
        );
    }
    text.push_str("]}");
    std::fs::create_dir_all(dir).expect("data dir");
    std::fs::write(dir.join("registrations.json"), text).expect("write the snapshot");
}

/// CPU time (user + system) consumed so far by process `pid` (`"self"` for this one).
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Linux reports clock ticks of 1/100 s (USER_HZ) on every common configuration.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb as f64 * 1024.0 / 1e6)
        .unwrap_or(0.0)
}

async fn live_registrations(port: u16) -> String {
    let mut conn = Connection::open(port).await.expect("connect");
    let (_, body) = conn
        .exchange(&get_request("/metrics"))
        .await
        .expect("metrics");
    String::from_utf8_lossy(&body)
        .lines()
        .find(|l| l.starts_with("thalassa_registry_registrations "))
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("?")
        .to_owned()
}

/// An aqueduct (with its HAProxy) following `registry`, a frontend and a dynamic backend
/// `presence@1`; returns it, its data dir and the admin socket.
async fn start_aqueduct(registry: &str, dir: &Path) -> (Process, std::path::PathBuf) {
    let api_port = free_port();
    let child = Command::new(BIN)
        .args(["aqueduct", "--listen", &format!("127.0.0.1:{api_port}")])
        .args(["--registry", registry, "--stop-haproxy"])
        .arg("--data-dir")
        .arg(dir)
        .env("THALASSA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start thalassa aqueduct");
    let aqueduct = Process(child);
    wait_until_up(api_port, "/frontends").await;
    let mut conn = Connection::open(api_port).await.expect("connect");
    let frontend = format!(
        r#"{{"bind":"127.0.0.1:{}","backend":"presence","mode":"http"}}"#,
        free_port()
    );
    for (path, body) in [
        ("/frontends/presence", frontend.as_str()),
        (
            "/backends/presence",
            r#"{"type":"dynamic","name":"presence","version":"1","mode":"http","health":{"interval":1000}}"#,
        ),
    ] {
        let (status, body) = conn
            .exchange(&request("PUT", path, body))
            .await
            .expect("PUT");
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    }
    (aqueduct, dir.join("haproxy").join("admin.sock"))
}

/// POST on `post_port` -> the server is in HAProxy (polled back to back on the admin socket).
async fn presence(post_port: u16, admin: &Path, runs: usize) -> Vec<u32> {
    let mut conn = Connection::open(post_port).await.expect("connect");
    let mut samples = Vec::with_capacity(runs);
    for run in 0..runs + 3 {
        let port = 40_000 + run;
        let path = format!("/registrations/presence/1/127.0.0.1/{port}");
        let server = format!("presence_127.0.0.1:{port}");
        let started = Instant::now();
        let (status, _) = conn
            .exchange(&post_request(&path, r#"{"secondsToExpire":600}"#))
            .await
            .expect("POST");
        assert_eq!(status, 200);
        while !admin_socket::present(admin, "presence", &server).await {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{server} never appeared"
            );
        }
        // The first few warm the path up.
        if run >= 3 {
            samples.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
        }
    }
    samples.sort_unstable();
    samples
}

/// One line of the comparison: label, how to read it from a run, unit.
type Row = (&'static str, fn(&Measured) -> f64, &'static str);

/// What one run measured.
struct Measured {
    saturated: Latencies,
    paced: Latencies,
    /// When the follower received each expiry.
    expiry_late: Vec<u32>,
    /// When each expiry happened (the cluster's event ids are the store's write time; the
    /// embedded store delivers in-process, so there it is the arrival).
    expired_late: Vec<u32>,
    presence: Option<Vec<u32>>,
    node_rss_mb: Vec<f64>,
    redis_mb: Option<f64>,
}

fn ratio(cluster: f64, embedded: f64) -> String {
    if embedded > 0.0 {
        format!("{:.2}x", cluster / embedded)
    } else {
        "-".to_owned()
    }
}

fn main() {
    let Some(mode) = run_mode::run_mode("registry") else {
        return;
    };
    let plan = Plan::of(mode);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let with_haproxy = process::haproxy_runs();
    if !with_haproxy {
        println!("haproxy not found: registration -> present is not measured");
    }
    let embedded = runtime.block_on(embedded_run(plan, with_haproxy));
    let cluster = runtime.block_on(cluster_run(plan, with_haproxy));
    println!();
    println!(
        "{:<58} {:>14} {:>14} {:>8}",
        "", "embedded", "cluster (2+1)", "ratio"
    );
    let row = |what: &str, e: f64, c: f64, unit: &str| {
        println!(
            "{what:<58} {:>11.2} {unit:<2} {:>11.2} {unit:<2} {:>8}",
            e,
            c,
            ratio(c, e)
        );
    };
    let rows: [Row; 5] = [
        ("saturated heartbeats/s", |m| m.saturated.rate(), "/s"),
        ("saturated latency p99", |m| m.saturated.ms(99.0), "ms"),
        ("paced 40k/s: heartbeats/s", |m| m.paced.rate(), "/s"),
        ("paced 40k/s: latency p50", |m| m.paced.ms(50.0), "ms"),
        ("paced 40k/s: latency p99", |m| m.paced.ms(99.0), "ms"),
    ];
    for (what, value, unit) in rows {
        row(what, value(&embedded), value(&cluster), unit);
    }
    let late = |v: &[u32], p: f64| percentile(v, p) as f64 / 1000.0;
    let n = plan.simultaneous;
    row(
        &format!("expiry lateness p50 ({n} simultaneous), expired"),
        late(&embedded.expired_late, 50.0),
        late(&cluster.expired_late, 50.0),
        "ms",
    );
    row(
        &format!("expiry lateness p99 ({n} simultaneous), expired"),
        late(&embedded.expired_late, 99.0),
        late(&cluster.expired_late, 99.0),
        "ms",
    );
    row(
        &format!("expiry lateness p99 ({n} simultaneous), at a follower"),
        late(&embedded.expiry_late, 99.0),
        late(&cluster.expiry_late, 99.0),
        "ms",
    );
    if let (Some(e), Some(c)) = (&embedded.presence, &cluster.presence) {
        row(
            "registration -> present in haproxy p50",
            late(e, 50.0),
            late(c, 50.0),
            "ms",
        );
        row(
            "registration -> present in haproxy p99",
            late(e, 99.0),
            late(c, 99.0),
            "ms",
        );
    }
    let total = |v: &[f64]| v.iter().sum::<f64>();
    row(
        &format!("rss of the registry node(s), {} registrations", plan.loaded),
        total(&embedded.node_rss_mb),
        total(&cluster.node_rss_mb),
        "MB",
    );
    println!(
        "redis used_memory with {} registrations: {:.1} MB (cluster nodes: {})",
        plan.loaded,
        cluster.redis_mb.unwrap_or(0.0),
        cluster
            .node_rss_mb
            .iter()
            .map(|mb| format!("{mb:.1} MB"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

async fn embedded_run(plan: Plan, with_haproxy: bool) -> Measured {
    println!("== embedded store, one node ==");
    let temp = tempfile::tempdir().expect("temp dir");
    // The simultaneous deadlines come with the snapshot the node starts from.
    let deadline = now_ms() + 4_000;
    write_snapshot(
        &temp.path().join("node"),
        "late",
        plan.simultaneous,
        deadline,
    );
    let (node, port) = start_node(plan, &temp.path().join("node"), &[]);
    wait_until_up(port, "/status").await;
    let arrivals = offline_arrivals(port, "late", plan.simultaneous, Duration::from_secs(30)).await;
    assert_eq!(
        arrivals.len(),
        plan.simultaneous,
        "every simultaneous deadline expired"
    );
    let expiry_late = lateness(arrivals.iter().map(|(at, _)| *at), deadline);
    let expired_late = expiry_late.clone();
    let saturated = saturated(&[port], &[("registry", node.pid())], plan).await;
    println!("{}", saturated.line("saturated (64 connections, no pause)"));
    let paced = paced(&[port], plan).await;
    println!(
        "{}",
        paced.line(&format!("paced at {TARGET_RATE:.0}/s offered"))
    );
    let presence = if with_haproxy {
        let (_aqueduct, admin) = start_aqueduct(
            &format!("http://127.0.0.1:{port}"),
            &temp.path().join("aqueduct"),
        )
        .await;
        Some(presence(port, &admin, plan.presence_runs).await)
    } else {
        None
    };
    let took = load(&[port], "load", plan.loaded, 300).await;
    println!(
        "loaded {} registrations in {:.2} s ({:.0}/s)",
        plan.loaded,
        took.as_secs_f64(),
        plan.loaded as f64 / took.as_secs_f64()
    );
    // Let a snapshot write or two happen: the measurement includes the persistence cost.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let rss = rss_mb(node.pid());
    println!(
        "memory: {} live registrations, registry rss {rss:.1} MB",
        live_registrations(port).await
    );
    Measured {
        saturated,
        paced,
        expiry_late,
        expired_late,
        presence,
        node_rss_mb: vec![rss],
        redis_mb: None,
    }
}

async fn cluster_run(plan: Plan, with_haproxy: bool) -> Measured {
    println!("== cluster: two nodes on one redis-server ==");
    let temp = tempfile::tempdir().expect("temp dir");
    let (redis_process, redis_port) = start_redis(temp.path());
    let mut redis = redis_connection(redis_port).await;
    let store = format!("redis://127.0.0.1:{redis_port}");
    let (node_a, port_a) = start_node(plan, &temp.path().join("a"), &["--store", &store]);
    let (node_b, port_b) = start_node(plan, &temp.path().join("b"), &["--store", &store]);
    wait_until_up(port_a, "/status").await;
    wait_until_up(port_b, "/status").await;
    // Simultaneous deadlines: registered with a long lease, then all set to one instant.
    load(&[port_a, port_b], "late", plan.simultaneous, 600).await;
    let (secs, micros): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut redis)
        .await
        .expect("TIME");
    let deadline = secs * 1000 + micros / 1000 + 3_000;
    for chunk in (0..plan.simultaneous).collect::<Vec<_>>().chunks(1000) {
        let mut zadd = redis::cmd("ZADD");
        zadd.arg("{thalassa}:dl").arg("XX");
        for n in chunk {
            zadd.arg(deadline).arg(registration_id("late", *n));
        }
        let _: u64 = zadd.query_async(&mut redis).await.expect("ZADD");
    }
    let arrivals =
        offline_arrivals(port_b, "late", plan.simultaneous, Duration::from_secs(30)).await;
    assert_eq!(
        arrivals.len(),
        plan.simultaneous,
        "every simultaneous deadline expired"
    );
    let expiry_late = lateness(arrivals.iter().map(|(at, _)| *at), deadline);
    let expired_late = lateness(arrivals.iter().map(|(_, id)| id >> 20), deadline);
    let pids = [
        ("node a", node_a.pid()),
        ("node b", node_b.pid()),
        ("redis", redis_process.pid()),
    ];
    let saturated = saturated(&[port_a, port_b], &pids, plan).await;
    println!(
        "{}",
        saturated.line("saturated (64 connections over 2 nodes, no pause)")
    );
    let paced = paced(&[port_a, port_b], plan).await;
    println!(
        "{}",
        paced.line(&format!("paced at {TARGET_RATE:.0}/s offered over 2 nodes"))
    );
    let presence = if with_haproxy {
        let (_aqueduct, admin) = start_aqueduct(
            &format!("http://127.0.0.1:{port_b}"),
            &temp.path().join("aqueduct"),
        )
        .await;
        Some(presence(port_a, &admin, plan.presence_runs).await)
    } else {
        None
    };
    let took = load(&[port_a, port_b], "load", plan.loaded, 300).await;
    println!(
        "loaded {} registrations in {:.2} s ({:.0}/s)",
        plan.loaded,
        took.as_secs_f64(),
        plan.loaded as f64 / took.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut redis)
        .await
        .expect("INFO");
    let used = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|bytes| bytes / 1e6);
    let rss = vec![rss_mb(node_a.pid()), rss_mb(node_b.pid())];
    println!(
        "memory: {} live registrations, node rss {:.1} MB and {:.1} MB, redis used_memory {:.1} MB",
        live_registrations(port_a).await,
        rss[0],
        rss[1],
        used.unwrap_or(0.0)
    );
    drop((node_a, node_b));
    drop(redis_process);
    Measured {
        saturated,
        paced,
        expiry_late,
        expired_late,
        presence,
        node_rss_mb: rss,
        redis_mb: used,
    }
}
