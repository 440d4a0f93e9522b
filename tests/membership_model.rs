//! A randomized, seeded, replayable model test of live membership against `thalassa up` and a
//! real HAProxy.
//!
//! Three dynamic backends (each behind its own frontend, each with another balance algorithm)
//! and one static backend are driven by generated steps of operations: register, heartbeat,
//! delete, expire, delete-and-register-again, version switch forward and back, static member
//! edit, balance change, backend delete and re-create, and `kill -9` of HAProxy's worker. The
//! members are a pool of live origins and dead ports (nothing listens there). A model says
//! what each backend's members should be; after every step the test waits for quiescence and
//! checks:
//!
//! 1. no server is admin-ready whose check never passed: a dead member never, a live one only
//!    once a look saw it pass (see `Gate`); on every look, also while waiting, and from a
//!    monitor task that looks all the time;
//! 2. HAProxy's servers of every backend, and the API's members of every dynamic backend, are
//!    the model's (live ones ready and `UP`, dead ones in maintenance);
//! 3. server ids are unique per backend (on every look);
//! 4. membership-only steps reload nothing;
//! 5. traffic through the backend that always keeps a live member (two pinned members, one per
//!    version) never fails, except in the steps that kill HAProxy's worker.
//!
//! Every look at HAProxy goes through a fresh `RuntimeClient`: a lasting connection stays with
//! the worker it first reached, and an old worker lingers after a reload.
//!
//! The seed comes from `THALASSA_MODEL_SEED` (else the clock) and is printed at the start and in
//! every failure; the op sequence depends on the seed only, so `THALASSA_MODEL_SEED=<seed>`
//! replays it (the same steps, in the same order, for as long as the run lasts).
//! `THALASSA_MODEL_SECS` sets the run length (60 s by default, start-up included; 600 s for the
//! ignored long run, which runs sequences of at most 80 steps, each on a fresh stack).
//!
//! The stack runs with `--drain-timeout 2s` (a leaver kept serving while its replacement joins
//! is held at most that long, so a switch to a version with only dead members settles within
//! the wait) and `--expiry-brake-threshold 1` (the mass-expiry brake, which holds expired
//! members on purpose, is off: the model has no brake).

#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{Load, Origin, Stack, free_port, require_haproxy, signal};
use thalassa::haproxy::runtime::RuntimeClient;
use thalassa::haproxy::stat::{AdminState, CheckFlags, CheckResult, ServerStateRow};

/// Every balance algorithm whose backends take runtime servers (`static-rr` does not).
const BALANCES: [&str; 8] = [
    "roundrobin",
    "leastconn",
    "first",
    "source",
    "uri",
    "url_param id",
    "hdr(host)",
    "random",
];
const DYNAMIC: usize = 3;
const LIVE: usize = 5;
const DEAD: usize = 3;
const ADDRS: usize = LIVE + DEAD;
const STATIC_KEY: &str = "st";
/// Backend 0 carries the traffic: these registrations (backend, version, address) are only
/// ever heartbeaten, so it has a live member under either version.
const PINNED: [Reg; 2] = [(0, 1, 0), (0, 2, 1)];
/// The longest wait for quiescence after a step.
const QUIESCE: Duration = Duration::from_secs(20);
/// Time kept free at the end of a run for the last step and the teardown.
const RESERVE: Duration = Duration::from_secs(8);
const LONG_LEASE: &str = r#"{"secondsToExpire":600}"#;
const SHORT_LEASE: &str = r#"{"secondsToExpire":1}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_model_short_run() {
    let started = Instant::now();
    if !require_haproxy() {
        return;
    }
    run(started, run_length(60), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long run (THALASSA_MODEL_SECS, default 600): cargo test --test membership_model -- --ignored"]
async fn membership_model_long_run() {
    let started = Instant::now();
    if !require_haproxy() {
        return;
    }
    run(started, run_length(600), Some(80)).await;
}

fn run_length(default_secs: u64) -> Duration {
    let secs = match std::env::var("THALASSA_MODEL_SECS") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("THALASSA_MODEL_SECS={text:?} is not a number of seconds")),
        Err(_) => default_secs,
    };
    Duration::from_secs(secs)
}

// ---------------------------------------------------------------------------------------------
// The PRNG (splitmix64) and the seed.

#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        assert!(n > 0);
        (self.next_u64() % n as u64) as usize
    }

    fn percent(&mut self, p: u64) -> bool {
        self.next_u64() % 100 < p
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }
}

fn initial_seed() -> u64 {
    match std::env::var("THALASSA_MODEL_SEED") {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => text.parse().ok(),
            };
            parsed.unwrap_or_else(|| panic!("THALASSA_MODEL_SEED={text:?} is not a u64"))
        }
        Err(_) => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            Rng(nanos ^ (u64::from(std::process::id()) << 32)).next_u64()
        }
    }
}

/// The seed of the sequence after the one seeded `seed`: replaying with it starts there.
fn next_sequence_seed(seed: u64) -> u64 {
    Rng(seed ^ 0x5EED_5EED_5EED_5EED).next_u64()
}

