//! The observer: reads HAProxy's `show servers state` over the admin socket and stamps, per
//! member, when it was first present, first serving, drained (no new requests: drain,
//! maintenance, down or absent) and gone. Timestamps are taken when the answer arrives, so
//! every latency derived from them is an upper bound, late by at most one poll interval plus
//! the poll's own duration.
//!
//! Dumping every server is not free for HAProxy (about 1 ms of its CPU per 2,000 servers; at
//! 200 polls/s that is a fifth of a core taken from the system under test). So polls are in
//! two tiers: every `interval`, only the backends with a member waiting to be drained (the
//! latency that needs precision); every `full_interval`, all of them (serving, removal,
//! anomalies, closing departed members' listeners). And the observer spends at most
//! a third of its time polling.
//!
//! Appearance needs the finest resolution (it is the latency the design promises in
//! milliseconds), so it has a third, much cheaper tier: every `PROBE_INTERVAL`, one
//! `get weight <backend>/<server>` per member waiting to appear (a few dozen bytes each, instead
//! of dumping a hundred servers per backend). The probes run in a task of their own: a dump
//! takes 5-30 ms on a loaded machine, and a probe waiting behind it would add that to the
//! measured latency.

#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches start the real programs they measure"
)]

use super::members::{MemberTable, Micros, member_id, member_ip, now_us};
use super::origins::Origins;
use super::stack::backend_key;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thalassa::haproxy::stat::{AdminState, ServerStateRow, parse_servers_state};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// A departed member's listener closes once it has been gone this long: by then no reload
/// rendered before its departure can bring it back.
const RELEASE_AFTER_US: Micros = 2_000_000;
const POLL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often members waiting to appear are probed.
const PROBE_INTERVAL: Duration = Duration::from_millis(2);
/// Probes per exchange: keeps the command line far below HAProxy's 16 KiB buffer.
const PROBES_PER_EXCHANGE: usize = 100;

#[derive(Debug, Default, Clone)]
pub struct ObserverStats {
    pub polls: u64,
    pub full_polls: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    /// Duration of each poll (connect, request, reply, parse), µs.
    pub poll_us: Vec<u32>,
    /// Duration of each appearance probe exchange, µs: how late a "present" stamp can be
    /// beyond the probe interval.
    pub probe_us: Vec<u32>,
    /// Servers dumped, all polls together (what the observer cost HAProxy).
    pub servers_dumped: u64,
}

pub struct Observer {
    /// HAProxy's admin socket. Each poll opens a new connection, so after a reload it
    /// reaches the new worker.
    pub socket: PathBuf,
    pub interval: Duration,
    pub full_interval: Duration,
    pub table: Arc<Mutex<MemberTable>>,
    pub origins: Origins,
    /// The measuring thread's runtime, where the probes run.
    pub measure: tokio::runtime::Handle,
    /// Probes on one lasting connection: cheaper and quicker for HAProxy than a connection
    /// per probe. Only where nothing reloads (runtime mode): a lasting connection would keep
    /// asking the old worker after a reload. `None`: a new connection per probe.
    pub probe_connection: Option<thalassa::haproxy::runtime::RuntimeClient>,
}

