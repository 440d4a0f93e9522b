//! Shared harness of the aqueduct tests: finding HAProxy (failing under CI when it is missing),
//! running `haproxy -c`, snapshot files, and the check-only `ConfigTarget`.

#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches start the real programs they measure"
)]
#![allow(dead_code)] // Each test binary uses a different part of the harness.
#![allow(clippy::unwrap_used)] // Test code: a panic here is a test failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use thalassa::haproxy::render::RenderSettings;
use thalassa::haproxy::{BoxFuture, ConfigRejected, ConfigTarget, ReloadError, ReloadReport};

/// The haproxy binary, or `None` (with a skip line) when it is missing outside CI.
pub fn haproxy_bin() -> Option<PathBuf> {
    let bin = std::env::var_os("THALASSA_HAPROXY_BIN")
        .map_or_else(|| PathBuf::from("haproxy"), PathBuf::from);
    match Command::new(&bin).arg("-v").output() {
        Ok(out) if out.status.success() => Some(bin),
        _ if std::env::var_os("CI").is_some() => {
            panic!("haproxy is required under CI: apt-get install haproxy (see .ci/run)")
        }
        _ => {
            eprintln!("SKIP: haproxy not found (apt-get install haproxy)");
            None
        }
    }
}

/// Render settings inside a temp dir, with a server-state file HAProxy can read (a missing or
/// empty one is a warning).
pub struct TestDir {
    pub dir: tempfile::TempDir,
    pub settings: RenderSettings,
}

impl TestDir {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("server-state");
        std::fs::write(&state, "1\n").unwrap();
        let settings = RenderSettings::new(dir.path().join("admin.sock"), state);
        TestDir { dir, settings }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// What `haproxy -c` said about a config: success, and its ALERT and WARNING lines.
#[derive(Debug)]
pub struct CheckOutcome {
    pub valid: bool,
    pub alerts: Vec<String>,
    pub warnings: Vec<String>,
}

pub fn haproxy_check(bin: &Path, dir: &Path, text: &str) -> CheckOutcome {
    let file = tempfile::Builder::new()
        .suffix(".cfg")
        .tempfile_in(dir)
        .unwrap();
    std::fs::write(file.path(), text).unwrap();
    let out = Command::new(bin)
        .arg("-c")
        .arg("-f")
        .arg(file.path())
        .output()
        .unwrap();
    let stderr =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let pick = |tag: &str| {
        stderr
            .lines()
            .filter(|l| l.contains(tag))
            .map(str::to_owned)
            .collect()
    };
    CheckOutcome {
        valid: out.status.success(),
        alerts: pick("[ALERT]"),
        warnings: pick("[WARNING]"),
    }
}

/// Starts HAProxy for real (master-worker, as the supervisor does) on `text` with every `bind`
/// moved to a free loopback port, and returns the WARNING and ALERT lines it printed until its
/// worker loaded (or it gave up): what `haproxy -c` cannot see, such as warnings about the
/// server-state file or the CLI sockets, shows at start. One start at a time (fixtures share
/// their ports' numbers).
pub fn startup_complaints(bin: &Path, dir: &Path, text: &str) -> Vec<String> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let text: String = text
        .lines()
        .map(|line| match line.trim_start().strip_prefix("bind ") {
            Some(rest) => {
                let options = rest.split_once(' ').map_or("", |(_, options)| options);
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                format!("    bind 127.0.0.1:{port} {options}\n")
            }
            None => format!("{line}\n"),
        })
        .collect();
    let file = tempfile::Builder::new()
        .suffix(".cfg")
        .tempfile_in(dir)
        .unwrap();
    std::fs::write(file.path(), &text).unwrap();
    let log = dir.join("startup.log");
    let mut child = Command::new(bin)
        .arg("-W")
        .arg("-f")
        .arg(file.path())
        .current_dir(dir)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.join("startup.err")).unwrap())
        .spawn()
        .unwrap();
    let output = || {
        std::fs::read_to_string(&log).unwrap_or_default()
            + &std::fs::read_to_string(dir.join("startup.err")).unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let said = output();
        if said.contains("Loading success") || said.contains("Loading failure") {
            break;
        }
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let said = output();
    assert!(
        said.contains("Loading success"),
        "haproxy did not start:\n{said}\n{text}"
    );
    // The startup log ends at "Loading success". The fixtures' servers do not exist, so their
    // health checks fail, which 3.2+ may print before the master says the worker loaded.
    let traffic = ["Health check for ", "Server ", "has no server available"];
    said.lines()
        .take_while(|l| !l.contains("Loading success"))
        .filter(|l| l.contains("[WARNING]") || l.contains("[ALERT]"))
        .filter(|l| {
            let message = l.split_once(") : ").map_or(*l, |(_, message)| message);
            !traffic.iter().any(|t| message.contains(t)) || message.contains("server-state")
        })
        .filter(|l| !is_root_start_warning(l))
        .map(str::to_owned)
        .collect()
}