// ---------------------------------------------------------------------------------------------
// The model.

/// A registration: (dynamic backend index, version 1 or 2, address index). Backend `b` follows
/// service `s<b>`; addresses `0..LIVE` are live origins, the rest dead ports.
type Reg = (usize, u8, usize);

fn is_live(addr: usize) -> bool {
    addr < LIVE
}

fn addr_label(addr: usize) -> String {
    if is_live(addr) {
        format!("L{addr}")
    } else {
        format!("D{}", addr - LIVE)
    }
}

fn reg_label((b, v, a): Reg) -> String {
    format!("b{b}@{v} {}", addr_label(a))
}

#[derive(Debug, Clone)]
struct BackendModel {
    balance: &'static str,
    version: u8,
    exists: bool,
}

#[derive(Debug, Clone)]
struct Model {
    backends: Vec<BackendModel>,
    /// Registrations that are alive in the registry.
    regs: BTreeSet<Reg>,
    static_members: BTreeSet<usize>,
}

impl Model {
    /// The addresses backend `b` should have as members; `None` when it is deleted.
    fn expected(&self, b: usize) -> Option<BTreeSet<usize>> {
        let backend = &self.backends[b];
        backend.exists.then(|| {
            self.regs
                .iter()
                .filter(|(rb, rv, _)| *rb == b && *rv == backend.version)
                .map(|(_, _, a)| *a)
                .collect()
        })
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Register(reg) | Op::Heartbeat(reg) | Op::Reregister(reg) => {
                self.regs.insert(*reg);
            }
            Op::Delete(reg) | Op::Expire(reg) => {
                self.regs.remove(reg);
            }
            Op::Switch { backend, version } => self.backends[*backend].version = *version,
            Op::StaticEdit(members) => self.static_members = members.iter().copied().collect(),
            Op::Balance { backend, balance } => self.backends[*backend].balance = balance,
            Op::DeleteBackend(b) => self.backends[*b].exists = false,
            Op::CreateBackend(b) => self.backends[*b].exists = true,
            Op::KillWorker => {}
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Register(Reg),
    Heartbeat(Reg),
    Delete(Reg),
    /// Registers (again) with a 1 s lease, which then lapses.
    Expire(Reg),
    /// Delete, then register again at once.
    Reregister(Reg),
    Switch {
        backend: usize,
        version: u8,
    },
    StaticEdit(Vec<usize>),
    Balance {
        backend: usize,
        balance: &'static str,
    },
    DeleteBackend(usize),
    CreateBackend(usize),
    KillWorker,
}

const KINDS: [&str; 11] = [
    "register",
    "heartbeat",
    "delete",
    "expire",
    "re-register",
    "switch",
    "static-edit",
    "balance",
    "delete-backend",
    "create-backend",
    "kill-worker",
];

impl Op {
    fn kind(&self) -> &'static str {
        match self {
            Op::Register(_) => "register",
            Op::Heartbeat(_) => "heartbeat",
            Op::Delete(_) => "delete",
            Op::Expire(_) => "expire",
            Op::Reregister(_) => "re-register",
            Op::Switch { .. } => "switch",
            Op::StaticEdit(_) => "static-edit",
            Op::Balance { .. } => "balance",
            Op::DeleteBackend(_) => "delete-backend",
            Op::CreateBackend(_) => "create-backend",
            Op::KillWorker => "kill-worker",
        }
    }

    /// Changes only members: must not reload HAProxy.
    fn membership_only(&self) -> bool {
        !matches!(
            self,
            Op::Balance { .. } | Op::DeleteBackend(_) | Op::CreateBackend(_) | Op::KillWorker
        )
    }

    fn label(&self) -> String {
        match self {
            Op::Register(reg)
            | Op::Heartbeat(reg)
            | Op::Delete(reg)
            | Op::Expire(reg)
            | Op::Reregister(reg) => format!("{} {}", self.kind(), reg_label(*reg)),
            Op::Switch { backend, version } => format!("switch b{backend} -> {version}"),
            Op::StaticEdit(members) => {
                let labels: Vec<String> = members.iter().map(|a| addr_label(*a)).collect();
                format!("static-edit [{}]", labels.join(" "))
            }
            Op::Balance { backend, balance } => format!("balance b{backend} {balance:?}"),
            Op::DeleteBackend(b) => format!("delete-backend b{b}"),
            Op::CreateBackend(b) => format!("create-backend b{b}"),
            Op::KillWorker => "kill-worker".to_owned(),
        }
    }
}

/// One step: operations sent back to back, each after a pause (ms) drawn with it.
fn generate_step(rng: &mut Rng, model: &Model) -> Vec<(u64, Op)> {
    if rng.percent(4) {
        return vec![(0, Op::KillWorker)];
    }
    let count = match rng.below(100) {
        0..=59 => 1,
        60..=84 => 2,
        _ => 3,
    };
    let mut scratch = model.clone();
    let mut ops = Vec::new();
    for i in 0..count {
        let pause = if i == 0 { 0 } else { rng.below(250) as u64 };
        let op = generate_op(rng, &scratch);
        scratch.apply(&op);
        ops.push((pause, op));
    }
    ops
}

