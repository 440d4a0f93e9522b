//! One run, start to finish: a fresh stack, the starting members (all serving before anything
//! is measured), load, a quiet window (the idle cost), the churn window, a settle period for
//! the changes still in flight, then the report.

use super::driver::{self, ChurnPlan, Registrar};
use super::load::{ConnectionKind, Load};
use super::measure_thread::MeasureThread;
use super::members::{MemberTable, now_us};
use super::observer::Observer;
use super::origins::Origins;
use super::procstat::{self, TreeSample};
use super::report::RunReport;
use super::settings::{LoadKinds, Membership, Run, Settings};
use super::stack::{Stack, StackSettings};
use super::summary::{LoadWindow, ProcWindow, Recorded, Window, summarize};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the starting members may take to all be serving.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
/// After the last change is seen in HAProxy, the control plane may still be finishing (a
/// reload is verified, counted and its old worker retired after the new one serves).
const SETTLE_TAIL: Duration = Duration::from_secs(1);

pub async fn run_one(settings: &Settings, run: &Run, binary: &Path) -> Result<RunReport, String> {
    let origins = Origins::new().map_err(|err| format!("origin port: {err}"))?;
    let table = Arc::new(Mutex::new(MemberTable::new()));
    let stack = Stack::start(StackSettings {
        binary,
        membership: run.membership,
        backends: settings.backends,
        check_inter_ms: settings.check_inter_ms,
        balance: &settings.balance,
        thalassa_log: &settings.thalassa_log,
        keep_dir: settings.keep_dirs,
    })
    .await?;
    eprintln!("[{}] stack up in {}", run.label(), stack.dir().display());
    let result = measure(settings, run, &stack, &origins, &table).await;
    if result.is_err() {
        eprintln!(
            "[{}] thalassa log tail:\n{}",
            run.label(),
            stack.log_tail(40)
        );
    }
    origins.close_all();
    stack.stop().await;
    result
}

