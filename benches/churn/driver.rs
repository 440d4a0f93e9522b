//! The churn driver: registrations, deletions, expiries and heartbeats against the registry's
//! HTTP API at a fixed pace. Per second at rate R with an expiry share s: R/2 joins (a share s
//! of them with a short lease, left to expire), R/2·(1-s) deletions, and so R/2·s expiries:
//! R membership changes in all, with the member count steady. Heartbeats (re-POSTs of an
//! unchanged registration, which must change nothing in HAProxy) come on top.

use super::members::{Lifetime, MemberTable, now_us};
use super::origins::Origins;
use super::stack::service_name;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Lease of lasting members: longer than any run.
const LASTING_LEASE_SECS: u64 = 3600;
/// Registry requests in flight at once (the starting set is registered in one burst).
const IN_FLIGHT: usize = 64;

/// Talks to the registry on behalf of members.
#[derive(Clone)]
pub struct Registrar {
    pub http: reqwest::Client,
    pub registry: String,
    pub table: Arc<Mutex<MemberTable>>,
    pub origins: Origins,
    pub counters: Arc<RegistrarCounters>,
    permits: Arc<Semaphore>,
    /// The measuring thread's runtime: requests are stamped and sent there.
    measure: tokio::runtime::Handle,
}

#[derive(Debug, Default)]
pub struct RegistrarCounters {
    pub joins: AtomicU64,
    pub deletes: AtomicU64,
    pub refreshes: AtomicU64,
    /// Requests the registry did not answer with 200.
    pub registry_errors: AtomicU64,
    /// Members whose listener could not be opened (not registered).
    pub listener_errors: AtomicU64,
}

