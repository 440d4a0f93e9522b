//! The member origins: one tiny HTTP/1.1 listener per member, on the member's own loopback
//! address and one port shared by all (127.1.0.1:P, 127.1.0.2:P, ...). Each records when it
//! last served a load request, which is how "no new requests after leaving" is checked at
//! the member itself. `GET /health` (HAProxy's check, HTTP/1.0) is answered and not counted.

use super::members::{Micros, member_ip, now_us};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

const LOAD_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";
const CHECK_RESPONSE: &[u8] =
    b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\nconnection: close\r\ncontent-type: text/plain\r\n\r\nok";
/// A request head larger than this is not from HAProxy: drop the connection.
const MAX_HEAD: usize = 16 * 1024;
/// How long an answered `Connection: close` request waits for the peer to close.
const LINGER: std::time::Duration = std::time::Duration::from_secs(5);

/// What one member's origin saw.
#[derive(Debug, Default)]
pub struct MemberCounters {
    /// Arrival of the last load request (0: none yet).
    pub last_load_us: AtomicU64,
    pub load_requests: AtomicU64,
}

#[derive(Debug, Default)]
pub struct OriginTotals {
    pub load_requests: AtomicU64,
    pub checks: AtomicU64,
    pub connections: AtomicU64,
}

/// Every member's listener; cheap to clone.
#[derive(Clone)]
pub struct Origins {
    port: u16,
    /// The runtime the origins serve on (the load's), whoever opens them.
    runtime: tokio::runtime::Handle,
    inner: Arc<Mutex<OriginsInner>>,
    pub totals: Arc<OriginTotals>,
}

#[derive(Default)]
struct OriginsInner {
    listeners: HashMap<u32, JoinHandle<()>>,
    counters: HashMap<u32, Arc<MemberCounters>>,
}

impl Origins {
    /// Finds the shared port: whatever the OS gives the first member address. Origins are
    /// served on the calling runtime.
    pub fn new() -> std::io::Result<Origins> {
        let probe = std::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(member_ip(0)), 0))?;
        let port = probe.local_addr()?.port();
        drop(probe);
        Ok(Origins {
            port,
            runtime: tokio::runtime::Handle::current(),
            inner: Arc::default(),
            totals: Arc::default(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self, id: u32) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(member_ip(id)), self.port)
    }

    /// Starts member `id`'s listener.
    pub fn open(&self, id: u32) -> std::io::Result<()> {
        let _runtime = self.runtime.enter();
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(self.addr(id))?;
        let listener = socket.listen(1024)?;
        let counters = Arc::new(MemberCounters::default());
        let totals = self.totals.clone();
        let task = self
            .runtime
            .spawn(accept_loop(listener, counters.clone(), totals));
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.counters.insert(id, counters);
        if let Some(previous) = inner.listeners.insert(id, task) {
            previous.abort();
        }
        Ok(())
    }

    /// Stops accepting for member `id`; connections already open finish on their own.
    pub fn close(&self, id: u32) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(task) = inner.listeners.remove(&id) {
            task.abort();
        }
    }

    pub fn close_all(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for (_, task) in inner.listeners.drain() {
            task.abort();
        }
    }

    /// When member `id` last served a load request, if ever.
    pub fn last_load(&self, id: u32) -> Option<Micros> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let at = inner
            .counters
            .get(&id)?
            .last_load_us
            .load(Ordering::Relaxed);
        (at > 0).then_some(at)
    }
}

async fn accept_loop(
    listener: TcpListener,
    counters: Arc<MemberCounters>,
    totals: Arc<OriginTotals>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                totals.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve(stream, counters.clone(), totals.clone()));
            }
            // Out of file descriptors or similar: back off instead of spinning.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
}

/// Answers requests on one connection until the peer closes or asks to. HAProxy sends no
/// request bodies here (GET only), so a request is its head.
async fn serve(mut stream: TcpStream, counters: Arc<MemberCounters>, totals: Arc<OriginTotals>) {
    let _ = stream.set_nodelay(true);
    let mut buffer: Vec<u8> = Vec::with_capacity(1024);
    loop {
        while let Some(end) = find(&buffer, b"\r\n\r\n") {
            let request = Request::parse(&buffer[..end]);
            buffer.drain(..end + 4);
            let response = if request.is_check {
                totals.checks.fetch_add(1, Ordering::Relaxed);
                CHECK_RESPONSE
            } else {
                counters.last_load_us.fetch_max(now_us(), Ordering::Relaxed);
                counters.load_requests.fetch_add(1, Ordering::Relaxed);
                totals.load_requests.fetch_add(1, Ordering::Relaxed);
                LOAD_RESPONSE
            };
            if stream.write_all(response).await.is_err() {
                return;
            }
            if request.is_check || request.close {
                // Let the peer close first: the side that closes first keeps the TIME_WAIT,
                // and only the connecting side (HAProxy) can avoid reusing that port for
                // its next connection here; a SYN that lands on our TIME_WAIT costs a 1 s
                // retransmission.
                let _ = tokio::time::timeout(LINGER, drain(&mut stream)).await;
                return;
            }
        }
        if buffer.len() > MAX_HEAD {
            return;
        }
        match stream.read_buf(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Reads and discards until the peer closes.
async fn drain(stream: &mut TcpStream) {
    let mut sink = [0u8; 512];
    while let Ok(n) = stream.read(&mut sink).await {
        if n == 0 {
            return;
        }
    }
}

struct Request {
    is_check: bool,
    /// HTTP/1.0, or `Connection: close`.
    close: bool,
}

impl Request {
    fn parse(head: &[u8]) -> Request {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split("\r\n");
        let request_line = lines.next().unwrap_or("");
        let is_check = request_line.starts_with("GET /health ");
        let http10 = request_line.ends_with("HTTP/1.0");
        let close = http10
            || lines.any(|line| {
                line.split_once(':').is_some_and(|(name, value)| {
                    name.trim().eq_ignore_ascii_case("connection")
                        && value.trim().eq_ignore_ascii_case("close")
                })
            });
        Request { is_check, close }
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(head: &str, is_check: bool, close: bool) {
        let request = Request::parse(head.as_bytes());
        assert_eq!(
            (request.is_check, request.close),
            (is_check, close),
            "{head}"
        );
    }

    #[test]
    fn requests() {
        check("GET /health HTTP/1.0", true, true);
        check("GET /load HTTP/1.1\r\nhost: churn", false, false);
        check("GET /load HTTP/1.1\r\nConnection: close", false, true);
        check("GET /load HTTP/1.0", false, true);
    }
}
