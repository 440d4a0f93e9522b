//! [`Link`]: the node's connection to the store's current primary. It finds the primary
//! (directly, or by asking Sentinel), keeps one multiplexed connection to it for ordinary
//! commands, and replaces that connection when it breaks, when the server says it is a
//! replica (`READONLY`, after a failover) or when Sentinel names another primary. redis-rs
//! resolves a Sentinel primary only when it connects, so that re-resolution is ours.
//!
//! Every command has a deadline ([`RESPONSE_TIMEOUT`]): a store that does not answer costs a
//! request at most that long, and the API then answers 503. Blocking commands (`XREAD
//! BLOCK`, `WAIT`) never share the multiplexed connection: they would hold up every command
//! behind them; [`Link::dedicated`] opens a separate one.

use super::url::StoreUrl;
use crate::registry::clock::now_ms;
use crate::registry::store::StoreError;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Longest wait for a reply: a write the store cannot take is answered 503 well within 500 ms.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(350);
/// Longest wait to open a connection (a blackholed address must not hold up the keeper).
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
/// How often the keeper checks the primary (PING, and Sentinel's view of who it is).
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// A node that has not heard from the store for this long serves reads as stale.
pub const STALE_AFTER_MS: u64 = 500;

/// One primary connection, numbered so users can tell it was replaced.
#[derive(Clone)]
struct Current {
    connection: MultiplexedConnection,
    address: String,
    generation: u64,
}

pub struct Link {
    url: StoreUrl,
    /// The Functions library (Lua source) this link's users call, loaded on every new
    /// primary connection.
    library: &'static str,
    current: Mutex<Option<Current>>,
    /// Incremented on every new primary connection.
    generation: AtomicU64,
    /// Epoch ms of the last reply from the store (any command).
    last_reply_ms: AtomicU64,
    /// Store clock minus local clock (ms), measured with `TIME`.
    clock_offset_ms: AtomicI64,
    /// Wakes the keeper to reconnect at once.
    broken: Notify,
    /// Wakes waiters when a new connection is up.
    connected: Notify,
    pub(super) metrics: super::metrics::StoreMetrics,
}

impl Link {
    pub fn new(url: StoreUrl, library: &'static str) -> Arc<Link> {
        Arc::new(Link {
            url,
            library,
            current: Mutex::new(None),
            generation: AtomicU64::new(0),
            last_reply_ms: AtomicU64::new(0),
            clock_offset_ms: AtomicI64::new(0),
            broken: Notify::new(),
            connected: Notify::new(),
            metrics: super::metrics::StoreMetrics::default(),
        })
    }