impl Registrar {
    pub fn new(
        registry: String,
        table: Arc<Mutex<MemberTable>>,
        origins: Origins,
        measure: tokio::runtime::Handle,
    ) -> Result<Registrar, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(IN_FLIGHT)
            // As `thalassa register` does: an idle connection is dropped before the registry
            // closes it (`--header-read-timeout`), so a request never races that close. Without
            // it a connection pooled during the start-up burst and reused 10 s later failed
            // one churn_quick run ("1 registry errors", CI on 2026-12-07).
            .pool_idle_timeout(thalassa::registry::register::POOL_IDLE_TIMEOUT)
            .build()
            .map_err(|err| format!("http client: {err}"))?;
        Ok(Registrar {
            http,
            registry,
            table,
            origins,
            counters: Arc::default(),
            permits: Arc::new(Semaphore::new(IN_FLIGHT)),
            measure,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemberTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn url(&self, id: u32, backend: usize) -> String {
        let addr = self.origins.addr(id);
        format!(
            "{}/registrations/{}/1/{}/{}",
            self.registry,
            service_name(backend),
            addr.ip(),
            addr.port()
        )
    }

    /// A new member: opens its listener, then registers it. `lease` is `None` for lasting
    /// members.
    pub fn join(
        &self,
        backend: usize,
        lease: Option<Duration>,
        initial: bool,
    ) -> Option<JoinHandle<()>> {
        let lifetime = if lease.is_some() {
            Lifetime::Expiring
        } else {
            Lifetime::Lasting
        };
        let id = self.lock().allocate(backend, lifetime, initial);
        if self.origins.open(id).is_err() {
            self.counters
                .listener_errors
                .fetch_add(1, Ordering::Relaxed);
            self.lock().release(id);
            return None;
        }
        self.counters.joins.fetch_add(1, Ordering::Relaxed);
        let this = self.clone();
        Some(self.measure.spawn(async move {
            let Ok(_permit) = this.permits.acquire().await else {
                return;
            };
            let seconds = lease.map_or(LASTING_LEASE_SECS as f64, |l| l.as_secs_f64());
            let lease_us = lease.map(|l| u64::try_from(l.as_micros()).unwrap_or(u64::MAX));
            let url = this.url(id, backend);
            this.lock().registering(id, now_us(), lease_us);
            let acked = this.post(&url, seconds).await;
            this.lock().registered(id, acked);
        }))
    }

    /// Deletes a random lasting member; `None` when there is none.
    pub fn delete(&self, pick: u64) -> Option<JoinHandle<()>> {
        let (id, backend) = {
            let mut table = self.lock();
            let id = table.take_for_delete(pick)?;
            (id, table.get(id)?.backend)
        };
        self.counters.deletes.fetch_add(1, Ordering::Relaxed);
        let this = self.clone();
        Some(self.measure.spawn(async move {
            let Ok(_permit) = this.permits.acquire().await else {
                return;
            };
            let url = this.url(id, backend);
            this.lock().leaving(id, now_us());
            let answer = this.http.delete(&url).send().await;
            this.count_error(&url, "DELETE", &answer);
        }))
    }

    /// Heartbeats a random lasting member with its unchanged registration. The member cannot
    /// be deleted until the heartbeat is answered.
    pub fn refresh(&self, pick: u64) -> Option<JoinHandle<()>> {
        let (id, backend) = {
            let mut table = self.lock();
            let id = table.take_for_refresh(pick)?;
            (id, table.get(id)?.backend)
        };
        self.counters.refreshes.fetch_add(1, Ordering::Relaxed);
        let this = self.clone();
        Some(self.measure.spawn(async move {
            if let Ok(_permit) = this.permits.acquire().await {
                let url = this.url(id, backend);
                this.post(&url, LASTING_LEASE_SECS as f64).await;
            }
            this.lock().refreshed(id);
        }))
    }

    async fn post(&self, url: &str, seconds: f64) -> bool {
        let body = json!({"secondsToExpire": seconds});
        let answer = self.http.post(url).json(&body).send().await;
        self.count_error(url, "POST", &answer)
    }

    /// True when the registry answered 2xx; otherwise counts the error and says what it was
    /// (a smoke run that fails on registry errors then shows why).
    fn count_error(
        &self,
        url: &str,
        method: &str,
        answer: &Result<reqwest::Response, reqwest::Error>,
    ) -> bool {
        let failure = match answer {
            Ok(response) if response.status().is_success() => return true,
            Ok(response) => format!("answered {}", response.status()),
            Err(err) => format!("{err:?}"),
        };
        self.counters
            .registry_errors
            .fetch_add(1, Ordering::Relaxed);
        eprintln!("churn driver: {method} {url}: {failure}");
        false
    }
}

/// One churn phase.
#[derive(Debug, Clone)]
pub struct ChurnPlan {
    pub rate: f64,
    pub duration: Duration,
    pub backends: usize,
    pub expiry_share: f64,
    pub expiry_ttl: Duration,
    pub refresh_ratio: f64,
    pub seed: u64,
}

#[derive(Debug, Default, Clone)]
pub struct DriverStats {
    /// How late each operation started against its schedule, µs.
    pub lag_us: Vec<u32>,
    /// Delete slots that found no member to delete.
    pub skipped_deletes: u64,
}

/// A small deterministic generator (xorshift64*): runs are repeatable for a given seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Runs the plan to its end; requests still in flight are awaited.
pub async fn run(registrar: &Registrar, plan: &ChurnPlan) -> DriverStats {
    let mut rng = Rng::new(plan.seed);
    let mut stats = DriverStats::default();
    let period =
        |per_second: f64| (per_second > 0.0).then(|| Duration::from_secs_f64(1.0 / per_second));
    let join_every = period(plan.rate / 2.0);
    let delete_every = period(plan.rate / 2.0 * (1.0 - plan.expiry_share));
    let refresh_every = period(plan.rate * plan.refresh_ratio);
    let start = Instant::now();
    let end = start + plan.duration;
    // Offset the three schedules so they do not fire together.
    let mut next_join = join_every.map(|_| start);
    let mut next_delete = delete_every.map(|p| start + p / 2);
    let mut next_refresh = refresh_every.map(|p| start + p / 3);
    let mut in_flight: Vec<JoinHandle<()>> = Vec::new();
    while let Some(next) = [next_join, next_delete, next_refresh]
        .into_iter()
        .flatten()
        .min()
        .filter(|next| *next < end)
    {
        tokio::time::sleep_until(next).await;
        stats
            .lag_us
            .push(u32::try_from(next.elapsed().as_micros()).unwrap_or(u32::MAX));
        let handle = if Some(next) == next_join {
            next_join = next_join.zip(join_every).map(|(t, p)| t + p);
            let backend = (rng.next_u64() % plan.backends.max(1) as u64) as usize;
            let lease = (rng.unit() < plan.expiry_share).then_some(plan.expiry_ttl);
            registrar.join(backend, lease, false)
        } else if Some(next) == next_delete {
            next_delete = next_delete.zip(delete_every).map(|(t, p)| t + p);
            let handle = registrar.delete(rng.next_u64());
            if handle.is_none() {
                stats.skipped_deletes += 1;
            }
            handle
        } else {
            next_refresh = next_refresh.zip(refresh_every).map(|(t, p)| t + p);
            registrar.refresh(rng.next_u64())
        };
        in_flight.extend(handle);
        in_flight.retain(|h| !h.is_finished());
    }
    for handle in in_flight {
        let _ = handle.await;
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_repeatable_and_spread() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        let mut r = Rng::new(1);
        let mean = (0..10_000).map(|_| r.unit()).sum::<f64>() / 10_000.0;
        assert!((0.45..0.55).contains(&mean), "{mean}");
    }
}