/// 3.3+ warn at every start as root without `chroot` and `user`: only tests start it so here
/// (the image runs it unprivileged).
pub fn is_root_start_warning(line: &str) -> bool {
    line.contains("HAProxy was started as root")
        || line.contains("HAProxy was started as the root user")
}

/// Compares `actual` with `tests/fixtures/aqueduct/<name>`; `UPDATE_SNAPSHOTS=1` rewrites it.
pub fn assert_snapshot(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/aqueduct")
        .join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_SNAPSHOTS=1 to create it)",
            path.display()
        )
    });
    if expected != actual {
        panic!(
            "snapshot {name} differs (UPDATE_SNAPSHOTS=1 rewrites it)\n--- expected\n{expected}\n--- actual\n{actual}"
        );
    }
}

/// A `ConfigTarget` for tests of the apply pipeline without a running HAProxy: `check` runs the
/// REAL `haproxy -c`, `reload` only records the text (the real supervisor is tested apart).
/// Reloads can be held at a gate, or made to fail, to drive the pipeline's edge cases.
pub struct CheckOnlyTarget {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub reloads: Mutex<Vec<String>>,
    pub checks: Mutex<usize>,
    /// Reload calls started (held ones included).
    pub reload_calls: std::sync::atomic::AtomicUsize,
    gate: tokio::sync::Semaphore,
    gated: std::sync::atomic::AtomicBool,
    pub fail_reloads_with: Mutex<Option<ReloadError>>,
}

impl CheckOnlyTarget {
    pub fn new(bin: PathBuf) -> Self {
        CheckOnlyTarget {
            bin,
            dir: tempfile::tempdir().unwrap(),
            reloads: Mutex::new(Vec::new()),
            checks: Mutex::new(0),
            reload_calls: std::sync::atomic::AtomicUsize::new(0),
            gate: tokio::sync::Semaphore::new(0),
            gated: std::sync::atomic::AtomicBool::new(false),
            fail_reloads_with: Mutex::new(None),
        }
    }

    pub fn reload_count(&self) -> usize {
        self.reloads.lock().unwrap().len()
    }

    pub fn last_reload(&self) -> Option<String> {
        self.reloads.lock().unwrap().last().cloned()
    }

    /// From now on each reload waits for one `release`.
    pub fn hold_reloads(&self) {
        self.gated.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn release_reloads(&self, n: usize) {
        self.gate.add_permits(n);
    }
}

impl ConfigTarget for CheckOnlyTarget {
    fn check<'a>(&'a self, config_text: &'a str) -> BoxFuture<'a, Result<(), ConfigRejected>> {
        Box::pin(async move {
            *self.checks.lock().unwrap() += 1;
            let bin = self.bin.clone();
            let dir = self.dir.path().to_owned();
            let text = config_text.to_owned();
            let outcome = tokio::task::spawn_blocking(move || haproxy_check(&bin, &dir, &text))
                .await
                .unwrap();
            if outcome.valid {
                Ok(())
            } else {
                Err(ConfigRejected {
                    lines: outcome.alerts,
                })
            }
        })
    }

    fn reload<'a>(
        &'a self,
        config_text: &'a str,
        _reason: &'a str,
    ) -> BoxFuture<'a, Result<ReloadReport, ReloadError>> {
        Box::pin(async move {
            let started = Instant::now();
            self.reload_calls
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if self.gated.load(std::sync::atomic::Ordering::SeqCst) {
                self.gate.acquire().await.unwrap().forget();
            }
            if let Some(err) = self.fail_reloads_with.lock().unwrap().clone() {
                return Err(err);
            }
            self.reloads.lock().unwrap().push(config_text.to_owned());
            Ok(ReloadReport {
                duration: started.elapsed(),
                worker_pid: None,
            })
        })
    }
}

/// Polls `condition` until it holds or the deadline passes.
pub async fn eventually(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
