//! The load generator: paced HTTP/1.1 requests through HAProxy's frontends, from keep-alive
//! connections (a request written on a connection HAProxy closed is a failure, as wrk counts
//! it) and from connection-per-request clients (a new connection for each request, closed by
//! the client after the response). Every request ends as exactly one of: ok
//! (2xx), non-2xx, reset (ECONNRESET/EPIPE) or failed (refused, closed early, timed out).

use super::origins::find;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Both kinds send the same request: a connection-per-request client closes the connection
/// itself after the response, so the TIME_WAIT stays with the side that picks the ports (a
/// SYN landing on HAProxy's TIME_WAIT for a reused port would cost a 1 s retransmission,
/// an artifact of one client address on loopback).
const REQUEST: &[u8] = b"GET /load HTTP/1.1\r\nhost: churn\r\n\r\n";
/// Error texts kept per kind, for diagnosis.
const KEEP_ERRORS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionKind {
    KeepAlive,
    Close,
}

impl ConnectionKind {
    pub fn label(self) -> &'static str {
        match self {
            ConnectionKind::KeepAlive => "keep-alive",
            ConnectionKind::Close => "close",
        }
    }
}

/// Cumulative counters of one connection kind.
#[derive(Debug, Default)]
pub struct Tally {
    pub ok: AtomicU64,
    pub non_2xx: AtomicU64,
    pub reset: AtomicU64,
    pub failed: AtomicU64,
    /// Latencies (µs) of requests answered while recording.
    latencies: Mutex<Vec<u32>>,
    errors: Mutex<Vec<String>>,
}

/// Counters at one moment; subtract two to get a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests completed one way or another (a request in flight at either edge of a window
    /// counts where it ends).
    pub sent: u64,
    pub ok: u64,
    pub non_2xx: u64,
    pub reset: u64,
    pub failed: u64,
}

impl Counts {
    pub fn since(self, start: Counts) -> Counts {
        Counts {
            sent: self.sent - start.sent,
            ok: self.ok - start.ok,
            non_2xx: self.non_2xx - start.non_2xx,
            reset: self.reset - start.reset,
            failed: self.failed - start.failed,
        }
    }
}

impl Tally {
    fn counts(&self) -> Counts {
        let ok = self.ok.load(Ordering::Relaxed);
        let non_2xx = self.non_2xx.load(Ordering::Relaxed);
        let reset = self.reset.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        Counts {
            sent: ok + non_2xx + reset + failed,
            ok,
            non_2xx,
            reset,
            failed,
        }
    }

    fn error(&self, text: String) {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if errors.len() < KEEP_ERRORS {
            errors.push(text);
        }
    }
}

pub struct Load {
    stop: Arc<AtomicBool>,
    recording: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub kinds: Vec<(ConnectionKind, Arc<Tally>)>,
}

impl Load {
    /// Starts `connections` paced clients sharing `rate` requests/s, spread over `frontends`.
    pub fn start(
        frontends: &[SocketAddr],
        kinds: &[ConnectionKind],
        rate: f64,
        connections: usize,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let recording = Arc::new(AtomicBool::new(false));
        let tallies: Vec<(ConnectionKind, Arc<Tally>)> = kinds
            .iter()
            .map(|kind| (*kind, Arc::new(Tally::default())))
            .collect();
        let connections = connections.max(kinds.len());
        let period = Duration::from_secs_f64(connections as f64 / rate);
        let mut tasks = Vec::with_capacity(connections);
        for index in 0..connections {
            let (kind, tally) = tallies[index % tallies.len()].clone();
            let frontend = frontends[index % frontends.len()];
            // Spread the first requests over one period so the clients do not move in step.
            let first = Instant::now() + period.mul_f64(index as f64 / connections as f64);
            tasks.push(tokio::spawn(client(
                kind,
                frontend,
                first,
                period,
                tally,
                stop.clone(),
                recording.clone(),
            )));
        }
        Load {
            stop,
            recording,
            tasks,
            kinds: tallies,
        }
    }

    pub fn counts(&self) -> Vec<(ConnectionKind, Counts)> {
        self.kinds.iter().map(|(k, t)| (*k, t.counts())).collect()
    }

    /// Latencies are kept only between `record(true)` and `record(false)`.
    pub fn record(&self, on: bool) {
        self.recording.store(on, Ordering::Relaxed);
    }

    pub fn latencies(&self) -> Vec<(ConnectionKind, Vec<u32>)> {
        self.kinds
            .iter()
            .map(|(k, t)| {
                (
                    *k,
                    std::mem::take(&mut *t.latencies.lock().unwrap_or_else(|p| p.into_inner())),
                )
            })
            .collect()
    }