    pub fn url(&self) -> &StoreUrl {
        &self.url
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current connection, or `Unreachable` at once when there is none.
    pub fn connection(&self) -> Result<(MultiplexedConnection, u64), StoreError> {
        match &*self.lock() {
            Some(current) => Ok((current.connection.clone(), current.generation)),
            None => Err(StoreError::Unreachable(
                "no connection to the store's primary".into(),
            )),
        }
    }

    /// Waits up to `limit` for a connection (startup).
    pub async fn wait_connected(&self, limit: Duration) -> Result<(), StoreError> {
        let deadline = Instant::now() + limit;
        loop {
            let notified = self.connected.notified();
            if self.lock().is_some() {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline.into(), notified)
                .await
                .is_err()
            {
                return Err(StoreError::Unreachable(format!(
                    "no primary reachable at {} within {} s",
                    self.url,
                    limit.as_secs()
                )));
            }
        }
    }

    /// Generation of the current connection (0 before the first).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Records a reply (the store is in touch).
    pub fn replied(&self) {
        self.last_reply_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Milliseconds since the store last answered, when that is long enough to call the
    /// node's view stale.
    pub fn stale_ms(&self) -> Option<u64> {
        let last = self.last_reply_ms.load(Ordering::Relaxed);
        let age = now_ms().saturating_sub(last);
        let disconnected = self.lock().is_none();
        (disconnected || age > STALE_AFTER_MS).then_some(age)
    }

    /// The store's clock now (epoch ms), from the local clock and the measured offset.
    pub fn store_now_ms(&self) -> u64 {
        let offset = self.clock_offset_ms.load(Ordering::Relaxed);
        now_ms().saturating_add_signed(offset)
    }

    /// Turns a command's failure into a [`StoreError`], dropping the connection when it is
    /// broken or no longer the primary's.
    pub fn failed(&self, generation: u64, err: redis::RedisError) -> StoreError {
        self.metrics.errors.inc(&[error_kind(&err)]);
        let replace = err.is_io_error()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.code() == Some("READONLY")
            // A timeout alone may be a busy store; a connection that has been silent for a
            // while is treated as gone (a blackholed network answers nothing, ever).
            || (err.is_timeout()
                && now_ms().saturating_sub(self.last_reply_ms.load(Ordering::Relaxed))
                    > RESPONSE_TIMEOUT.as_millis() as u64);
        if replace {
            self.drop_connection(generation);
        }
        if err.is_timeout() {
            StoreError::Unreachable(format!(
                "the store did not answer within {} ms",
                RESPONSE_TIMEOUT.as_millis()
            ))
        } else {
            StoreError::Unreachable(err.to_string())
        }
    }

    fn drop_connection(&self, generation: u64) {
        let mut current = self.lock();
        if current.as_ref().is_some_and(|c| c.generation == generation) {
            tracing::warn!(address = %current.as_ref().map(|c| c.address.clone()).unwrap_or_default(), "lost the store's primary: reconnecting");
            *current = None;
            drop(current);
            self.broken.notify_one();
        }
    }

    /// A separate connection to the current primary for a blocking command, with its own
    /// response deadline.
    pub async fn dedicated(
        &self,
        response_timeout: Duration,
    ) -> Result<MultiplexedConnection, StoreError> {
        let address = match &*self.lock() {
            Some(current) => current.address.clone(),
            None => {
                return Err(StoreError::Unreachable(
                    "no connection to the store's primary".into(),
                ));
            }
        };
        open(&address, self.url.db(), response_timeout)
            .await
            .map_err(|err| StoreError::Unreachable(err.to_string()))
    }

    /// Keeps a connection to the primary until `closing`: connects (with backoff), checks it
    /// every [`CHECK_EVERY`], and follows Sentinel to a new primary.
    pub async fn keep(self: Arc<Self>, closing: CancellationToken) {
        let mut backoff = Duration::from_millis(50);
        loop {
            if closing.is_cancelled() {
                return;
            }
            let connected = self.lock().clone();
            match connected {
                None => match self.connect().await {
                    Ok(()) => backoff = Duration::from_millis(50),
                    Err(err) => {
                        tracing::debug!(error = %err, "cannot reach the store's primary yet");
                        tokio::select! {
                            _ = closing.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_millis(500));
                        continue;
                    }
                },
                Some(current) => self.check(current).await,
            }
            tokio::select! {
                _ = closing.cancelled() => return,
                _ = self.broken.notified() => {}
                _ = tokio::time::sleep(CHECK_EVERY) => {}
            }
        }
    }

    /// PINGs the primary (measuring the clock offset) and, with Sentinel, asks who the primary
    /// is now; replaces the connection when it moved.
    async fn check(&self, current: Current) {
        let mut connection = current.connection.clone();
        let sent = now_ms();
        let time: Result<(u64, u64), _> = redis::cmd("TIME").query_async(&mut connection).await;
        match time {
            Ok((secs, micros)) => {
                let received = now_ms();
                self.replied();
                let store_ms = secs * 1000 + micros / 1000;
                let local_mid = sent + received.saturating_sub(sent) / 2;
                self.clock_offset_ms
                    .store(store_ms as i64 - local_mid as i64, Ordering::Relaxed);
            }
            Err(err) => {
                let _ = self.failed(current.generation, err);
                return;
            }
        }
        if let StoreUrl::Sentinel { .. } = &self.url
            && let Ok(address) = self.resolve().await
            && address != current.address
        {
            tracing::warn!(from = %current.address, to = %address, "Sentinel names a new primary: switching");
            self.drop_connection(current.generation);
        }
    }

    async fn connect(&self) -> Result<(), StoreError> {
        let address = self.resolve().await?;
        let mut connection = open(&address, self.url.db(), RESPONSE_TIMEOUT)
            .await
            .map_err(|err| StoreError::Unreachable(format!("{address}: {err}")))?;
        // A replica answers reads but refuses writes: only a primary will do.
        let role: redis::Value = redis::cmd("ROLE")
            .query_async(&mut connection)
            .await
            .map_err(|err| StoreError::Unreachable(format!("{address}: ROLE: {err}")))?;
        if !is_primary(&role) {
            return Err(StoreError::Unreachable(format!(
                "{address} is not a primary"
            )));
        }
        super::functions::load(&mut connection, self.library).await?;
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        tracing::info!(%address, generation, "connected to the store's primary");
        *self.lock() = Some(Current {
            connection,
            address,
            generation,
        });
        self.replied();
        self.connected.notify_waiters();
        Ok(())
    }

    /// The primary's `host:port`.
    async fn resolve(&self) -> Result<String, StoreError> {
        match &self.url {
            StoreUrl::Direct { host, port, .. } => Ok(address(host, *port)),
            StoreUrl::Sentinel {
                sentinels, master, ..
            } => {
                let mut last_error = String::from("no sentinel configured");
                for (host, port) in sentinels {
                    let sentinel = address(host, *port);
                    match ask_sentinel(&sentinel, master).await {
                        Ok(found) => return Ok(found),
                        Err(err) => last_error = format!("{sentinel}: {err}"),
                    }
                }
                Err(StoreError::Unreachable(format!(
                    "no sentinel named the primary of {master:?}: {last_error}"
                )))
            }
        }
    }
}

fn address(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

async fn open(
    address: &str,
    db: u32,
    response_timeout: Duration,
) -> redis::RedisResult<MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{address}/{db}"))?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(response_timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

async fn ask_sentinel(sentinel: &str, master: &str) -> Result<String, String> {
    let client = redis::Client::open(format!("redis://{sentinel}/")).map_err(|e| e.to_string())?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| e.to_string())?;
    let reply: Option<(String, u16)> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(master)
        .query_async(&mut connection)
        .await
        .map_err(|e| e.to_string())?;
    let (host, port) = reply.ok_or_else(|| format!("does not know {master:?}"))?;
    Ok(address(&host, port))
}

fn is_primary(role: &redis::Value) -> bool {
    match role {
        redis::Value::Array(items) => matches!(
            items.first(),
            Some(redis::Value::BulkString(kind)) if kind.as_slice() == b"master"
        ),
        _ => false,
    }
}

fn error_kind(err: &redis::RedisError) -> &'static str {
    if err.is_timeout() {
        "timeout"
    } else if err.code() == Some("READONLY") {
        "readonly"
    } else if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() {
        "connection"
    } else {
        "reply"
    }
}
