//! Real Redis for the registry cluster tests: `redis-server` and `redis-sentinel` processes
//! started by the test on loopback ports in a temp dir (killed by PID on drop), a TCP fault
//! proxy the test steers (pass, blackhole, reset, latency), and a raw keep-alive HTTP client
//! cheap enough to drive thousands of heartbeats a second from a debug build.

#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches start the real programs they measure"
)]
#![allow(dead_code)] // each test binary uses a different subset
#![allow(clippy::unwrap_used)] // a panic in the harness is a test failure

use crate::support::{eventually, free_port, require};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

pub const REDIS_HINT: &str = "apt-get install -y redis-server redis-sentinel";

/// Whether `redis-server` and `redis-sentinel` are installed (under CI a missing one fails).
pub fn require_redis() -> bool {
    require("redis-server", REDIS_HINT) && require("redis-sentinel", REDIS_HINT)
}

/// A `redis-server` (or `redis-sentinel`) child process.
pub struct RedisProcess {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    log: PathBuf,
}

impl RedisProcess {
    fn spawn(program: &str, config: &Path, port: u16, dir: &Path) -> RedisProcess {
        let log = dir.join(format!("{program}-{port}.log"));
        let mut command = match program {
            "redis-sentinel" => Command::new("redis-sentinel"),
            _ => Command::new("redis-server"),
        };
        let child = command
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {program}: {err} ({REDIS_HINT})"));
        RedisProcess {
            child: Some(child),
            port,
            dir: dir.to_owned(),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9`: no shutdown, no last AOF write.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn stop(&self) {
        signal(self.pid(), "STOP");
    }

    pub fn cont(&self) {
        signal(self.pid(), "CONT");
    }

    /// A connection for the test's own commands.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|err| panic!("cannot connect to redis on {}: {err}", self.port))
    }

    async fn wait_ready(&self) {
        let port = self.port;
        eventually(
            Duration::from_secs(10),
            "redis to accept connections",
            || async move {
                let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
                let mut connection = client.get_multiplexed_async_connection().await.ok()?;
                redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
                    .ok()
            },
        )
        .await;
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A stopped process cannot die of SIGTERM; SIGKILL always works.
            signal(child.id(), "CONT");
        }
        if std::thread::panicking() {
            eprintln!(
                "--- {} ---\n{}",
                self.log.display(),
                tail(&self.log_text(), 40)
            );
        }
        self.kill_9();
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn signal(pid: u32, sig: &str) {
    if pid == 0 {
        return;
    }
    // The shell's `kill` builtin (by PID, never by name).
    let _ = Command::new("sh")
        .args(["-c", "kill -s \"$0\" \"$1\"", sig, &pid.to_string()])
        .status();
}

/// A Redis primary, with optional replicas and Sentinels, in one temp dir.
pub struct RedisCluster {
    pub primary: RedisProcess,
    pub replicas: Vec<RedisProcess>,
    pub sentinels: Vec<RedisProcess>,
    _temp: tempfile::TempDir,
}

pub const MASTER_NAME: &str = "thalassa";

impl RedisCluster {
    /// One Redis, AOF every second (the production setting).
    pub async fn single() -> RedisCluster {
        let temp = tempfile::tempdir().unwrap();
        let primary = start_server(temp.path(), "primary", None).await;
        RedisCluster {
            primary,
            replicas: Vec::new(),
            sentinels: Vec::new(),
            _temp: temp,
        }
    }

    /// A primary, one replica and three Sentinels (quorum 2, primary down after 1 s).
    pub async fn with_sentinels() -> RedisCluster {
        let temp = tempfile::tempdir().unwrap();
        let primary = start_server(temp.path(), "primary", None).await;
        let replica = start_server(temp.path(), "replica", Some(primary.port)).await;
        let mut sentinels = Vec::new();
        for n in 0..3 {
            let port = free_port();
            let dir = temp.path().join(format!("sentinel-{n}"));
            std::fs::create_dir_all(&dir).unwrap();
            let config = dir.join("sentinel.conf");
            std::fs::write(
                &config,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {log}\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {primary} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 10000\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n",
                    dir = dir.display(),
                    log = dir.join(format!("redis-sentinel-{port}.log")).display(),
                    primary = primary.port,
                ),
            )
            .unwrap();
            let sentinel = RedisProcess::spawn("redis-sentinel", &config, port, &dir);
            sentinel.wait_ready().await;
            sentinels.push(sentinel);
        }
        let cluster = RedisCluster {
            primary,
            replicas: vec![replica],
            sentinels,
            _temp: temp,
        };
        cluster.wait_replicated().await;
        cluster
    }

    /// `redis+sentinel://...` for the registry nodes.
    pub fn sentinel_url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", hosts.join(","))
    }

    /// Waits until the replica is in sync with the primary.
    pub async fn wait_replicated(&self) {
        let replica = &self.replicas[0];
        eventually(Duration::from_secs(20), "the replica to sync", || async {
            let mut connection = replica.connection().await;
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut connection)
                .await
                .ok()?;
            info.contains("master_link_status:up").then_some(())
        })
        .await;
    }