fn generate_op(rng: &mut Rng, m: &Model) -> Op {
    let every: Vec<Reg> = (0..DYNAMIC)
        .flat_map(|b| [1u8, 2].map(move |v| (b, v)))
        .flat_map(|(b, v)| (0..ADDRS).map(move |a| (b, v, a)))
        .collect();
    let alive: Vec<Reg> = m.regs.iter().copied().collect();
    let touchable: Vec<Reg> = alive
        .iter()
        .copied()
        .filter(|r| !PINNED.contains(r))
        .collect();
    let absent: Vec<Reg> = every
        .iter()
        .copied()
        .filter(|r| !m.regs.contains(r))
        .collect();
    let existing: Vec<usize> = (0..DYNAMIC).filter(|b| m.backends[*b].exists).collect();
    let deletable: Vec<usize> = existing.iter().copied().filter(|b| *b != 0).collect();
    let deleted: Vec<usize> = (0..DYNAMIC).filter(|b| !m.backends[*b].exists).collect();

    let mut choices: Vec<(usize, &str)> = vec![(22, "register"), (8, "static-edit")];
    if !alive.is_empty() {
        choices.push((8, "heartbeat"));
    }
    if !touchable.is_empty() {
        choices.extend([(12, "delete"), (10, "re-register"), (6, "expire")]);
    }
    if !existing.is_empty() {
        choices.extend([(10, "switch"), (4, "balance")]);
    }
    if !deletable.is_empty() {
        choices.push((3, "delete-backend"));
    }
    if !deleted.is_empty() {
        choices.push((25, "create-backend"));
    }
    let total: usize = choices.iter().map(|(w, _)| w).sum();
    let mut roll = rng.below(total);
    let kind = choices
        .iter()
        .find(|(w, _)| {
            if roll < *w {
                true
            } else {
                roll -= w;
                false
            }
        })
        .unwrap()
        .1;
    match kind {
        "register" => Op::Register(rng.pick(&absent)),
        "heartbeat" => Op::Heartbeat(rng.pick(&alive)),
        "delete" => Op::Delete(rng.pick(&touchable)),
        "re-register" => Op::Reregister(rng.pick(&touchable)),
        "expire" => {
            // Mostly a member that is there; sometimes one that only lives for its lease.
            let fresh: Vec<Reg> = absent
                .iter()
                .copied()
                .filter(|r| !PINNED.contains(r))
                .collect();
            if rng.percent(25) {
                Op::Expire(rng.pick(&fresh))
            } else {
                Op::Expire(rng.pick(&touchable))
            }
        }
        "switch" => {
            let backend = rng.pick(&existing);
            Op::Switch {
                backend,
                version: 3 - m.backends[backend].version,
            }
        }
        "balance" => {
            let backend = rng.pick(&existing);
            let others: Vec<&'static str> = BALANCES
                .iter()
                .copied()
                .filter(|b| *b != m.backends[backend].balance)
                .collect();
            Op::Balance {
                backend,
                balance: rng.pick(&others),
            }
        }
        "delete-backend" => Op::DeleteBackend(rng.pick(&deletable)),
        "create-backend" => Op::CreateBackend(rng.pick(&deleted)),
        "static-edit" => loop {
            let members = random_subset(rng, 0, 3);
            if members.iter().copied().collect::<BTreeSet<_>>() != m.static_members {
                break Op::StaticEdit(members);
            }
        },
        other => unreachable!("{other}"),
    }
}

/// Between `min` and `max` distinct addresses, sorted.
fn random_subset(rng: &mut Rng, min: usize, max: usize) -> Vec<usize> {
    let size = min + rng.below(max - min + 1);
    let mut set = BTreeSet::new();
    while set.len() < size {
        set.insert(rng.below(ADDRS));
    }
    set.into_iter().collect()
}

// ---------------------------------------------------------------------------------------------
// The world: the stack, the addresses, the load and the monitor.

/// The addresses' ports and the labels their servers go by.
#[derive(Debug, Clone)]
struct Addresses {
    ports: Vec<u16>,
}

impl Addresses {
    fn server(&self, backend_key: &str, addr: usize) -> String {
        format!("{backend_key}_127.0.0.1:{}", self.ports[addr])
    }

    fn by_port(&self, port: u16) -> Option<usize> {
        self.ports.iter().position(|p| *p == port)
    }

    /// `b1_127.0.0.1:4242` -> `D0` (or the server name itself for a stranger).
    fn label_of_server(&self, server: &str) -> String {
        server
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .and_then(|port| self.by_port(port))
            .map_or_else(|| server.to_owned(), addr_label)
    }

    fn labels(&self, addrs: &BTreeSet<usize>) -> String {
        let labels: Vec<String> = addrs.iter().map(|a| addr_label(*a)).collect();
        format!("[{}]", labels.join(" "))
    }
}