    pub fn errors(&self) -> Vec<String> {
        self.kinds
            .iter()
            .flat_map(|(k, t)| {
                t.errors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .map(|e| format!("{}: {e}", k.label()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn client(
    kind: ConnectionKind,
    frontend: SocketAddr,
    first: Instant,
    period: Duration,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    recording: Arc<AtomicBool>,
) {
    let mut connection: Option<TcpStream> = None;
    let mut buffer = Vec::with_capacity(1024);
    let mut next = first;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep_until(next).await;
        next += period;
        // Fell far behind (a stalled machine): start afresh rather than send a burst.
        let now = Instant::now();
        if next + period * 10 < now {
            next = now;
        }
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            REQUEST_TIMEOUT,
            exchange(frontend, &mut connection, &mut buffer),
        )
        .await
        .unwrap_or_else(|_| Err(Failure::Failed("timed out".to_owned())));
        match outcome {
            Ok(Response { status, keep_alive }) => {
                if (200..300).contains(&status) {
                    tally.ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    tally.non_2xx.fetch_add(1, Ordering::Relaxed);
                    tally.error(format!("status {status}"));
                }
                if recording.load(Ordering::Relaxed) {
                    let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
                    tally
                        .latencies
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(micros);
                }
                if !keep_alive || kind == ConnectionKind::Close {
                    connection = None;
                }
            }
            Err(Failure::Reset(text)) => {
                tally.reset.fetch_add(1, Ordering::Relaxed);
                tally.error(text);
                connection = None;
            }
            Err(Failure::Failed(text)) => {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                tally.error(text);
                connection = None;
            }
        }
    }
}

struct Response {
    status: u16,
    keep_alive: bool,
}

enum Failure {
    Reset(String),
    Failed(String),
}

fn classify(what: &str, err: std::io::Error) -> Failure {
    use std::io::ErrorKind;
    match err.kind() {
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            Failure::Reset(format!("{what}: {err}"))
        }
        _ => Failure::Failed(format!("{what}: {err}")),
    }
}

async fn exchange(
    frontend: SocketAddr,
    connection: &mut Option<TcpStream>,
    buffer: &mut Vec<u8>,
) -> Result<Response, Failure> {
    let stream = match connection {
        Some(stream) => stream,
        None => {
            let stream = TcpStream::connect(frontend)
                .await
                .map_err(|err| classify("connect", err))?;
            let _ = stream.set_nodelay(true);
            connection.insert(stream)
        }
    };
    stream
        .write_all(REQUEST)
        .await
        .map_err(|err| classify("write", err))?;
    buffer.clear();
    loop {
        match parse_response(buffer) {
            Parsed::Complete(response) => return Ok(response),
            Parsed::Invalid(why) => return Err(Failure::Failed(why)),
            Parsed::Incomplete => {}
        }
        let read = stream
            .read_buf(buffer)
            .await
            .map_err(|err| classify("read", err))?;
        if read == 0 {
            // A response without a length ends at EOF (HAProxy's own error pages may).
            if let Some(response) = until_eof(buffer) {
                return Ok(response);
            }
            return Err(Failure::Failed(
                "read: connection closed before a complete response".to_owned(),
            ));
        }
    }
}

enum Parsed {
    Complete(Response),
    Incomplete,
    Invalid(String),
}

struct Head {
    status: u16,
    length: Option<usize>,
    keep_alive: bool,
    body_start: usize,
}

fn parse_head(buffer: &[u8]) -> Result<Option<Head>, String> {
    let Some(end) = find(buffer, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buffer[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut length = None;
    let mut keep_alive = status_line.starts_with("HTTP/1.1");
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("connection") {
            keep_alive = !value.eq_ignore_ascii_case("close");
        }
    }
    Ok(Some(Head {
        status,
        length,
        keep_alive,
        body_start: end + 4,
    }))
}

fn parse_response(buffer: &[u8]) -> Parsed {
    match parse_head(buffer) {
        Err(why) => Parsed::Invalid(why),
        Ok(None) => Parsed::Incomplete,
        Ok(Some(head)) => match head.length {
            Some(length) if buffer.len() >= head.body_start + length => {
                Parsed::Complete(Response {
                    status: head.status,
                    keep_alive: head.keep_alive,
                })
            }
            _ => Parsed::Incomplete,
        },
    }
}

fn until_eof(buffer: &[u8]) -> Option<Response> {
    match parse_head(buffer) {
        Ok(Some(head)) if head.length.is_none() => Some(Response {
            status: head.status,
            keep_alive: false,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(response: &str, expected: Option<(u16, bool)>) {
        let got = match parse_response(response.as_bytes()) {
            Parsed::Complete(r) => Some((r.status, r.keep_alive)),
            _ => None,
        };
        assert_eq!(got, expected, "{response:?}");
    }

    #[test]
    fn responses() {
        check(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            Some((200, true)),
        );
        check("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\no", None);
        check(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            Some((503, false)),
        );
        check(
            "HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n",
            Some((200, false)),
        );
        check("HTTP/1.1 200 OK\r\n", None);
        assert!(until_eof(b"HTTP/1.1 503 x\r\n\r\nbody").is_some());
    }
}