    /// The primary's port as a Sentinel names it.
    pub async fn primary_port_by_sentinel(&self) -> Option<u16> {
        for sentinel in &self.sentinels {
            let client =
                redis::Client::open(format!("redis://127.0.0.1:{}/", sentinel.port)).ok()?;
            let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
                continue;
            };
            let reply: Option<(String, u16)> = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(MASTER_NAME)
                .query_async(&mut connection)
                .await
                .ok()?;
            if let Some((_, port)) = reply {
                return Some(port);
            }
        }
        None
    }
}

async fn start_server(root: &Path, name: &str, replica_of: Option<u16>) -> RedisProcess {
    let port = free_port();
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("redis.conf");
    let mut text = format!(
        "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {log}\nsave \"\"\nappendonly yes\n\
         appendfsync everysec\nprotected-mode no\n",
        dir = dir.display(),
        log = dir.join(format!("redis-server-{port}.log")).display(),
    );
    if let Some(primary) = replica_of {
        text.push_str(&format!("replicaof 127.0.0.1 {primary}\n"));
    }
    std::fs::write(&config, text).unwrap();
    let server = RedisProcess::spawn("redis-server", &config, port, &dir);
    server.wait_ready().await;
    server
}

/// How the fault proxy treats traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwards everything.
    Pass = 0,
    /// Holds every byte in both directions (a cut network: nothing answers, nothing errors);
    /// what was held is delivered after healing, as TCP retransmission would.
    Blackhole = 1,
    /// Closes every connection and every new one at once.
    Reset = 2,
    /// Delays each chunk by [`FaultProxy::set_latency`].
    Latency = 3,
}

/// A TCP proxy on loopback between a registry node and Redis, steered by the test.
pub struct FaultProxy {
    pub port: u16,
    mode: Arc<AtomicU8>,
    latency_ms: Arc<AtomicU64>,
    /// Bumped by `Reset`: connections of an older generation close.
    generation: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(target_port: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(Fault::Pass as u8));
        let latency_ms = Arc::new(AtomicU64::new(0));
        let generation = Arc::new(AtomicU64::new(0));
        let (m, l, g) = (mode.clone(), latency_ms.clone(), generation.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if m.load(Ordering::SeqCst) == Fault::Reset as u8 {
                    drop(client);
                    continue;
                }
                let (m, l, g) = (m.clone(), l.clone(), g.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)).await else {
                        return;
                    };
                    let born = g.load(Ordering::SeqCst);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::select! {
                        _ = pump(client_read, server_write, &m, &l, &g, born) => {}
                        _ = pump(server_read, client_write, &m, &l, &g, born) => {}
                    }
                });
            }
        });
        FaultProxy {
            port,
            mode,
            latency_ms,
            generation,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, fault: Fault) {
        if fault == Fault::Reset {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        self.mode.store(fault as u8, Ordering::SeqCst);
    }

    pub fn set_latency(&self, latency: Duration) {
        self.latency_ms
            .store(latency.as_millis() as u64, Ordering::SeqCst);
        self.set(Fault::Latency);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: &AtomicU8,
    latency_ms: &AtomicU64,
    generation: &AtomicU64,
    born: u64,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = wait_reset(generation, born) => return,
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        loop {
            if generation.load(Ordering::SeqCst) != born {
                return;
            }
            match mode.load(Ordering::SeqCst) {
                m if m == Fault::Blackhole as u8 => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                m if m == Fault::Latency as u8 => {
                    let delay = latency_ms.load(Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    break;
                }
                _ => break,
            }
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

async fn wait_reset(generation: &AtomicU64, born: u64) {
    while generation.load(Ordering::SeqCst) == born {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A keep-alive HTTP/1.1 connection with a hand-written request and response reader: cheap
/// enough (even in a debug build) to send thousands of heartbeats a second.
pub struct RawHttp {
    port: u16,
    stream: Option<BufReader<TcpStream>>,
}

impl RawHttp {
    pub fn new(port: u16) -> RawHttp {
        RawHttp { port, stream: None }
    }

    /// Sends one request; returns the status (0 when the connection failed).
    pub async fn request(&mut self, method: &str, path: &str, body: &str) -> u16 {
        for _ in 0..2 {
            if self.stream.is_none() {
                match tokio::time::timeout(
                    Duration::from_secs(2),
                    TcpStream::connect(("127.0.0.1", self.port)),
                )
                .await
                {
                    Ok(Ok(stream)) => {
                        let _ = stream.set_nodelay(true);
                        self.stream = Some(BufReader::new(stream));
                    }
                    _ => return 0,
                }
            }
            let request = format!(
                "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            match tokio::time::timeout(Duration::from_secs(5), self.exchange(&request)).await {
                Ok(Some(status)) => return status,
                // A closed keep-alive connection: one retry on a fresh one.
                _ => self.stream = None,
            }
        }
        0
    }

    async fn exchange(&mut self, request: &str) -> Option<u16> {
        let stream = self.stream.as_mut()?;
        stream.get_mut().write_all(request.as_bytes()).await.ok()?;
        let mut line = String::new();
        if stream.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let status: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
        let mut length = 0usize;
        loop {
            line.clear();
            if stream.read_line(&mut line).await.ok()? == 0 {
                return None;
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().ok()?;
            }
        }
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).await.ok()?;
        Some(status)
    }
}