/// The server's last completed check passed. HAProxy resets `check_result` to `Unknown` when
/// it starts a check (HAProxy 2.6 `set_server_check_status(HCHK_STATUS_START)`) and keeps the
/// last `check_status` until the check completes: a check in progress after a passing one
/// still counts as passed.
fn check_passed(row: &ServerStateRow) -> bool {
    let in_progress = row.check_flags.0 & CheckFlags::IN_PROGRESS != 0;
    matches!(
        row.check_result,
        CheckResult::Passed | CheckResult::ConditionallyPassed
    ) || (in_progress && row.check_result == CheckResult::Unknown && row.check_status.passed())
}

/// Invariants 1 and 3, judged look by look. "Its check never passed" needs a server's
/// history, which one look does not show: a member that served fails a check now and then
/// (a 100 ms check times out on a busy machine) and stays ready, as it should. So:
/// - a dead member (nothing listens there: no check can ever pass) must never be ready;
/// - a live member may be ready without a passing last check only if a look saw it pass
///   since it was last seen absent from HAProxy (its current life there);
/// - server ids are unique per backend.
#[derive(Debug)]
struct Gate {
    addrs: Addresses,
    /// (backend, server) seen with a passing check, forgotten when a look finds it gone.
    passed_once: BTreeSet<(String, String)>,
}

impl Gate {
    fn new(addrs: Addresses) -> Arc<Mutex<Gate>> {
        Arc::new(Mutex::new(Gate {
            addrs,
            passed_once: BTreeSet::new(),
        }))
    }

    /// The violations in one complete look (`show servers state` of every backend), described.
    fn check(&mut self, rows: &[ServerStateRow]) -> Vec<String> {
        let present: BTreeSet<(String, String)> = rows
            .iter()
            .map(|r| (r.backend.clone(), r.server.clone()))
            .collect();
        self.passed_once.retain(|server| present.contains(server));
        let mut violations = Vec::new();
        let mut ids: BTreeMap<(&str, u32), &str> = BTreeMap::new();
        for row in rows {
            let key = (row.backend.clone(), row.server.clone());
            if check_passed(row) {
                self.passed_once.insert(key);
            } else if row.admin_state() == AdminState::Ready {
                let dead = row
                    .port
                    .and_then(|port| self.addrs.by_port(port))
                    .is_some_and(|addr| !is_live(addr));
                if dead || !self.passed_once.contains(&key) {
                    violations.push(format!(
                        "{}/{} ({}) is admin-ready without ever passing a check: check_result \
                         {:?}, check_status {:?}, check_flags {:?}, op_state {:?}, admin_flags \
                         {:?}, since {:?}",
                        row.backend,
                        row.server,
                        self.addrs.label_of_server(&row.server),
                        row.check_result,
                        row.check_status,
                        row.check_flags,
                        row.op_state,
                        row.admin_flags,
                        row.since_last_change,
                    ));
                }
            }
            if let Some(other) = ids.insert((&row.backend, row.server_id), &row.server) {
                violations.push(format!(
                    "server id {} used twice in {}: {other} and {}",
                    row.server_id, row.backend, row.server
                ));
            }
        }
        violations
    }
}

/// Looks at HAProxy all the time (a fresh client per look) and keeps what breaks invariants
/// 1 and 3, with the step it happened in.
struct Monitor {
    stop: Arc<AtomicBool>,
    looks: Arc<AtomicU64>,
    violations: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Monitor {
    fn start(socket: PathBuf, gate: Arc<Mutex<Gate>>, step: Arc<AtomicUsize>) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let looks = Arc::new(AtomicU64::new(0));
        let violations = Arc::new(Mutex::new(Vec::new()));
        let (s, l, v) = (stop.clone(), looks.clone(), violations.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::SeqCst) {
                if let Ok(rows) = RuntimeClient::new(&socket).show_servers_state(None).await {
                    l.fetch_add(1, Ordering::SeqCst);
                    let found = gate.lock().unwrap().check(&rows);
                    if !found.is_empty() {
                        let step = step.load(Ordering::SeqCst);
                        let mut all = v.lock().unwrap();
                        if all.len() < 20 {
                            all.extend(found.into_iter().map(|f| format!("step {step}: {f}")));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        });
        Monitor {
            stop,
            looks,
            violations,
            task,
        }
    }

    fn violations(&self) -> Vec<String> {
        self.violations.lock().unwrap().clone()
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        self.looks.load(Ordering::SeqCst)
    }
}

/// Prints the tail of `thalassa up`'s log when the test fails.
struct LogOnPanic(PathBuf);

impl Drop for LogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.0).unwrap_or_default();
            // HAProxy's access log lines (one per request of the load) would bury the rest.
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| !(l.contains("supervisor::log") && l.contains("\"GET ")))
                .collect();
            let tail = lines[lines.len().saturating_sub(150)..].join("\n");
            eprintln!("--- tail of {} ---\n{tail}", self.0.display());
        }
    }
}

