//! Soak test (opt-in, a few minutes): registration churn across several backends plus HTTP
//! load through HAProxy, sampling the resident memory and open file descriptors of the
//! `thalassa up` process and of HAProxy's master and worker, and the size of the activity log.
//! Memory and descriptors must plateau (the largest sample of the last third may exceed the
//! largest of the first third by at most 20 % plus a small slack); the activity log must stay
//! within its bound (twice its capacity in lines). Run it with
//!
//! ```text
//! cargo test --release --test soak -- --ignored --nocapture
//! ```
//!
//! `THALASSA_SOAK_SECS` sets the duration (default 180).
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

mod support;

use std::path::Path;
use std::time::{Duration, Instant};
use support::{
    Load, Origin, Stack, free_port, haproxy_masters, haproxy_workers, require_haproxy,
    wait_for_body,
};

const BACKENDS: usize = 3;
/// Members that stay registered for the whole run (so no backend is ever empty).
const STABLE_PER_BACKEND: usize = 2;
/// Members that come and go: short leases, heartbeats, deletes.
const CHURNING_PER_BACKEND: usize = 8;

/// A tiny deterministic generator (xorshift), so a run can be repeated.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One sample of what must stay bounded.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at_s: f64,
    thalassa_rss_kb: u64,
    thalassa_fds: u64,
    haproxy_rss_kb: u64,
    haproxy_fds: u64,
    activity_bytes: u64,
    activity_lines: u64,
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count() as u64)
}

fn sample(started: Instant, thalassa_pid: u32, data_dir: &Path) -> Sample {
    let run_dir = data_dir.join("haproxy");
    let haproxy: Vec<u32> = haproxy_masters(&run_dir)
        .into_iter()
        .chain(haproxy_workers(&run_dir))
        .collect();
    Sample {
        at_s: started.elapsed().as_secs_f64(),
        thalassa_rss_kb: rss_kb(thalassa_pid),
        thalassa_fds: fds(thalassa_pid),
        haproxy_rss_kb: haproxy.iter().map(|pid| rss_kb(*pid)).sum(),
        haproxy_fds: haproxy.iter().map(|pid| fds(*pid)).sum(),
        activity_bytes: std::fs::metadata(data_dir.join("activity.jsonl")).map_or(0, |m| m.len()),
        activity_lines: std::fs::read(data_dir.join("activity.jsonl")).map_or(0, |bytes| {
            bytes.iter().filter(|b| **b == b'\n').count() as u64
        }),
    }
}

/// Fails when the last third's maximum exceeds the first third's by more than 20 % + `slack`.
fn assert_plateau(samples: &[Sample], what: &str, slack: u64, value: fn(&Sample) -> u64) {
    let third = samples.len() / 3;
    let first = samples[..third].iter().map(value).max().unwrap();
    let last = samples[samples.len() - third..]
        .iter()
        .map(value)
        .max()
        .unwrap();
    println!("soak: {what}: first-third max {first}, last-third max {last}");
    assert!(
        last <= first + first / 5 + slack,
        "{what} grew: first-third max {first}, last-third max {last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak test: minutes long; run with --ignored (see the module doc)"]
async fn churn_and_load_stay_bounded() {
    if !require_haproxy() {
        return;
    }
    let duration = Duration::from_secs(
        std::env::var("THALASSA_SOAK_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(180),
    );
    let stack = Stack::start().await;
    let mut ports = Vec::new();
    let mut churning: Vec<(String, Origin)> = Vec::new();
    let mut stable = Vec::new();
    for b in 0..BACKENDS {
        let (service, port) = (format!("svc{b}"), free_port());
        let (status, body) = stack
            .put(
                &format!("/frontends/fe{b}"),
                &format!(r#"{{"bind":"127.0.0.1:{port}","backend":"be{b}","mode":"http"}}"#),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = stack
            .put(
                &format!("/backends/be{b}"),
                &format!(
                    r#"{{"type":"dynamic","name":"{service}","version":"1","health":{{"interval":200}}}}"#
                ),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        for _ in 0..STABLE_PER_BACKEND {
            let origin = Origin::start("web").await;
            stack.register_origin(&service, "1", &origin).await;
            stable.push(origin);
        }
        for _ in 0..CHURNING_PER_BACKEND {
            churning.push((service.clone(), Origin::start("web").await));
        }
        wait_for_body(port, "web").await;
        ports.push(port);
    }
    let loads: Vec<Load> = ports.iter().map(|port| Load::start(*port, 2)).collect();

    let started = Instant::now();
    let mut rng = Rng(0x5eed_cafe_f00d);
    let mut samples = vec![sample(started, stack.proc.pid(), stack.dir.path())];
    let mut next_sample = started + Duration::from_secs(5);
    let (mut posts, mut deletes) = (0u64, 0u64);
    while started.elapsed() < duration {
        // One churn step every ~20 ms: register with a 1-4 s lease (many expire), or delete.
        let (service, origin) = &churning[rng.below(churning.len() as u64) as usize];
        let path = format!("{service}/1/127.0.0.1/{}", origin.port());
        if rng.below(4) == 0 {
            stack.deregister(&path).await;
            deletes += 1;
        } else {
            let lease = 1 + rng.below(4);
            let (status, _) = stack
                .register(&path, &format!(r#"{{"secondsToExpire":{lease}}}"#))
                .await;
            assert_eq!(status, 200);
            posts += 1;
        }
        if Instant::now() >= next_sample {
            let s = sample(started, stack.proc.pid(), stack.dir.path());
            println!(
                "soak: t={:>4.0}s thalassa rss={} kB fds={} | haproxy rss={} kB fds={} | activity {} lines {} bytes",
                s.at_s,
                s.thalassa_rss_kb,
                s.thalassa_fds,
                s.haproxy_rss_kb,
                s.haproxy_fds,
                s.activity_lines,
                s.activity_bytes
            );
            samples.push(s);
            next_sample += Duration::from_secs(5);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut ok, mut failed) = (0, 0);
    for load in loads {
        let stats = load.snapshot();
        ok += stats.ok;
        failed += stats.failed;
        load.stop().await;
    }
    println!(
        "soak: {:.0} s, {posts} registrations posted, {deletes} deleted, {ok} requests ok, {failed} failed",
        started.elapsed().as_secs_f64()
    );
    assert!(samples.len() >= 6, "run at least 30 s to compare thirds");
    assert_plateau(&samples, "thalassa RSS (kB)", 8 * 1024, |s| {
        s.thalassa_rss_kb
    });
    assert_plateau(&samples, "thalassa open fds", 16, |s| s.thalassa_fds);
    assert_plateau(&samples, "haproxy RSS (kB)", 8 * 1024, |s| s.haproxy_rss_kb);
    assert_plateau(&samples, "haproxy open fds", 16, |s| s.haproxy_fds);
    // The activity log is a saw-tooth: appended to, and compacted to the newest
    // ACTIVITY_CAPACITY entries whenever it holds twice that many.
    let capacity = thalassa::ui::ACTIVITY_CAPACITY as u64;
    let most_lines = samples.iter().map(|s| s.activity_lines).max().unwrap();
    let most_bytes = samples.iter().map(|s| s.activity_bytes).max().unwrap();
    println!("soak: activity log: at most {most_lines} lines, {most_bytes} bytes");
    assert!(
        most_lines <= 2 * capacity,
        "activity log unbounded: {most_lines} lines"
    );
    assert_eq!(
        failed, 0,
        "stable members serve every request through the churn"
    );
}
