//! Live membership latency against `thalassa up` and a real HAProxy: how long a registration
//! takes to become a server in HAProxy, to serve its first request through the frontend, and a
//! deregistration to remove it, plus the reload count before and after (which must not move).
//! Prints a table and writes `target/membership-bench.json`; asserts nothing about speed.
//!
//! cargo bench --bench membership

#![allow(clippy::unwrap_used)] // bench harness: a panic is a failed run, reported as such

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "common/run_mode.rs"]
mod run_mode;

use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::{Origin, Stack, eventually, free_port, require_haproxy};
use thalassa::haproxy::runtime::RuntimeClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How many registrations each phase times: the full run's, or a smoke run's handful.
#[derive(Clone, Copy)]
struct Runs {
    /// Registrations timed in the presence phase (each is also deregistered and timed).
    presence: usize,
    /// Registrations timed to their first served request (each is also deregistered and timed).
    first_request: usize,
    /// Untimed rounds before each phase: first connections, first allocations.
    warm_up: usize,
}

impl Runs {
    fn of(mode: run_mode::RunMode) -> Runs {
        Runs {
            presence: mode.pick(200, 5),
            first_request: mode.pick(40, 3),
            warm_up: mode.pick(5, 1),
        }
    }
}
/// `health.interval` of the backend, in milliseconds: HAProxy's `inter`.
const HEALTH_INTERVAL_MS: u64 = 100;
/// Longest any single wait may take before the run is declared broken.
const DEADLINE: Duration = Duration::from_secs(10);
const BACKEND: &str = "app";

/// Latencies of one measurement, summarised by nearest-rank percentiles.
struct Samples {
    what: &'static str,
    sorted: Vec<Duration>,
}

impl Samples {
    fn new(what: &'static str, mut samples: Vec<Duration>) -> Samples {
        samples.sort();
        Samples {
            what,
            sorted: samples,
        }
    }

    fn quantile(&self, q: f64) -> Duration {
        let n = self.sorted.len();
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        self.sorted[rank - 1]
    }

    fn row(&self, target: &str) -> String {
        format!(
            "{:<46} {:>4} {:>9.3} {:>9.3} {:>9.3} {:>9.3}  {target}",
            self.what,
            self.sorted.len(),
            ms(self.sorted[0]),
            ms(self.quantile(0.5)),
            ms(self.quantile(0.99)),
            ms(self.sorted[self.sorted.len() - 1]),
        )
    }