#[derive(Debug, Default)]
struct Totals {
    sequences: usize,
    steps: usize,
    ops: BTreeMap<&'static str, usize>,
    /// Looks at HAProxy (and the API) by the steps, all checked against invariants 1 and 3.
    looks: u64,
    monitor_looks: u64,
    quiescence_checks: usize,
    reload_checks: usize,
    traffic_checks: usize,
    load_ok: u64,
    /// Failed requests inside the worker-kill steps (the only ones allowed).
    kill_window_failed: u64,
}

struct World {
    stack: Stack,
    addrs: Addresses,
    gate: Arc<Mutex<Gate>>,
    ports: Vec<u16>,
    ctx: String,
    looks: u64,
}

fn backend_body(b: usize, model: &BackendModel) -> String {
    format!(
        r#"{{"type":"dynamic","name":"s{b}","version":"{}","balance":"{}","mode":"http","health":{{"interval":100}}}}"#,
        model.version, model.balance
    )
}

fn static_body(addrs: &Addresses, members: &BTreeSet<usize>) -> String {
    let members: Vec<String> = members
        .iter()
        .map(|a| format!(r#"{{"host":"127.0.0.1","port":"{}"}}"#, addrs.ports[*a]))
        .collect();
    format!(
        r#"{{"type":"static","members":[{}],"mode":"http","health":{{"interval":100}}}}"#,
        members.join(",")
    )
}

impl World {
    fn reg_path(&self, (b, v, a): Reg) -> String {
        format!("s{b}/{v}/127.0.0.1/{}", self.addrs.ports[a])
    }

    async fn put_ok(&self, path: &str, body: &str) {
        let (status, answer) = self.stack.put(path, body).await;
        assert_eq!(status, 200, "PUT {path} {body}: {answer}; {}", self.ctx);
    }

    async fn worker_pid(&self) -> Option<u32> {
        let socket = self.stack.dir.path().join("haproxy").join("master.sock");
        let procs = thalassa::haproxy::master_cli::show_proc(&socket)
            .await
            .ok()?;
        Some(procs.current_worker()?.pid)
    }

    /// Sends one operation (the model already has it applied).
    async fn execute(&self, op: &Op, model: &Model) {
        let ctx = &self.ctx;
        match op {
            Op::Register(reg) | Op::Heartbeat(reg) => {
                let (status, body) = self.stack.register(&self.reg_path(*reg), LONG_LEASE).await;
                assert_eq!(status, 200, "{body}; {ctx}");
            }
            Op::Expire(reg) => {
                let (status, body) = self.stack.register(&self.reg_path(*reg), SHORT_LEASE).await;
                assert_eq!(status, 200, "{body}; {ctx}");
            }
            Op::Delete(reg) => {
                let (status, body) = self.stack.deregister(&self.reg_path(*reg)).await;
                assert_eq!(status, 200, "{body}; {ctx}");
            }
            Op::Reregister(reg) => {
                let path = self.reg_path(*reg);
                let (status, body) = self.stack.deregister(&path).await;
                assert_eq!(status, 200, "{body}; {ctx}");
                let (status, body) = self.stack.register(&path, LONG_LEASE).await;
                assert_eq!(status, 200, "{body}; {ctx}");
            }
            Op::Switch { backend, version } => {
                let (status, answer) = self
                    .stack
                    .aqueduct_post(
                        &format!("/backends/b{backend}"),
                        &format!(r#"{{"version":"{version}"}}"#),
                    )
                    .await;
                assert_eq!((status, answer.as_str()), (200, "200"), "{ctx}");
            }
            Op::StaticEdit(_) => {
                self.put_ok(
                    &format!("/backends/{STATIC_KEY}"),
                    &static_body(&self.addrs, &model.static_members),
                )
                .await;
            }
            Op::Balance { backend, .. } | Op::CreateBackend(backend) => {
                self.put_ok(
                    &format!("/backends/b{backend}"),
                    &backend_body(*backend, &model.backends[*backend]),
                )
                .await;
            }
            Op::DeleteBackend(b) => {
                let response = support::client()
                    .delete(format!("{}/backends/b{b}", self.stack.aqueduct))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200, "{ctx}");
            }
            Op::KillWorker => {
                let pid = self
                    .wait_for(QUIESCE, "haproxy's current worker", |w| async move {
                        w.worker_pid().await
                    })
                    .await;
                signal(pid, "KILL");
            }
        }
    }

    /// Polls `check` until it answers, up to `timeout`; panics with the context.
    async fn wait_for<'a, T, F, Fut>(&'a self, timeout: Duration, what: &str, check: F) -> T
    where
        F: Fn(&'a World) -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check(self).await {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; {}",
                self.ctx
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One look at HAProxy only (fresh client), checking invariants 1 and 3: taken the moment
    /// an operation is answered, when a server put in service too early is easiest to see.
    async fn glance(&mut self) {
        let Ok(rows) = RuntimeClient::new(self.stack.admin_socket())
            .show_servers_state(None)
            .await
        else {
            return;
        };
        self.looks += 1;
        let violations = self.gate.lock().unwrap().check(&rows);
        assert!(
            violations.is_empty(),
            "invariant broken: {}; {}",
            violations.join("; "),
            self.ctx
        );
    }

    /// One look at HAProxy (fresh client) and the API. Panics on a broken safety invariant
    /// (1, 3, a dead member called UP); `Err` says why this is not quiescence (yet).
    async fn look(&mut self, model: &Model) -> Result<(), String> {
        let rows = RuntimeClient::new(self.stack.admin_socket())
            .show_servers_state(None)
            .await
            .map_err(|e| format!("admin socket: {e}"))?;
        self.looks += 1;
        let violations = self.gate.lock().unwrap().check(&rows);
        assert!(
            violations.is_empty(),
            "invariant broken: {}; {}",
            violations.join("; "),
            self.ctx
        );
        let mut not_yet = Vec::new();
        for b in 0..DYNAMIC {
            let key = format!("b{b}");
            let expected = model.expected(b);
            self.compare_servers(
                &rows,
                &key,
                expected.clone().unwrap_or_default(),
                &mut not_yet,
            );
            let members = self
                .stack
                .get_json(&format!("/backends/{key}/members"))
                .await;
            let Some(expected) = expected else {
                if members.as_array().is_some() {
                    not_yet.push(format!("API: deleted {key} still has members {members}"));
                }
                continue;
            };
            let Some(members) = members.as_array() else {
                not_yet.push(format!("API: no members of {key}: {members}"));
                continue;
            };
            let mut listed = BTreeSet::new();
            for member in members {
                let host = member["host"].as_str().unwrap_or("?");
                let port = member["port"].as_u64().unwrap_or(0) as u16;
                let status = member["status"].as_str().unwrap_or("?");
                let Some(addr) = self.addrs.by_port(port).filter(|_| host == "127.0.0.1") else {
                    not_yet.push(format!("API: {key} lists a stranger {member}"));
                    continue;
                };
                assert!(
                    is_live(addr) || status != "UP",
                    "the API calls dead member {} of {key} UP: {member}; {}",
                    addr_label(addr),
                    self.ctx
                );
                // A server HAProxy still has that is no longer a member (draining, or an old
                // version serving until the new one does) is listed with `"leaving": true`;
                // there is none at quiescence.
                if member["leaving"] == true {
                    not_yet.push(format!("API: {key} {} is leaving", addr_label(addr)));
                    continue;
                }
                if is_live(addr) && status != "UP" && expected.contains(&addr) {
                    not_yet.push(format!("API: {key} {} is {status}", addr_label(addr)));
                }
                listed.insert(addr);
            }
            if listed != expected {
                not_yet.push(format!(
                    "API: {key} lists {}, the model {}",
                    self.addrs.labels(&listed),
                    self.addrs.labels(&expected)
                ));
            }
        }
        self.compare_servers(
            &rows,
            STATIC_KEY,
            model.static_members.clone(),
            &mut not_yet,
        );
        if not_yet.is_empty() {
            Ok(())
        } else {
            Err(not_yet.join("; "))
        }
    }

    /// Invariant 2 for one backend in HAProxy: exactly the expected servers, live ones ready
    /// and up, dead ones in maintenance.
    fn compare_servers(
        &self,
        rows: &[ServerStateRow],
        key: &str,
        expected: BTreeSet<usize>,
        not_yet: &mut Vec<String>,
    ) {
        let servers: BTreeMap<&str, &ServerStateRow> = rows
            .iter()
            .filter(|r| r.backend == key)
            .map(|r| (r.server.as_str(), r))
            .collect();
        let want: BTreeSet<String> = expected
            .iter()
            .map(|a| self.addrs.server(key, *a))
            .collect();
        let have: BTreeSet<String> = servers.keys().map(|s| (*s).to_owned()).collect();
        if have != want {
            let have: Vec<String> = servers
                .values()
                .map(|r| {
                    format!(
                        "{}:{}",
                        self.addrs.label_of_server(&r.server),
                        r.admin_state()
                    )
                })
                .collect();
            not_yet.push(format!(
                "haproxy: {key} has [{}], the model {}",
                have.join(" "),
                self.addrs.labels(&expected)
            ));
            return;
        }
        for addr in expected {
            let row = servers[self.addrs.server(key, addr).as_str()];
            let settled = if is_live(addr) {
                row.admin_state() == AdminState::Ready && check_passed(row) && row.op_state.is_up()
            } else {
                row.admin_state() == AdminState::Maint
            };
            if !settled {
                not_yet.push(format!(
                    "haproxy: {key} {} is {} {:?} {:?}",
                    addr_label(addr),
                    row.admin_state(),
                    row.op_state,
                    row.check_result
                ));
            }
        }
    }

    /// Looks (checking the safety invariants) for `duration`: a pause that keeps watching.
    async fn watch(&mut self, model: &Model, duration: Duration) {
        let until = Instant::now() + duration;
        while Instant::now() < until {
            let _ = self.look(model).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (up to `QUIESCE`) until a look finds HAProxy and the API as the model says.
    async fn quiesce(&mut self, model: &Model) {
        let deadline = Instant::now() + QUIESCE;
        loop {
            let outcome = self.look(model).await;
            let Err(why) = outcome else {
                return;
            };
            assert!(
                Instant::now() < deadline,
                "no quiescence within {QUIESCE:?}: {why}; model: {}; {}",
                describe_model(model),
                self.ctx
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn describe_model(model: &Model) -> String {
    let mut parts = Vec::new();
    for (b, backend) in model.backends.iter().enumerate() {
        let regs: Vec<String> = model
            .regs
            .iter()
            .filter(|(rb, _, _)| *rb == b)
            .map(|(_, v, a)| format!("{}@{v}", addr_label(*a)))
            .collect();
        parts.push(format!(
            "b{b}({}, v{}, {}): {}",
            backend.balance,
            backend.version,
            if backend.exists { "exists" } else { "deleted" },
            regs.join(" ")
        ));
    }
    let statics: Vec<String> = model
        .static_members
        .iter()
        .map(|a| addr_label(*a))
        .collect();
    parts.push(format!("{STATIC_KEY}: {}", statics.join(" ")));
    parts.join("; ")
}

// ---------------------------------------------------------------------------------------------
// The run.

async fn run(started: Instant, length: Duration, steps_per_sequence: Option<usize>) {
    let deadline = started + length;
    let first_seed = initial_seed();
    println!(
        "membership_model: seed {first_seed} (replay: THALASSA_MODEL_SEED={first_seed}), \
         run length {length:?}"
    );
    let live: Vec<Origin> = {
        let mut live = Vec::new();
        for i in 0..LIVE {
            live.push(Origin::start(&format!("L{i}")).await);
        }
        live
    };
    let mut ports: Vec<u16> = live.iter().map(Origin::port).collect();
    ports.extend((0..DEAD).map(|_| free_port()));
    let addrs = Addresses { ports };
    let mut totals = Totals::default();
    let mut seed = first_seed;
    while Instant::now() + RESERVE < deadline {
        run_sequence(
            first_seed,
            seed,
            &addrs,
            deadline,
            steps_per_sequence,
            &mut totals,
        )
        .await;
        seed = next_sequence_seed(seed);
        if steps_per_sequence.is_none() {
            break;
        }
    }
    drop(live);
    let ops: Vec<String> = KINDS
        .iter()
        .map(|k| format!("{k}={}", totals.ops.get(k).copied().unwrap_or(0)))
        .collect();
    println!(
        "membership_model summary: seed {first_seed}, {} sequence(s), {} steps, {:.1} s; ops: {}; \
         checks: {} looks + {} monitor looks (invariants 1, 3), {} quiescence (2), {} reload (4), \
         {} traffic (5); load: {} ok, 0 failed outside kill windows, {} failed in kill windows",
        totals.sequences,
        totals.steps,
        started.elapsed().as_secs_f64(),
        ops.join(" "),
        totals.looks,
        totals.monitor_looks,
        totals.quiescence_checks,
        totals.reload_checks,
        totals.traffic_checks,
        totals.load_ok,
        totals.kill_window_failed,
    );
    assert!(totals.steps > 0, "no step ran (run length {length:?})");
}

async fn run_sequence(
    first_seed: u64,
    seed: u64,
    addrs: &Addresses,
    deadline: Instant,
    max_steps: Option<usize>,
    totals: &mut Totals,
) {
    totals.sequences += 1;
    let sequence = totals.sequences;
    let replay = format!(
        "seed {first_seed}, sequence {sequence} (replay: THALASSA_MODEL_SEED={seed}{})",
        if max_steps.is_some() {
            " with the long run"
        } else {
            ""
        }
    );
    println!("sequence {sequence}: seed {seed}");
    let mut rng = Rng(seed);
    let stack =
        Stack::start_with(&["--drain-timeout", "2s", "--expiry-brake-threshold", "1"]).await;
    let log = stack.proc.log.clone();

    // Three dynamic backends with distinct balance algorithms, one static backend, each behind
    // a frontend of its own.
    let mut balances = BALANCES.to_vec();
    for i in (1..balances.len()).rev() {
        balances.swap(i, rng.below(i + 1));
    }
    let mut model = Model {
        backends: balances[..DYNAMIC]
            .iter()
            .map(|balance| BackendModel {
                balance,
                version: 1,
                exists: true,
            })
            .collect(),
        regs: PINNED.into_iter().collect(),
        static_members: random_subset(&mut rng, 1, 3).into_iter().collect(),
    };
    let frontend_ports: Vec<u16> = (0..=DYNAMIC).map(|_| free_port()).collect();
    let mut world = World {
        stack,
        addrs: addrs.clone(),
        gate: Gate::new(addrs.clone()),
        ports: frontend_ports.clone(),
        ctx: format!(
            "setup [frontends f0-f3, backends b0-b2, {STATIC_KEY} created with members {}, \
             register {} and {}]; {replay}",
            addrs.labels(&model.static_members),
            reg_label(PINNED[0]),
            reg_label(PINNED[1]),
        ),
        looks: 0,
    };
    // Declared after the world: dropped (printing the log) before the stack's dir is removed.
    let _log = LogOnPanic(log);
    for (i, port) in frontend_ports.iter().enumerate() {
        let backend = if i < DYNAMIC {
            format!("b{i}")
        } else {
            STATIC_KEY.to_owned()
        };
        world
            .put_ok(
                &format!("/frontends/f{i}"),
                &format!(r#"{{"bind":"127.0.0.1:{port}","backend":"{backend}","mode":"http"}}"#),
            )
            .await;
    }
    for b in 0..DYNAMIC {
        world
            .put_ok(
                &format!("/backends/b{b}"),
                &backend_body(b, &model.backends[b]),
            )
            .await;
    }
    world
        .put_ok(
            &format!("/backends/{STATIC_KEY}"),
            &static_body(addrs, &model.static_members),
        )
        .await;
    world.glance().await;
    for reg in PINNED {
        world.execute(&Op::Register(reg), &model).await;
    }
    println!(
        "sequence {sequence}: balances b0 {:?} (traffic), b1 {:?}, b2 {:?}; static {}",
        model.backends[0].balance,
        model.backends[1].balance,
        model.backends[2].balance,
        addrs.labels(&model.static_members)
    );
    world.quiesce(&model).await;

    let step_now = Arc::new(AtomicUsize::new(0));
    let monitor = Monitor::start(
        world.stack.admin_socket(),
        world.gate.clone(),
        step_now.clone(),
    );
    let load = Load::start(world.ports[0], 2);
    load.wait_ok(20).await;

    let mut step = 0;
    while Instant::now() + RESERVE < deadline && max_steps.is_none_or(|max| step < max) {
        step += 1;
        step_now.store(step, Ordering::SeqCst);
        let ops = generate_step(&mut rng, &model);
        let label: Vec<String> = ops
            .iter()
            .map(|(pause, op)| {
                if *pause > 0 {
                    format!("+{pause}ms {}", op.label())
                } else {
                    op.label()
                }
            })
            .collect();
        let label = label.join(", ");
        world.ctx = format!("step {step} [{label}]; {replay}");
        let membership_only = ops.iter().all(|(_, op)| op.membership_only());
        let kill = ops.iter().any(|(_, op)| matches!(op, Op::KillWorker));
        let expire = ops.iter().any(|(_, op)| matches!(op, Op::Expire(_)));
        let reloads_before = world
            .stack
            .metric_total("thalassa_haproxy_reloads_total")
            .await;
        let load_before = load.snapshot();
        let old_worker = if kill { world.worker_pid().await } else { None };
        let t0 = Instant::now();

        for (pause, op) in &ops {
            if *pause > 0 {
                world.watch(&model, Duration::from_millis(*pause)).await;
            }
            model.apply(op);
            world.execute(op, &model).await;
            world.glance().await;
            *totals.ops.entry(op.kind()).or_default() += 1;
        }
        if expire {
            // Let the 1 s lease lapse, watching all along.
            world.watch(&model, Duration::from_millis(1300)).await;
        }
        if kill {
            world
                .wait_for(QUIESCE, "a new haproxy worker", |w| async move {
                    w.worker_pid().await.filter(|pid| Some(*pid) != old_worker)
                })
                .await;
        }
        world.quiesce(&model).await;
        totals.quiescence_checks += 1;
        if kill {
            load.wait_healthy(20, QUIESCE).await;
        }

        let violations = monitor.violations();
        assert!(
            violations.is_empty(),
            "the monitor saw an invariant broken: {}; {}",
            violations.join("; "),
            world.ctx
        );
        let reloads = world
            .stack
            .metric_total("thalassa_haproxy_reloads_total")
            .await
            - reloads_before;
        if membership_only {
            totals.reload_checks += 1;
            assert_eq!(
                reloads, 0,
                "a membership-only step reloaded haproxy; {}",
                world.ctx
            );
        }
        let load_now = load.snapshot();
        let failed = load_now.failed - load_before.failed;
        if kill {
            totals.kill_window_failed += failed;
        } else {
            totals.traffic_checks += 1;
            let report = load.report_since(&load_before, t0);
            assert_eq!(
                failed, 0,
                "requests through f0 (b0 always has a live member) failed: {:?}; {}",
                report.kinds, world.ctx
            );
        }
        println!(
            "step {step} ({} ms): {label}{}{}",
            t0.elapsed().as_millis(),
            if reloads > 0 {
                format!(" [{reloads} reload(s)]")
            } else {
                String::new()
            },
            if kill {
                format!(" [{failed} failed while the worker was down]")
            } else {
                String::new()
            },
        );
    }
    totals.steps += step;
    totals.looks += world.looks;
    totals.monitor_looks += monitor.stop().await;
    let stats = load.snapshot();
    load.stop().await;
    totals.load_ok += stats.ok;
    assert!(
        stats.ok > 0,
        "no request went through f0 at all; {}",
        world.ctx
    );
    println!(
        "sequence {sequence}: {step} steps, final model: {}",
        describe_model(&model)
    );
}
