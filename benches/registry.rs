//! Registry benchmark (`cargo bench --bench registry`): runs the real `thalassa registry`
//! binary, drives HTTP POST heartbeats from 64 concurrent keep-alive connections and prints
//! heartbeats/s and latency percentiles, first saturated (each connection sends its next
//! heartbeat as soon as the previous one is answered: the maximum rate, with latency that is
//! mostly queueing behind the other 63), then paced at the 40,000/s target (the latency a fleet
//! of services sees at that load); then loads 100,000 registrations and prints the registry's
//! resident memory. Targets: >= 40,000 heartbeats/s, p99 < 5 ms, < 100 MB RSS.
//!
//! The client is a minimal hand-written HTTP/1.1 client on a single-threaded runtime, so that
//! as much of the machine as possible goes to the server being measured.

#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches start the real programs they measure"
)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[path = "common/run_mode.rs"]
mod run_mode;

const CONNECTIONS: usize = 64;
/// The target rate: the paced phase offers exactly this load and measures latency under it.
const TARGET_RATE: f64 = 40_000.0;

/// How long each phase lasts and how many registrations are loaded: the full run's, or a
/// smoke run's few seconds.
#[derive(Clone, Copy)]
struct Plan {
    warmup: Duration,
    measure: Duration,
    loaded: usize,
}

impl Plan {
    fn of(mode: run_mode::RunMode) -> Plan {
        Plan {
            warmup: mode.pick(Duration::from_secs(1), Duration::from_millis(200)),
            measure: mode.pick(Duration::from_secs(5), Duration::from_millis(500)),
            loaded: mode.pick(100_000, 2_000),
        }
    }

    /// Room for the loaded registrations, the heartbeat phases' own and the registry's
    /// self-registration: the bench measures the load, not the `--max-registrations` refusal.
    fn max_registrations(&self) -> usize {
        self.loaded + CONNECTIONS + 1
    }
}

/// The registry process, killed (by PID) when dropped.
struct Server {
    child: Child,
    port: u16,
    _data_dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

fn start_server(plan: Plan) -> Server {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_thalassa"))
        .args(["registry", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--max-registrations", &plan.max_registrations().to_string()])
        .arg("--data-dir")
        .arg(data_dir.path())
        .env("THALASSA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start thalassa registry");
    Server {
        child,
        port,
        _data_dir: data_dir,
    }
}

/// One keep-alive HTTP/1.1 connection.
struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Connection {
    async fn open(port: u16) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends one request and reads the whole response; returns the status code and body.
    async fn exchange(&mut self, request: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        loop {
            if let Some(done) = complete_response(&self.buf) {
                return Ok(done);
            }
            let n = self.stream.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// Parses a buffered response once it is complete (headers plus Content-Length body).
fn complete_response(buf: &[u8]) -> Option<(u16, Vec<u8>)> {
    let header_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..header_end]).ok()?;
    let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    (buf.len() >= header_end + length)
        .then(|| (status, buf[header_end..header_end + length].to_vec()))
}

fn post_request(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn get_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").into_bytes()
}

async fn wait_until_up(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(mut conn) = Connection::open(port).await
            && let Ok((200, _)) = conn.exchange(&get_request("/status")).await
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the registry did not come up on port {port}");
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

fn report(label: &str, measure: Duration, mut all: Vec<u32>) {
    all.sort_unstable();
    println!(
        "{label}: {:.0} heartbeats/s, latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        all.len() as f64 / measure.as_secs_f64(),
        percentile(&all, 50.0) as f64 / 1000.0,
        percentile(&all, 99.0) as f64 / 1000.0,
        percentile(&all, 99.9) as f64 / 1000.0,
        all.last().copied().unwrap_or(0) as f64 / 1000.0,
    );
}

/// Offers exactly [`TARGET_RATE`] (spread evenly over the connections) and reports the latency
/// at that load, which is what a fleet of heartbeating services sees.
async fn paced(port: u16, plan: Plan) {
    let period = Duration::from_secs_f64(CONNECTIONS as f64 / TARGET_RATE);
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let measure_from = Instant::now() + Duration::from_millis(50) + plan.warmup;
    let until = measure_from + plan.measure;
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            // Stagger the connections across one period so the load is smooth.
            let first = start + period.mul_f64(i as f64 / CONNECTIONS as f64);
            tokio::spawn(paced_loop(port, i, first, period, measure_from, until))
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("paced task"));
    }
    report(
        &format!("paced at {TARGET_RATE:.0}/s offered"),
        plan.measure,
        all,
    );
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn heartbeats(port: u16, server_pid: u32, plan: Plan) {
    let measure_from = Instant::now() + plan.warmup;
    let cpu_before = (cpu_time(&server_pid.to_string()), cpu_time("self"));
    let until = measure_from + plan.measure;
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|i| tokio::spawn(heartbeat_loop(port, i, measure_from, until)))
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("heartbeat task"));
    }
    let server_cpu = cpu_time(&server_pid.to_string()).saturating_sub(cpu_before.0);
    let client_cpu = cpu_time("self").saturating_sub(cpu_before.1);
    let requests = all.len();
    report(
        &format!("saturated ({CONNECTIONS} connections, no pause)"),
        plan.measure,
        all,
    );
    // CPU cost per request (warm-up included on both sides, so this slightly overstates it):
    // independent of what else the machine is running, unlike the rate.
    println!(
        "cpu per heartbeat: registry {:.1} µs, bench client {:.1} µs",
        server_cpu.as_secs_f64() * 1e6
            / requests.max(1) as f64
            / (1.0 + plan.warmup.as_secs_f64() / plan.measure.as_secs_f64()),
        client_cpu.as_secs_f64() * 1e6
            / requests.max(1) as f64
            / (1.0 + plan.warmup.as_secs_f64() / plan.measure.as_secs_f64()),
    );
}

async fn load(port: u16, total: usize) -> Duration {
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|worker| {
            tokio::spawn(async move {
                let mut conn = Connection::open(port).await.expect("connect");
                let mut n = worker;
                while n < total {
                    // 100k distinct ids: vary the host every 50,000 ports.
                    let path = format!(
                        "/registrations/load/1.0.0/10.1.{}.1/{}",
                        n / 50_000,
                        1 + n % 50_000
                    );
                    let (status, _) = conn
                        .exchange(&post_request(&path, r#"{"secondsToExpire":300}"#))
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

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
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

fn main() {
    let Some(mode) = run_mode::run_mode("registry") else {
        return;
    };
    let plan = Plan::of(mode);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let server = start_server(plan);
    runtime.block_on(async {
        wait_until_up(server.port).await;
        println!(
            "registry: pid {}, rss at start {:.1} MB",
            server.child.id(),
            rss_bytes(server.child.id()) as f64 / 1e6
        );
        heartbeats(server.port, server.child.id(), plan).await;
        paced(server.port, plan).await;
        let took = load(server.port, plan.loaded).await;
        println!(
            "loaded {} registrations in {:.2} s ({:.0}/s)",
            plan.loaded,
            took.as_secs_f64(),
            plan.loaded as f64 / took.as_secs_f64()
        );
        // Let a snapshot write or two happen: the measurement includes the persistence cost.
        tokio::time::sleep(mode.pick(Duration::from_millis(2500), Duration::from_millis(100)))
            .await;
        println!(
            "memory: {} live registrations, registry rss {:.1} MB",
            live_registrations(server.port).await,
            rss_bytes(server.child.id()) as f64 / 1e6
        );
    });
    drop(server);
}
