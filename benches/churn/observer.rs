//! The observer: reads HAProxy's `show servers state` over the admin socket every poll
//! interval and stamps, per member, when it was first present, first serving, drained (no new
//! requests: drain, maintenance, down or absent) and gone. Timestamps are taken when the
//! answer arrives, so every latency derived from them is an upper bound, late by at most one
//! poll interval plus the poll's own duration.

use super::members::{MemberTable, Micros, member_id, now_us};
use super::origins::Origins;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thalassa::haproxy::runtime::RuntimeClient;
use thalassa::haproxy::stat::{AdminState, ServerStateRow, parse_servers_state};

/// A departed member's listener closes once it has been gone this long: by then no reload
/// rendered before its departure can bring it back.
const RELEASE_AFTER_US: Micros = 2_000_000;

#[derive(Debug, Default, Clone)]
pub struct ObserverStats {
    pub polls: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    /// Duration of each poll (request, reply, parse), µs.
    pub poll_us: Vec<u32>,
}

pub struct Observer {
    pub client: RuntimeClient,
    /// Reconnect before every poll: after a reload only a new connection reaches the new
    /// worker (an open one keeps talking to the old worker until it exits).
    pub reconnect_each_poll: bool,
    pub interval: Duration,
    pub table: Arc<Mutex<MemberTable>>,
    pub origins: Origins,
}

impl Observer {
    pub fn spawn(self, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<ObserverStats> {
        tokio::spawn(self.run(stop))
    }

    async fn run(self, stop: Arc<AtomicBool>) -> ObserverStats {
        let mut stats = ObserverStats::default();
        while !stop.load(Ordering::Relaxed) {
            let started = tokio::time::Instant::now();
            if self.reconnect_each_poll {
                self.client.disconnect().await;
            }
            match self.client.command("show servers state").await {
                Ok(text) => {
                    let at = now_us();
                    match parse_servers_state(&text) {
                        Ok(rows) => self.apply(&rows, at),
                        Err(err) => {
                            stats.errors += 1;
                            stats.last_error = Some(err.to_string());
                        }
                    }
                }
                Err(err) => {
                    stats.errors += 1;
                    stats.last_error = Some(err.to_string());
                }
            }
            stats.polls += 1;
            stats
                .poll_us
                .push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
            tokio::time::sleep_until(started + self.interval).await;
        }
        stats
    }

    fn apply(&self, rows: &[ServerStateRow], at: Micros) {
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
            let state = seen.get(&id).copied();
            if member.has_left(at) {
                if member.drained_at.is_none() && state != Some(true) {
                    member.drained_at = Some(at);
                }
                match state {
                    None => {
                        // Only a member HAProxy had can be gone; one whose join had not landed
                        // yet may still appear (and then be removed).
                        if member.present_at.is_some() {
                            member.gone_at.get_or_insert(at);
                        }
                        let left = member.left_at.unwrap_or(at);
                        if at.saturating_sub(left) >= RELEASE_AFTER_US {
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
                    None if member.present_at.is_some() => member.vanished = true,
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