impl Observer {
    pub fn spawn(self, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<ObserverStats> {
        let this = Arc::new(self);
        let prober = this.measure.spawn(this.clone().probe(stop.clone()));
        tokio::spawn(async move {
            let mut stats = this.run(stop).await;
            if let Ok((probe_us, error)) = prober.await {
                stats.probe_us = probe_us;
                if let Some(err) = error {
                    stats.errors += 1;
                    stats.last_error = Some(err);
                }
            }
            stats
        })
    }

    /// Probes members waiting to appear every `PROBE_INTERVAL` until `stop`; the duration
    /// of each probe that asked anything (µs), and the last error, if any.
    async fn probe(self: Arc<Self>, stop: Arc<AtomicBool>) -> (Vec<u32>, Option<String>) {
        let (mut durations, mut last) = (Vec::new(), None);
        while !stop.load(Ordering::Relaxed) {
            let started = tokio::time::Instant::now();
            match self.probe_appearances().await {
                Ok(true) => {
                    durations.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX))
                }
                Ok(false) => {}
                Err(err) => last = Some(err),
            }
            tokio::time::sleep_until(started + PROBE_INTERVAL).await;
        }
        (durations, last)
    }

    async fn run(&self, stop: Arc<AtomicBool>) -> ObserverStats {
        let mut stats = ObserverStats::default();
        let mut next_full = tokio::time::Instant::now();
        let mut next_dump = tokio::time::Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let now = tokio::time::Instant::now();
            if now >= next_dump {
                let started = now;
                let full = started >= next_full;
                let backends = if full {
                    next_full = started + self.full_interval;
                    None
                } else {
                    Some(self.urgent_backends())
                };
                if backends.as_ref().is_none_or(|b| !b.is_empty()) {
                    let asked_at = now_us();
                    match self.poll(backends.as_ref()).await {
                        Ok(rows) => {
                            stats.servers_dumped += rows.len() as u64;
                            self.apply(&rows, backends.as_ref(), asked_at, now_us());
                        }
                        Err(err) => {
                            stats.errors += 1;
                            stats.last_error = Some(err);
                        }
                    }
                    stats.polls += 1;
                    stats.full_polls += u64::from(full);
                    stats
                        .poll_us
                        .push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
                }
                // Never more than a third of the time in dumps: when they get slow (many
                // backends with changes in flight, a loaded HAProxy), dump less often rather
                // than add load.
                next_dump = started + self.interval.max(started.elapsed() * 3);
            }
            tokio::time::sleep_until(next_dump.min(now + self.interval)).await;
        }
        stats
    }

    /// Asks HAProxy, member by member, whether the members waiting to appear exist yet, and
    /// stamps those that do (`get weight` answers `No such server.` for the others). False
    /// when none was waiting.
    async fn probe_appearances(&self) -> Result<bool, String> {
        let port = self.origins.port();
        let pending: Vec<(u32, String)> = {
            let now = now_us();
            let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
            table
                .active_ids()
                .into_iter()
                .filter_map(|id| table.get(id).map(|m| (id, m)))
                .filter(|(_, m)| {
                    m.registered_at.is_some() && m.present_at.is_none() && !m.has_left(now)
                })
                .map(|(id, m)| {
                    let key = backend_key(m.backend);
                    (id, format!("{key}/{key}_{}:{port}", member_ip(id)))
                })
                .collect()
        };
        for chunk in pending.chunks(PROBES_PER_EXCHANGE) {
            let commands: Vec<String> = chunk
                .iter()
                .map(|(_, server)| format!("get weight {server}"))
                .collect();
            let answers: Vec<String> = match &self.probe_connection {
                Some(client) => {
                    let lines: Vec<&str> = commands.iter().map(String::as_str).collect();
                    client
                        .commands(&lines)
                        .await
                        .map_err(|err| format!("probe: {err}"))?
                }
                None => self
                    .exchange(&format!("{}\n", commands.join(";")))
                    .await?
                    .split("\n\n")
                    .map(str::to_owned)
                    .collect(),
            };
            let at = now_us();
            let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
            for ((id, _), answer) in chunk.iter().zip(answers) {
                let exists = answer
                    .trim_start()
                    .starts_with(|c: char| c.is_ascii_digit());
                if let (true, Some(member)) = (exists, table.get_mut(*id)) {
                    member.present_at.get_or_insert(at);
                }
            }
        }
        Ok(!pending.is_empty())
    }

    /// One non-interactive exchange on a new connection: `line`, then the reply to EOF.
    async fn exchange(&self, line: &str) -> Result<String, String> {
        let exchange = async {
            let mut stream = UnixStream::connect(&self.socket).await?;
            stream.write_all(line.as_bytes()).await?;
            let mut reply = String::new();
            stream.read_to_string(&mut reply).await?;
            Ok::<_, std::io::Error>(reply)
        };
        tokio::time::timeout(POLL_TIMEOUT, exchange)
            .await
            .map_err(|_| "poll timed out".to_owned())?
            .map_err(|err| format!("admin socket: {err}"))
    }

    /// Backends with a member whose drain is still to be seen (appearances are the
    /// prober's).
    fn urgent_backends(&self) -> BTreeSet<usize> {
        let now = now_us();
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table
            .active_ids()
            .into_iter()
            .filter_map(|id| table.get(id))
            .filter(|m| m.has_left(now) && m.drained_at.is_none())
            .map(|m| m.backend)
            .collect()
    }

    /// One non-interactive exchange: `show servers state [be];...`, read to EOF.
    async fn poll(
        &self,
        backends: Option<&BTreeSet<usize>>,
    ) -> Result<Vec<ServerStateRow>, String> {
        let line = match backends {
            None => "show servers state\n".to_owned(),
            Some(backends) => {
                let commands: Vec<String> = backends
                    .iter()
                    .map(|b| format!("show servers state {}", backend_key(*b)))
                    .collect();
                format!("{}\n", commands.join(";"))
            }
        };
        let reply = self.exchange(&line).await?;
        let mut rows = Vec::new();
        for dump in split_dumps(&reply) {
            rows.extend(parse_servers_state(dump).map_err(|err| err.to_string())?);
        }
        Ok(rows)
    }

    /// Stamps what `rows` show, a dump asked for at `asked_at` and answered at `at`. With
    /// `dumped` set, only members of those backends are judged: the others were not looked
    /// at. A member the prober saw appear after `asked_at` may be missing from the dump
    /// without having vanished.
    fn apply(
        &self,
        rows: &[ServerStateRow],
        dumped: Option<&BTreeSet<usize>>,
        asked_at: Micros,
        at: Micros,
    ) {
        let port = self.origins.port();
        // Member id -> serving (ready and UP).
        let seen: HashMap<u32, bool> = rows
            .iter()
            .filter(|row| row.port == Some(port))
            .filter_map(|row| match row.addr {
                Some(IpAddr::V4(ip)) => Some((
                    member_id(ip)?,
                    row.admin_state() == AdminState::Ready && row.op_state.is_up(),
                )),
                _ => None,
            })
            .collect();
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let mut release = Vec::new();
        for id in table.active_ids() {
            let Some(member) = table.get_mut(id) else {
                continue;
            };
            if dumped.is_some_and(|d| !d.contains(&member.backend)) {
                continue;
            }
            let state = seen.get(&id).copied();
            if member.has_left(at) {
                if member.drained_at.is_none() && state != Some(true) {
                    member.drained_at = Some(at);
                }
                match state {
                    None => {
                        // Only a member HAProxy had can be gone; one whose join had not landed
                        // yet may still appear (and then be removed).
                        if member.present_at.is_some_and(|p| p < asked_at) {
                            member.gone_at.get_or_insert(at);
                        }
                        let left = member.left_at.unwrap_or(at);
                        if dumped.is_none() && at.saturating_sub(left) >= RELEASE_AFTER_US {
                            release.push(id);
                        }
                    }
                    Some(_) => {
                        member.present_at.get_or_insert(at);
                        if member.gone_at.is_some() {
                            member.reappeared = true;
                        }
                    }
                }
            } else if member.registered_at.is_some() {
                match state {
                    Some(serving) => {
                        member.present_at.get_or_insert(at);
                        if serving {
                            member.ready_at.get_or_insert(at);
                        }
                    }
                    None if member.present_at.is_some_and(|p| p < asked_at) => {
                        member.vanished = true
                    }
                    None => {}
                }
            }
        }
        for id in release {
            table.release(id);
            self.origins.close(id);
        }
    }
}

/// Splits the reply of several `show servers state` commands into one dump each: every dump
/// starts with its format version line (`1`).
fn split_dumps(reply: &str) -> Vec<&str> {
    let mut starts: Vec<usize> = Vec::new();
    let mut offset = 0;
    for line in reply.split_inclusive('\n') {
        if line.trim() == "1" {
            starts.push(offset);
        }
        offset += line.len();
    }
    starts
        .iter()
        .enumerate()
        .map(|(i, start)| &reply[*start..starts.get(i + 1).copied().unwrap_or(reply.len())])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(reply: &str, expected: &[&str]) {
        assert_eq!(split_dumps(reply), expected, "{reply:?}");
    }

    #[test]
    fn dumps() {
        check("", &[]);
        check("1\n# be_id\n", &["1\n# be_id\n"]);
        check(
            "1\n# h\n3 be0 1\n\n1\n# h\n4 be1 2\n\n",
            &["1\n# h\n3 be0 1\n\n", "1\n# h\n4 be1 2\n\n"],
        );
    }
}
