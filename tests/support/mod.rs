//! Shared harness for the integration tests: temp dirs, free ports, child processes killed on
//! drop, `eventually` waits with a deadline, and a tiny loopback HTTP origin server.

#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches start the real programs they measure"
)]
#![allow(dead_code)] // each test binary uses a different subset
#![allow(clippy::unwrap_used)] // a panic in the harness is a test failure

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// True when a dependency is present. Under `CI` a missing dependency fails the test (with an
/// install hint); locally the test prints a skip line and returns early.
pub fn require(binary: &str, install_hint: &str) -> bool {
    if find_program(binary).is_some() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{binary} is required under CI: {install_hint}");
    }
    eprintln!("SKIP: {binary} not found ({install_hint})");
    false
}

/// Where `program` is on `PATH` (an executable file), like the shell's `command -v`.
pub fn find_program(program: &str) -> Option<PathBuf> {
    programs_on_path(program).into_iter().next()
}

/// Every executable file named `program` on `PATH`, in `PATH` order.
pub fn programs_on_path(program: &str) -> Vec<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .filter(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .collect()
}

pub fn require_haproxy() -> bool {
    if haproxy_path().is_some() {
        return true;
    }
    require(
        "haproxy",
        "apt-get install -y haproxy, or THALASSA_HAPROXY_BIN=<path>",
    )
}

/// The HAProxy every test runs: `THALASSA_HAPROXY_BIN` when set (the product reads the same
/// variable, so a stack a test starts runs it too), else `haproxy` on `PATH`.
pub fn haproxy_path() -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    match std::env::var_os("THALASSA_HAPROXY_BIN") {
        Some(bin) if Path::new(&bin).components().count() > 1 => {
            let bin = PathBuf::from(bin);
            std::fs::metadata(&bin)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .then_some(bin)
        }
        Some(name) => find_program(&name.to_string_lossy()),
        None => find_program("haproxy"),
    }
}

/// A port that was free a moment ago on 127.0.0.1, and never handed out before by this test
/// process: a stack restarting on its ports leaves them free for a moment, and another test
/// running alongside must not be given one of them then.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if HANDED_OUT
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(port)
        {
            return port;
        }
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A child process killed (by PID) when dropped; its stderr goes to a log file.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (bounded) for the exit.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        self.terminate_within(Duration::from_secs(10))
    }

    /// SIGTERM, then waits up to `grace` for the process to exit (`None`: it did not).
    pub fn terminate_within(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A failing test shows what the process said: its temp dir (and log) goes with it.
        if std::thread::panicking() {
            print_log_tail(&self.log, 200);
            keep_log(&self.log);
        }
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last `lines` lines of `log` on stderr, which the test harness shows for a failed test.
/// HAProxy's access-log lines (a load generator makes thousands) are left out.
fn print_log_tail(log: &Path, lines: usize) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text
        .lines()
        .filter(|line| !(line.contains(" haproxy: ") && line.contains(" HTTP/1.")))
        .collect();
    let tail = &all[all.len().saturating_sub(lines)..];
    eprintln!(
        "--- last {} lines of {} (access logs left out) ---",
        tail.len(),
        log.display()
    );
    for line in tail {
        eprintln!("{line}");
    }
    eprintln!("--- end of {} ---", log.display());
}

/// With `THALASSA_TEST_KEEP_LOGS=<dir>`, a failed test's whole log is copied there (its temp
/// dir is removed with the test).
fn keep_log(log: &Path) {
    let Some(dir) = std::env::var_os("THALASSA_TEST_KEEP_LOGS") else {
        return;
    };
    let name = format!(
        "{}-{}-{}",
        std::process::id(),
        std::thread::current()
            .name()
            .unwrap_or("test")
            .replace("::", "-"),
        log.file_name().and_then(|n| n.to_str()).unwrap_or("log")
    );
    let target = Path::new(&dir).join(name);
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::copy(log, &target)) {
        Ok(_) => eprintln!("whole log kept in {}", target.display()),
        Err(err) => eprintln!("cannot keep {}: {err}", log.display()),
    }
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Starts the real `thalassa` binary with `args`, logging to `<dir>/<name>.log`.
pub fn spawn_thalassa(dir: &Path, name: &str, args: &[&str]) -> Proc {
    spawn_thalassa_stopping_haproxy(dir, name, args, true)
}