    fn json(&self, target_p50_ms: Option<f64>, target_p99_ms: Option<f64>) -> serde_json::Value {
        json!({
            "n": self.sorted.len(),
            "min_ms": ms(self.sorted[0]),
            "p50_ms": ms(self.quantile(0.5)),
            "p99_ms": ms(self.quantile(0.99)),
            "max_ms": ms(self.sorted[self.sorted.len() - 1]),
            "target_p50_ms": target_p50_ms,
            "target_p99_ms": target_p99_ms,
        })
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The registry path segment of a member `127.0.0.1:port` of `app@1`.
fn member_path(port: u16) -> String {
    format!("{BACKEND}/1/127.0.0.1/{port}")
}

/// The HAProxy server name the membership manager gives that member.
fn server_name(port: u16) -> String {
    format!("{BACKEND}_127.0.0.1:{port}")
}

/// Is `server` in the backend right now? Errors count as "no" (the caller's deadline decides).
async fn present(runtime: &RuntimeClient, server: &str) -> bool {
    match runtime.show_servers_state(Some(BACKEND)).await {
        Ok(rows) => rows.iter().any(|row| row.server == server),
        Err(_) => false,
    }
}

/// Polls the admin socket back to back until `server`'s presence equals `wanted`; the time
/// from `started`. Panics (a broken run) after `DEADLINE`.
async fn poll_until(
    runtime: &RuntimeClient,
    server: &str,
    wanted: bool,
    started: Instant,
    stack: &Stack,
) -> Duration {
    loop {
        if present(runtime, server).await == wanted {
            return started.elapsed();
        }
        if started.elapsed() > DEADLINE {
            panic!(
                "{server} still {} after {DEADLINE:?}; log:\n{}",
                if wanted { "absent" } else { "present" },
                stack.proc.log_text()
            );
        }
    }
}

/// Registers (or deregisters) in a separate task so the poll starts at once, not after the
/// registry has answered; returns when both are done.
async fn timed_change(
    stack: &Stack,
    runtime: &RuntimeClient,
    client: &reqwest::Client,
    port: u16,
    register: bool,
) -> Duration {
    let url = format!("{}/registrations/{}", stack.registry, member_path(port));
    let request = if register {
        client.post(url).body(r#"{"secondsToExpire":600}"#)
    } else {
        client.delete(url)
    };
    let started = Instant::now();
    let answer = tokio::spawn(request.header("content-type", "application/json").send());
    let took = poll_until(runtime, &server_name(port), register, started, stack).await;
    let response = answer.await.unwrap().unwrap();
    assert_eq!(response.status(), 200, "registry refused the change");
    took
}

/// One GET through the frontend on a fresh connection (`Connection: close`); the body of a
/// `200`, or `None` for anything else (a 503 while the backend is empty, a reset).
async fn fetch_once(port: u16) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut response = Vec::with_capacity(512);
    stream.read_to_end(&mut response).await.ok()?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// Registers a fresh origin and sends requests through the frontend back to back until one is
/// answered by it; the time from the registration POST.
async fn time_to_first_request(
    stack: &Stack,
    client: &reqwest::Client,
    frontend_port: u16,
    origin: &Origin,
) -> Duration {
    let url = format!(
        "{}/registrations/{}",
        stack.registry,
        member_path(origin.port())
    );
    let request = client
        .post(url)
        .header("content-type", "application/json")
        .body(r#"{"secondsToExpire":600}"#);
    let started = Instant::now();
    let answer = tokio::spawn(request.send());
    loop {
        if fetch_once(frontend_port).await.as_deref() == Some(origin.name.as_str()) {
            let took = started.elapsed();
            assert_eq!(answer.await.unwrap().unwrap().status(), 200);
            return took;
        }
        if started.elapsed() > DEADLINE {
            panic!(
                "{} never served within {DEADLINE:?}; log:\n{}",
                origin.name,
                stack.proc.log_text()
            );
        }
    }
}

/// A stack with frontend `web` on a free port and a dynamic backend `app` following `app@1`
/// with `HEALTH_INTERVAL_MS` health checks.
async fn stack_with_app() -> (Stack, u16) {
    let stack = Stack::start().await;
    let port = free_port();
    let (status, body) = stack
        .put(
            "/frontends/web",
            &format!(r#"{{"bind":"127.0.0.1:{port}","backend":"{BACKEND}","mode":"http"}}"#),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = stack
        .put(
            &format!("/backends/{BACKEND}"),
            &format!(
                r#"{{"type":"dynamic","name":"{BACKEND}","version":"1","mode":"http","health":{{"interval":{HEALTH_INTERVAL_MS}}}}}"#
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    (stack, port)
}

/// Where the JSON goes; a smoke run writes its own file, so it never replaces a full run's.
fn output_path(mode: run_mode::RunMode) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join(mode.pick("membership-bench.json", "membership-bench-smoke.json"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(mode) = run_mode::run_mode("membership") else {
        return;
    };
    let runs = Runs::of(mode);
    if !require_haproxy() {
        return;
    }
    let (stack, frontend_port) = stack_with_app().await;
    let runtime = RuntimeClient::new(stack.admin_socket());
    // A keep-alive client, like a service heartbeating its registration.
    let client = reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .unwrap();

    // A member that serves throughout, so the frontend answers while others join and leave.
    let base = Origin::start("base").await;
    stack
        .register(&member_path(base.port()), r#"{"secondsToExpire":600}"#)
        .await;
    eventually(DEADLINE, "the base member to serve", || async {
        (fetch_once(frontend_port).await.as_deref() == Some("base")).then_some(())
    })
    .await;
    let reloads_before = stack.metric_total("thalassa_haproxy_reloads_total").await;

    // Phase 1: POST -> present in HAProxy, then DELETE -> gone (a member still joining: its
    // address answers nothing, so it never passes a check).
    let mut present_samples = Vec::with_capacity(runs.presence);
    let mut gone_joining_samples = Vec::with_capacity(runs.presence);
    for run in 0..runs.warm_up + runs.presence {
        let port = free_port();
        let joined = timed_change(&stack, &runtime, &client, port, true).await;
        let left = timed_change(&stack, &runtime, &client, port, false).await;
        if run >= runs.warm_up {
            present_samples.push(joined);
            gone_joining_samples.push(left);
        }
    }

    // Phase 2: POST -> first request answered by the new member (health-gated: added in
    // maintenance, `ready` after its first passing check), then DELETE -> gone (drained).
    let mut first_request_samples = Vec::with_capacity(runs.first_request);
    let mut gone_serving_samples = Vec::with_capacity(runs.first_request);
    for run in 0..runs.warm_up + runs.first_request {
        let origin = Origin::start(&format!("member-{run}")).await;
        let served = time_to_first_request(&stack, &client, frontend_port, &origin).await;
        let left = timed_change(&stack, &runtime, &client, origin.port(), false).await;
        if run >= runs.warm_up {
            first_request_samples.push(served);
            gone_serving_samples.push(left);
        }
    }

    let reloads_after = stack.metric_total("thalassa_haproxy_reloads_total").await;

    let present = Samples::new("registration POST -> server in haproxy", present_samples);
    let first = Samples::new(
        "registration POST -> first request served",
        first_request_samples,
    );
    let gone_joining = Samples::new(
        "deregistration -> gone (joining member)",
        gone_joining_samples,
    );
    let gone_serving = Samples::new(
        "deregistration -> gone (serving, drained)",
        gone_serving_samples,
    );

    println!(
        "Live membership through thalassa up + HAProxy (health.interval {HEALTH_INTERVAL_MS} ms, \
         {} untimed warm-up runs per phase)",
        runs.warm_up
    );
    println!(
        "{:<46} {:>4} {:>9} {:>9} {:>9} {:>9}  target",
        "ms", "n", "min", "p50", "p99", "max"
    );
    println!("{}", present.row("p50 < 2, p99 < 10"));
    println!("{}", first.row("p50 < 250 (the original: 2,070)"));
    println!("{}", gone_joining.row(""));
    println!("{}", gone_serving.row(""));
    let reloads_equal = reloads_before == reloads_after;
    println!(
        "haproxy reloads (thalassa_haproxy_reloads_total): before {reloads_before}, after \
         {reloads_after}: {}",
        if reloads_equal {
            "equal"
        } else {
            "CHANGED (membership must never reload)"
        }
    );

    let report = json!({
        "health_interval_ms": HEALTH_INTERVAL_MS,
        "warm_up_runs": runs.warm_up,
        "registration_to_present": present.json(Some(2.0), Some(10.0)),
        "registration_to_first_request": first.json(Some(250.0), None),
        "deregistration_to_gone_joining": gone_joining.json(None, None),
        "deregistration_to_gone_serving": gone_serving.json(None, None),
        "reloads": {
            "before": reloads_before,
            "after": reloads_after,
            "equal": reloads_equal,
        },
    });
    let path = output_path(mode);
    match std::fs::write(&path, format!("{report:#}\n")) {
        Ok(()) => println!("wrote {}", path.display()),
        Err(err) => eprintln!("cannot write {}: {err}", path.display()),
    }
    if !reloads_equal {
        std::process::exit(1);
    }
}