async fn measure(
    settings: &Settings,
    run: &Run,
    stack: &Stack,
    origins: &Origins,
    table: &Arc<Mutex<MemberTable>>,
) -> Result<RunReport, String> {
    let label = run.label();
    let measure = MeasureThread::start()?;
    let stop_observer = Arc::new(AtomicBool::new(false));
    let observer_started = Instant::now();
    let observer = Observer {
        socket: stack.dir().join("data/haproxy/admin.sock"),
        interval: settings.poll_interval,
        full_interval: settings.full_poll_interval,
        table: table.clone(),
        origins: origins.clone(),
        measure: measure.handle(),
        probe_connection: match run.membership {
            Membership::Runtime => Some(thalassa::haproxy::runtime::RuntimeClient::new(
                stack.dir().join("data/haproxy/admin.sock"),
            )),
            Membership::Reload { .. } => None,
        },
    }
    .spawn(stop_observer.clone());
    let registrar = Registrar::new(
        stack.registry.clone(),
        table.clone(),
        origins.clone(),
        measure.handle(),
    )?;

    // The starting members, all serving before anything is measured.
    let started = Instant::now();
    let joins: Vec<_> = (0..settings.members)
        .filter_map(|i| registrar.join(i % settings.backends, None, true))
        .collect();
    for join in joins {
        let _ = join.await;
    }
    wait_for(STARTUP_TIMEOUT, || {
        let table = table.lock().unwrap_or_else(|p| p.into_inner());
        table
            .all()
            .filter(|(_, m)| m.initial && m.registration_acked)
            .all(|(_, m)| m.ready_at.is_some())
    })
    .await
    .map_err(|_| {
        format!("[{label}] the starting members were not all serving within {STARTUP_TIMEOUT:?}")
    })?;
    eprintln!(
        "[{label}] {} members serving after {:.1} s",
        settings.members,
        started.elapsed().as_secs_f64()
    );

    let kinds: &[ConnectionKind] = match settings.load_kinds {
        LoadKinds::KeepAlive => &[ConnectionKind::KeepAlive],
        LoadKinds::Close => &[ConnectionKind::Close],
        LoadKinds::Both => &[ConnectionKind::KeepAlive, ConnectionKind::Close],
    };
    let load = Load::start(
        &stack.frontends,
        kinds,
        settings.load_rate,
        settings.load_connections,
    );
    tokio::time::sleep(settings.warmup).await;

    // Quiet: the same stack and load without churn.
    let quiet_start = procstat::sample(stack.pid());
    let quiet_clock = Instant::now();
    tokio::time::sleep(settings.quiet).await;
    let quiet_end = procstat::sample(stack.pid());
    let quiet_seconds = quiet_clock.elapsed().as_secs_f64();

    // Churn.
    let metrics_start = stack.metrics().await?;
    let load_start = load.counts();
    let procs_start = procstat::sample(stack.pid());
    let refreshes_start = registrar.counters.refreshes.load(Ordering::Relaxed);
    let registry_errors_start = registrar.counters.registry_errors.load(Ordering::Relaxed);
    let listener_errors_start = registrar.counters.listener_errors.load(Ordering::Relaxed);
    let stop_sampler = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample_peaks(
        stack.pid(),
        procs_start.clone(),
        stop_sampler.clone(),
    ));
    load.record(true);
    let churn_start = now_us();
    eprintln!(
        "[{label}] churn: {} changes/s for {} s",
        run.rate,
        run.duration.as_secs_f64()
    );
    let plan = ChurnPlan {
        rate: run.rate,
        duration: run.duration,
        backends: settings.backends,
        expiry_share: settings.expiry_share,
        expiry_ttl: settings.expiry_ttl,
        refresh_ratio: settings.refresh_ratio,
        seed: settings.seed,
    };
    let driver_stats = driver::run(&registrar, &plan).await;
    let churn_end = now_us();

    // Settle: the changes still in flight land (or the time runs out).
    let settle_limit = match run.membership {
        Membership::Runtime => Duration::from_secs(10) + settings.expiry_ttl,
        Membership::Reload { debounce } => debounce + settings.expiry_ttl + Duration::from_secs(30),
    };
    let settled = wait_for(settle_limit, || {
        let table = table.lock().unwrap_or_else(|p| p.into_inner());
        table.pending(now_us(), churn_start) == 0
    })
    .await;
    tokio::time::sleep(SETTLE_TAIL).await;
    let end = now_us();
    load.record(false);
    let procs_end = procstat::sample(stack.pid());
    let load_end = load.counts();
    let metrics_end = stack.metrics().await?;
    stop_sampler.store(true, Ordering::Relaxed);
    let peaks = sampler.await.map_err(|err| format!("sampler: {err}"))?;
    stop_observer.store(true, Ordering::Relaxed);
    let observer_stats = observer.await.map_err(|err| format!("observer: {err}"))?;
    let observer_seconds = observer_started.elapsed().as_secs_f64();
    let latencies = load.latencies();
    let load_errors = load.errors();
    load.stop().await;
    eprintln!(
        "[{label}] settled: {} after {:.1} s",
        if settled.is_ok() {
            "yes"
        } else {
            "no (time ran out)"
        },
        (end - churn_end) as f64 / 1e6
    );

    let table = table.lock().unwrap_or_else(|p| p.into_inner());
    let mut report = summarize(Recorded {
        table: &table,
        origins,
        window: Window {
            churn_start,
            churn_end,
            end,
        },
        refreshes: registrar.counters.refreshes.load(Ordering::Relaxed) - refreshes_start,
        driver: &driver_stats,
        registry_errors: registrar.counters.registry_errors.load(Ordering::Relaxed)
            - registry_errors_start,
        listener_errors: registrar.counters.listener_errors.load(Ordering::Relaxed)
            - listener_errors_start,
        observer: &observer_stats,
        observer_interval_ms: settings.poll_interval.as_secs_f64() * 1000.0,
        observer_seconds,
        load: LoadWindow {
            start: load_start,
            end: load_end,
            latencies,
            errors: load_errors,
        },
        metrics_start: &metrics_start,
        metrics_end: &metrics_end,
        procs: ProcWindow {
            quiet_start,
            quiet_end,
            quiet_seconds,
            start: procs_start,
            end: procs_end,
            peak_thalassa_kib: peaks.thalassa_kib,
            peak_master_kib: peaks.master_kib,
            peak_workers_kib: peaks.workers_kib,
            new_workers: peaks.new_workers,
        },
    });
    report.label = label;
    report.membership = run.membership.label();
    report.rate = run.rate;
    report.duration_s = run.duration.as_secs_f64();
    report.members = settings.members;
    report.backends = settings.backends;
    report.check_inter_ms = settings.check_inter_ms;
    Ok(report)
}

#[derive(Debug, Default)]
struct Peaks {
    thalassa_kib: u64,
    master_kib: u64,
    workers_kib: u64,
    new_workers: u64,
}

/// Samples the process tree every 200 ms: peak RSS, and HAProxy workers that were not there
/// at the start (each reload starts one).
async fn sample_peaks(pid: u32, start: TreeSample, stop: Arc<AtomicBool>) -> Peaks {
    let mut peaks = Peaks::default();
    let known: BTreeSet<u32> = start.workers.iter().copied().collect();
    let mut new_workers: BTreeSet<u32> = BTreeSet::new();
    loop {
        let sample = procstat::sample(pid);
        peaks.thalassa_kib = peaks.thalassa_kib.max(sample.thalassa_rss_kib);
        peaks.master_kib = peaks.master_kib.max(sample.haproxy_master_rss_kib);
        peaks.workers_kib = peaks.workers_kib.max(sample.haproxy_workers_rss_kib);
        new_workers.extend(sample.workers.iter().filter(|w| !known.contains(w)));
        if stop.load(Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    peaks.new_workers = new_workers.len() as u64;
    peaks
}

/// Polls `done` every 10 ms until it holds or `limit` passes.
async fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> Result<(), ()> {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