/// `spawn_thalassa`, choosing whether its stop also stops its HAProxy (`--stop-haproxy`,
/// which every test but the hand-over tests wants: a test's HAProxy goes with its process).
pub fn spawn_thalassa_stopping_haproxy(
    dir: &Path,
    name: &str,
    args: &[&str],
    stop_haproxy: bool,
) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let log_file = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_thalassa"))
        .args(args)
        .env("THALASSA_STOP_HAPROXY", stop_haproxy.to_string())
        .env("THALASSA_LOG", "info,thalassa=debug")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    Proc { child, log }
}

/// GETs `url` and reads its JSON body (a test fails on any error).
pub async fn get_json_at(url: &str) -> serde_json::Value {
    let response = client().get(url).send().await.unwrap();
    response.json().await.unwrap()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Waits until `url` answers anything at all.
pub async fn wait_http(url: &str, proc: &mut Proc) {
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if client.get(url).send().await.is_ok() {
            return;
        }
        if let Ok(Some(status)) = proc.child.try_wait() {
            panic!("process exited with {status}; log:\n{}", proc.log_text());
        }
        if Instant::now() > deadline {
            panic!("{url} never answered; log:\n{}", proc.log_text());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A tiny HTTP/1.1 origin on 127.0.0.1: answers `200` with body `<name>`; `GET /slow/<ms>`
/// answers after a delay. Counts requests; can stop accepting (and close) on demand.
pub struct Origin {
    pub addr: SocketAddr,
    pub name: String,
    pub requests: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Origin {
    pub async fn start(name: &str) -> Origin {
        Self::start_on(name, 0).await
    }

    pub async fn start_on(name: &str, port: u16) -> Origin {
        Self::start_failing(name, port, 0).await
    }

    /// An origin that answers `500` to every `one_in`-th request (0: never) whose path does
    /// not start with `/health` (so its health checks keep passing).
    pub async fn start_failing(name: &str, port: u16, one_in: u64) -> Origin {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let body = name.to_owned();
        let (req_count, stop_flag) = (requests.clone(), stop.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                if stop_flag.load(Ordering::SeqCst) {
                    continue;
                }
                let (body, req_count, stop_flag) =
                    (body.clone(), req_count.clone(), stop_flag.clone());
                tokio::spawn(serve_connection(stream, body, req_count, stop_flag, one_in));
            }
        });
        Origin {
            addr,
            name: name.to_owned(),
            requests,
            stop,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn count(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.abort();
    }
}

async fn serve_connection(
    mut stream: tokio::net::TcpStream,
    body: String,
    req_count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    fail_one_in: u64,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::with_capacity(4096);
    loop {
        // Read one request head.
        let head_end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        buf.drain(..head_end);
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let served = req_count.fetch_add(1, Ordering::SeqCst) + 1;
        let fails =
            fail_one_in > 0 && !path.starts_with("/health") && served.is_multiple_of(fail_one_in);
        if let Some(ms) = path
            .strip_prefix("/slow/")
            .and_then(|v| v.parse::<u64>().ok())
        {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let close = head.to_ascii_lowercase().contains("connection: close");
        let response = format!(
            "HTTP/1.1 {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{}\r\n{}",
            if fails {
                "500 Internal Server Error"
            } else {
                "200 OK"
            },
            body.len(),
            if close { "connection: close\r\n" } else { "" },
            body
        );
        if stream.write_all(response.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

/// A `thalassa up` stack on free loopback ports, in its own temp dir.
pub struct Stack {
    // Fields drop in order: the process (which prints its log if the test failed) before
    // the directory that holds the log.
    pub proc: Proc,
    pub dir: tempfile::TempDir,
    pub registry: String,
    pub aqueduct: String,
    extra_args: Vec<String>,
    registry_port: u16,
    aqueduct_port: u16,
    /// `--stop-haproxy` for every process of this stack (true but in the hand-over tests).
    stop_haproxy: bool,
}

impl Stack {
    pub async fn start() -> Stack {
        Self::start_with(&[]).await
    }

    pub async fn start_with(extra_args: &[&str]) -> Stack {
        Self::start_stopping_haproxy(extra_args, true).await
    }

    /// A stack whose stop (SIGTERM) leaves its HAProxy serving for the next start, as
    /// `thalassa up` does without `--stop-haproxy`. Pair it with `KillHaproxiesOnDrop`.
    pub async fn start_leaving_haproxy_serving() -> Stack {
        Self::start_stopping_haproxy(&[], false).await
    }

    async fn start_stopping_haproxy(extra_args: &[&str], stop_haproxy: bool) -> Stack {
        Self::start_in(tempfile::tempdir().unwrap(), extra_args, stop_haproxy).await
    }

    /// A stack on a data dir the caller made (to start something beside it there first).
    pub async fn start_in(
        dir: tempfile::TempDir,
        extra_args: &[&str],
        stop_haproxy: bool,
    ) -> Stack {
        let (registry_port, aqueduct_port) = (free_port(), free_port());
        let extra_args: Vec<String> = extra_args.iter().map(|s| (*s).to_owned()).collect();
        let proc = spawn_up(
            dir.path(),
            registry_port,
            aqueduct_port,
            &extra_args,
            stop_haproxy,
        );
        let mut stack = Stack {
            dir,
            registry: format!("http://127.0.0.1:{registry_port}"),
            aqueduct: format!("http://127.0.0.1:{aqueduct_port}"),
            proc,
            extra_args,
            registry_port,
            aqueduct_port,
            stop_haproxy,
        };
        let url = format!("{}/frontends", stack.aqueduct);
        wait_http(&url, &mut stack.proc).await;
        stack
    }

    /// Stops the process (SIGTERM) and starts it again on the same ports and data dir.
    pub async fn restart(&mut self) {
        // A graceful stop lets HAProxy's workers finish their connections (5 s grace, then
        // TERM): on a loaded machine that can pass 10 s. Starting the next one before the old
        // one is gone would find the old API still answering on the same port.
        let exited = self.proc.terminate_within(Duration::from_secs(30));
        assert!(
            exited.is_some(),
            "thalassa up did not exit within 30 s of SIGTERM"
        );
        self.start_again().await;
    }

    /// Starts the stack's process again (after it stopped) on the same ports and data dir.
    pub async fn start_again(&mut self) {
        self.proc = spawn_up(
            self.dir.path(),
            self.registry_port,
            self.aqueduct_port,
            &self.extra_args,
            self.stop_haproxy,
        );
        let url = format!("{}/frontends", self.aqueduct);
        wait_http(&url, &mut self.proc).await;
    }

    /// Kills the process with SIGKILL (no cleanup: its HAProxy is left running) and starts it
    /// again on the same ports and data dir.
    pub async fn kill_9_and_restart(&mut self) {
        signal(self.proc.pid(), "KILL");
        let _ = self.proc.child.wait();
        self.start_again().await;
    }

    pub fn admin_socket(&self) -> PathBuf {
        self.dir.path().join("haproxy").join("admin.sock")
    }

    pub async fn put(&self, path: &str, body: &str) -> (u16, String) {
        send(client().put(format!("{}{path}", self.aqueduct)), body).await
    }

    pub async fn aqueduct_post(&self, path: &str, body: &str) -> (u16, String) {
        send(client().post(format!("{}{path}", self.aqueduct)), body).await
    }

    pub async fn register(&self, name_version_host_port: &str, body: &str) -> (u16, String) {
        let url = format!("{}/registrations/{name_version_host_port}", self.registry);
        send(client().post(url), body).await
    }

    pub async fn deregister(&self, name_version_host_port: &str) -> (u16, String) {
        let url = format!("{}/registrations/{name_version_host_port}", self.registry);
        send(client().delete(url), "").await
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        get_json_at(&format!("{}{path}", self.aqueduct)).await
    }

    pub async fn get_text(&self, path: &str) -> String {
        client()
            .get(format!("{}{path}", self.aqueduct))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Sum of a counter family in the aqueduct's `/metrics` (all label sets).
    pub async fn metric_total(&self, name: &str) -> u64 {
        let text = self.get_text("/metrics").await;
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter(|l| l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Status of member `host:port` of `backend` as `GET /backends/{key}/members` shows it.
    pub async fn member_status(&self, backend: &str, host_port: &str) -> Option<String> {
        let members = self.get_json(&format!("/backends/{backend}/members")).await;
        members.as_array()?.iter().find_map(|m| {
            let hp = format!("{}:{}", m["host"].as_str()?, m["port"]);
            (hp == host_port).then(|| m["status"].as_str().unwrap_or("").to_owned())
        })
    }
}

fn spawn_up(
    dir: &Path,
    registry_port: u16,
    aqueduct_port: u16,
    extra: &[String],
    stop_haproxy: bool,
) -> Proc {
    let mut args = vec![
        "up".to_owned(),
        "--registry-listen".to_owned(),
        format!("127.0.0.1:{registry_port}"),
        "--listen".to_owned(),
        format!("127.0.0.1:{aqueduct_port}"),
        "--data-dir".to_owned(),
        dir.to_string_lossy().into_owned(),
    ];
    args.extend(extra.iter().cloned());
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn_thalassa_stopping_haproxy(dir, "thalassa-up", &arg_refs, stop_haproxy)
}

async fn send(request: reqwest::RequestBuilder, body: &str) -> (u16, String) {
    let response = request
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// One HTTP/1.1 GET through a proxy port on a fresh connection; the body, or an error text.
pub async fn get_once(port: u16, path: &str) -> Result<(u16, String), String> {
    get_once_at(std::net::Ipv4Addr::LOCALHOST, port, path).await
}

/// [`get_once`] through `address:port` (a proxy listening on another loopback address).
pub async fn get_once_at(
    address: std::net::Ipv4Addr,
    port: u16,
    path: &str,
) -> Result<(u16, String), String> {
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
        .get(format!("http://{address}:{port}{path}"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// Waits (up to 15 s) until a request through `port` is answered `200` with `body`.
pub async fn wait_for_body(port: u16, body: &str) {
    let what = format!("port {port} to answer {body:?}");
    eventually(Duration::from_secs(15), &what, || async {
        (get_once(port, "/").await.ok()? == (200, body.to_owned())).then_some(())
    })
    .await;
}

impl Stack {
    /// Registers `origin` as a member of `name@version` with a long lease.
    pub async fn register_origin(&self, name: &str, version: &str, origin: &Origin) {
        let path = format!("{name}/{version}/127.0.0.1/{}", origin.port());
        let (status, body) = self.register(&path, r#"{"secondsToExpire":600}"#).await;
        assert_eq!(status, 200, "{body}");
    }
}

/// A continuous HTTP load through a proxy port: `workers` tasks each send `GET /` on a
/// keep-alive connection, back to back with a short pause, and count what came back. Every
/// failure (connect error, reset, timeout, non-200 status) is kept with its time, so a test
/// can say how many requests a fault cost and when traffic was healthy again.
pub struct Load {
    stats: Arc<std::sync::Mutex<LoadStats>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Debug, Default, Clone)]
pub struct LoadStats {
    pub ok: u64,
    pub failed: u64,
    /// When each failure happened, and what it was.
    pub failures: Vec<(Instant, String)>,
    /// When the most recent successful request completed.
    pub last_ok: Option<Instant>,
    /// Successes since the most recent failure.
    pub ok_since_failure: u64,
}

/// What traffic saw from a moment on (usually the fault).
#[derive(Debug, Clone)]
pub struct TrafficReport {
    pub ok: u64,
    pub failed: u64,
    /// From the fault to the last failure; zero without failures.
    pub recovered_in: Duration,
    /// The most frequent failure kinds with their counts, for the log.
    pub kinds: Vec<String>,
}

impl TrafficReport {
    /// One line for the test output, e.g. `fault: kill -9 worker: 12345 ok, 3 failed, recovered in 0.41 s`.
    pub fn print(&self, fault: &str) {
        println!(
            "fault: {fault}: {} ok, {} failed, recovered in {:.2} s{}",
            self.ok,
            self.failed,
            self.recovered_in.as_secs_f64(),
            if self.kinds.is_empty() {
                String::new()
            } else {
                format!(" (failures: {})", self.kinds.join("; "))
            }
        );
    }
}

impl Load {
    pub fn start(port: u16, workers: usize) -> Load {
        Self::start_at(std::net::Ipv4Addr::LOCALHOST, port, workers)
    }

    /// [`Load::start`] through `address:port` (a proxy on another loopback address).
    pub fn start_at(address: std::net::Ipv4Addr, port: u16, workers: usize) -> Load {
        let stats = Arc::new(std::sync::Mutex::new(LoadStats::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..workers)
            .map(|_| {
                let (stats, stop) = (stats.clone(), stop.clone());
                tokio::spawn(async move {
                    let client = reqwest::Client::builder()
                        .timeout(Duration::from_secs(5))
                        .build()
                        .unwrap();
                    let url = format!("http://{address}:{port}/");
                    while !stop.load(Ordering::SeqCst) {
                        let outcome = match client.get(&url).send().await {
                            Ok(response) if response.status() == 200 => {
                                match response.bytes().await {
                                    Ok(_) => Ok(()),
                                    Err(err) => Err(format!("body: {err}")),
                                }
                            }
                            Ok(response) => Err(format!("status {}", response.status().as_u16())),
                            Err(err) => Err(innermost_cause(&err)),
                        };
                        {
                            let mut stats = stats.lock().unwrap();
                            match outcome {
                                Ok(()) => {
                                    stats.ok += 1;
                                    stats.ok_since_failure += 1;
                                    stats.last_ok = Some(Instant::now());
                                }
                                Err(kind) => {
                                    stats.failed += 1;
                                    stats.ok_since_failure = 0;
                                    stats.failures.push((Instant::now(), kind));
                                }
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        Load { stats, stop, tasks }
    }

    pub fn snapshot(&self) -> LoadStats {
        self.stats.lock().unwrap().clone()
    }

    /// Waits until at least `n` more requests succeeded (traffic flows), up to 15 s.
    pub async fn wait_ok(&self, n: u64) {
        let start = self.snapshot().ok;
        eventually(Duration::from_secs(15), "traffic to flow", || async {
            (self.snapshot().ok >= start + n).then_some(())
        })
        .await;
    }

    /// Waits (up to `timeout`) until `n` requests in a row succeeded: traffic is healthy.
    pub async fn wait_healthy(&self, n: u64, timeout: Duration) {
        eventually(timeout, "traffic to be healthy again", || async {
            (self.snapshot().ok_since_failure >= n).then_some(())
        })
        .await;
    }

    /// Requests since `before` (a snapshot taken at the fault), and the recovery time from
    /// `fault_at`.
    pub fn report_since(&self, before: &LoadStats, fault_at: Instant) -> TrafficReport {
        let now = self.snapshot();
        let failures = &now.failures[before.failures.len()..];
        let recovered_in = match failures.last() {
            None => Duration::ZERO,
            // Traffic is healthy again right after the last failure (later requests succeed,
            // or the caller would see more failures).
            Some((last_failure, _)) => last_failure.saturating_duration_since(fault_at),
        };
        // Each distinct failure with its count, most frequent first.
        let mut counts: Vec<(String, u64)> = Vec::new();
        for (_, kind) in failures {
            match counts.iter_mut().find(|(k, _)| k == kind) {
                Some((_, n)) => *n += 1,
                None => counts.push((kind.clone(), 1)),
            }
        }
        counts.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        let kinds = counts
            .into_iter()
            .take(4)
            .map(|(kind, n)| format!("{n} x {kind}"))
            .collect();
        TrafficReport {
            ok: now.ok - before.ok,
            failed: now.failed - before.failed,
            recovered_in,
            kinds,
        }
    }

    /// Stops the workers and waits for them.
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The innermost cause of an error (reqwest hides the interesting part, like "Connection
/// reset by peer", in the sources), marked with whether connecting failed.
pub fn innermost_cause(err: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = err;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    let stage = if err.is_connect() {
        "connect"
    } else if err.is_timeout() {
        "timeout"
    } else {
        "request"
    };
    format!("{stage}: {cause}")
}

/// PIDs of the HAProxy processes whose master CLI socket is in `run_dir` (their argv carries
/// `-S <run_dir>/master.sock,...`), as `(pid, parent pid)`.
pub fn haproxy_processes(run_dir: &Path) -> Vec<(u32, u32)> {
    let needle = format!("{}/master.sock", run_dir.display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let ours = args
            .windows(2)
            .any(|w| w[0] == b"-S" && w[1].starts_with(needle.as_bytes()));
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if ours && fields.first().is_some_and(|state| *state != "Z") {
            let ppid = fields.get(1).and_then(|p| p.parse().ok()).unwrap_or(0);
            found.push((pid, ppid));
        }
    }
    found
}

/// The HAProxy masters of `run_dir` (processes whose parent is not one of them).
pub fn haproxy_masters(run_dir: &Path) -> Vec<u32> {
    let procs = haproxy_processes(run_dir);
    let pids: Vec<u32> = procs.iter().map(|(pid, _)| *pid).collect();
    procs
        .iter()
        .filter(|(_, ppid)| !pids.contains(ppid))
        .map(|(pid, _)| *pid)
        .collect()
}

/// The HAProxy workers of `run_dir` (children of one of its masters).
pub fn haproxy_workers(run_dir: &Path) -> Vec<u32> {
    let procs = haproxy_processes(run_dir);
    let masters = haproxy_masters(run_dir);
    procs
        .iter()
        .filter(|(_, ppid)| masters.contains(ppid))
        .map(|(pid, _)| *pid)
        .collect()
}

/// `thalassa registry` on `127.0.0.1:<port>` with its data in `<dir>/registry`; returns once
/// it answers.
pub async fn start_registry(dir: &Path, port: u16) -> Proc {
    // Each start logs to its own file, so a restart keeps the earlier run's log.
    static STARTS: AtomicU64 = AtomicU64::new(0);
    let data = dir.join("registry");
    let mut proc = spawn_thalassa(
        dir,
        &format!("registry-{}", STARTS.fetch_add(1, Ordering::SeqCst)),
        &[
            "registry",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    wait_http(&format!("http://127.0.0.1:{port}/status"), &mut proc).await;
    proc
}

/// `thalassa aqueduct` following `registry`, API on `127.0.0.1:<api_port>`, data in
/// `<dir>/aqueduct`, logging to `<dir>/<name>.log`; returns once the API answers.
pub async fn start_aqueduct(dir: &Path, name: &str, api_port: u16, registry: &str) -> Proc {
    let data = dir.join("aqueduct");
    let mut proc = spawn_thalassa(
        dir,
        name,
        &[
            "aqueduct",
            "--listen",
            &format!("127.0.0.1:{api_port}"),
            "--registry",
            registry,
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    wait_http(&format!("http://127.0.0.1:{api_port}/frontends"), &mut proc).await;
    proc
}

/// A stack with frontend `web` on a free port and a dynamic backend `app` following
/// `app@<version>` with 100 ms health checks; returns the stack and the frontend's port.
pub async fn stack_with_app(version: &str) -> (Stack, u16) {
    stack_with_backend(
        "app",
        &format!(
            r#"{{"type":"dynamic","name":"app","version":"{version}","mode":"http","health":{{"interval":100}}}}"#
        ),
    )
    .await
}

/// A stack with frontend `web` on a free port in front of backend `key`, PUT with `body`;
/// returns the stack and the frontend's port.
pub async fn stack_with_backend(key: &str, body: &str) -> (Stack, u16) {
    let stack = Stack::start().await;
    let port = free_port();
    let (status, answer) = stack
        .put(
            "/frontends/web",
            &format!(r#"{{"bind":"127.0.0.1:{port}","backend":"{key}","mode":"http"}}"#),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = stack.put(&format!("/backends/{key}"), body).await;
    assert_eq!(status, 200, "{answer}");
    (stack, port)
}

/// Frontend `web` on `127.0.0.1:<proxy_port>` and dynamic backend `app` (service `app@1`,
/// checks every 100 ms) through the aqueduct API at `api`.
pub async fn configure_web_app(api: &str, proxy_port: u16) {
    for (path, body) in [
        (
            "/frontends/web",
            format!(r#"{{"bind":"127.0.0.1:{proxy_port}","backend":"app","mode":"http"}}"#),
        ),
        (
            "/backends/app",
            r#"{"type":"dynamic","name":"app","version":"1","health":{"interval":100}}"#.to_owned(),
        ),
    ] {
        let response = client()
            .put(format!("{api}{path}"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
}

/// Members of backend `app` whose status is `UP`, per the aqueduct API at `api` (0 when it
/// does not answer).
pub async fn app_members_up(api: &str) -> usize {
    let Ok(response) = client()
        .get(format!("{api}/backends/app/members"))
        .send()
        .await
    else {
        return 0;
    };
    let members: serde_json::Value = response.json().await.unwrap_or_default();
    members
        .as_array()
        .map_or(0, |m| m.iter().filter(|m| m["status"] == "UP").count())
}

/// Kills (by PID) every HAProxy of a run directory when dropped: for tests that orphan an
/// HAProxy on purpose (its aqueduct killed with `kill -9`), so a failing test leaks nothing.
pub struct KillHaproxiesOnDrop(pub PathBuf);

impl Drop for KillHaproxiesOnDrop {
    fn drop(&mut self) {
        for (pid, _) in haproxy_processes(&self.0) {
            signal(pid, "KILL");
        }
    }
}

/// splitmix64: a small, seedable generator, so a randomized test replays from its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// The seed in environment variable `var` (to replay a run), else one from the clock.
pub fn seed_from_env(var: &str) -> u64 {
    match std::env::var(var) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{var}={text:?} is not a u64")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}
