//! What the UI hub costs the control plane: one stats tick (history + encoding the delta once
//! for every page), one page connecting (building the snapshot), and one config diff. Prints
//! medians; run with `cargo bench --bench ui_hub`.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use thalassa::status::{Activity, MemberSample, ProxySample, StatsSample};
use thalassa::ui::{Hub, diff};

#[path = "common/run_mode.rs"]
mod run_mode;

const BACKENDS: usize = 50;
const MEMBERS_PER_BACKEND: usize = 10;

fn sample(time_ms: u64) -> StatsSample {
    let proxy = |n: usize| ProxySample {
        status: "UP".into(),
        scur: n as u64,
        smax: 100,
        req_rate: 40,
        rate: 12,
    };
    let mut frontends = BTreeMap::new();
    let mut backends = BTreeMap::new();
    let mut members = BTreeMap::new();
    for b in 0..BACKENDS {
        let key = format!("backend-{b}");
        frontends.insert(format!("frontend-{b}"), proxy(b));
        backends.insert(key.clone(), proxy(b));
        let servers = (0..MEMBERS_PER_BACKEND)
            .map(|m| MemberSample {
                server: format!("{key}_127.0.0.1:{}", 10_000 + m),
                host: "127.0.0.1".into(),
                port: 10_000 + m as u16,
                status: "UP".into(),
                check_status: Some("L7OK".into()),
                check_duration_ms: Some(1),
                last_change_s: Some(300),
                scur: 2,
                rate: 4,
                ..MemberSample::default()
            })
            .collect();
        members.insert(key, servers);
    }
    StatsSample {
        time_ms,
        frontends,
        backends,
        members,
        ..StatsSample::default()
    }
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort_unstable();
    runs[runs.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut(usize) -> T) -> Duration {
    median(
        (0..runs)
            .map(|i| {
                let start = Instant::now();
                std::hint::black_box(f(i));
                start.elapsed()
            })
            .collect(),
    )
}

fn main() {
    let Some(mode) = run_mode::run_mode("ui_hub") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(dir.path()).unwrap();
    let samples: Vec<StatsSample> = (0..mode.pick(400, 20))
        .map(|i| sample(1_000 + i * 2_000))
        .collect();
    let tick = time(samples.len(), |i| hub.stats(samples[i].clone()));
    let delta_bytes = serde_json::to_string(&samples[0]).unwrap().len();
    println!(
        "stats tick ({BACKENDS} backends x {MEMBERS_PER_BACKEND} members, history full): \
         median {tick:?}, delta {delta_bytes} bytes"
    );

    for i in 0..200 {
        let detail = json!({"diff": "@@ -1 +1 @@\n-balance roundrobin\n+balance source\n"});
        hub.activity(Activity::now(
            "config-changed",
            format!("haproxy.cfg#{i}"),
            detail,
        ));
    }
    let snapshot = time(mode.pick(50, 2), |_| hub.snapshot_json());
    let snapshot_bytes = hub.snapshot_json().len();
    println!(
        "snapshot for a new page (150 samples of history, 200 activities): \
         median {snapshot:?}, {snapshot_bytes} bytes"
    );

    let activity = time(mode.pick(200, 5), |i| {
        hub.activity(Activity::now(
            "member-up",
            format!("m{i}"),
            json!({"check_status": "L7OK"}),
        ))
    });
    println!("activity (record + append to file + broadcast): median {activity:?}");

    let config: String = (0..2000)
        .map(|i| format!("    server s{i} 127.0.0.1:{i}\n"))
        .collect();
    let changed = config
        .replace("s100 ", "s100x ")
        .replace("s1500 ", "s1500x ")
        .replace("s1999 ", "s1999x ");
    let took = time(mode.pick(20, 2), |_| diff::unified(&config, &changed));
    println!("diff::unified, 2000-line config, 3 changed lines: median {took:?}");
}
