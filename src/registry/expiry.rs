//! The expiry driver and the stall hold.
//!
//! The driver asks the store for one expiry round, then sleeps until the round's
//! `next_deadline` (at most a second, so a wall-clock jump or another node's change cannot
//! leave it sleeping on a stale deadline); a new earlier deadline wakes it early. The store
//! removes everything due, so a registration disappears within a few milliseconds of its
//! deadline, however many expire at once.
//!
//! A registry that was itself stalled (SIGSTOP, a frozen VM, a suspended host, a store that
//! stopped answering, a failover) wakes up to find leases that ran out while it could not
//! receive a single heartbeat: that is the registry's outage, not the services'. Rounds run at
//! least every second, so a gap of more than [`STALL_GAP_MS`] between two rounds is a stall.
//! After one, registrations that fell due during it are held for one lease length (capped at
//! [`MAX_HOLD_MS`]) so heartbeating services can refresh them; whatever is not refreshed by
//! then expires as usual. A restart from the snapshot is the same situation (nobody could
//! heartbeat while no registry ran). [`StallHold`] is that rule for the in-memory store; the
//! Redis store applies the same rule inside its expiry function, on the store's clock and the
//! round gap of the whole cluster (see `redis_store::functions`).

use super::clock::now_ms;
use super::handle::Registry;
use std::time::Duration;

/// Longest single sleep, whatever the next deadline.
pub const MAX_SLEEP: Duration = Duration::from_secs(1);
/// A gap this long between two expiry rounds means the registry (or its store) was not
/// running: rounds are at most [`MAX_SLEEP`] apart, so this is three seconds late.
pub const STALL_GAP_MS: u64 = 4_000;
/// Longest hold after a stall, whatever the leases.
pub const MAX_HOLD_MS: u64 = 300_000;

pub(crate) async fn drive(registry: Registry) {
    let closing = registry.closing();
    loop {
        let sleep = match registry.expire_round().await {
            Some(next) => sleep_until_next(next, now_ms()),
            // The store did not answer: try again soon, nothing was removed.
            None => Duration::from_millis(200),
        };
        tokio::select! {
            _ = closing.cancelled() => return,
            _ = registry.expiry_wake().notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// The stall rule for one store: the time of the last round and the hold in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StallHold {
    /// Epoch ms of the end of the last round; `None` before the first one.
    last_round: Option<u64>,
    /// `(stall began, held until)`.
    hold: Option<(u64, u64)>,
}

/// What a round may remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoff {
    /// Remove registrations due at or before this (epoch ms).
    pub due_by: u64,
    /// A hold is in force until this (epoch ms).
    pub held_until: Option<u64>,
}

impl StallHold {
    /// After a restart from a snapshot: everything that ran out since the epoch ran out while
    /// no registry ran.
    pub fn after_downtime() -> Self {
        StallHold {
            last_round: Some(0),
            hold: None,
        }
    }

    /// Decides what the round starting at `now` may remove. `longest_lease(began, now)` is
    /// the longest lease (`expiresAt - lastKnown`) among registrations due in `(began, now]`;
    /// it is only asked after a stall.
    pub fn begin_round(&mut self, now: u64, longest_lease: impl FnOnce(u64, u64) -> u64) -> Cutoff {
        if let Some(last) = self.last_round
            && now.saturating_sub(last) > STALL_GAP_MS
        {
            // A hold already in force keeps its (earlier) start.
            let began = self.hold.map_or(last, |(began, _)| began.min(last));
            let until = now + longest_lease(began, now).min(MAX_HOLD_MS);
            if until > now {
                if last == 0 {
                    tracing::warn!(
                        hold_ms = until - now,
                        "leases ran out while the registry was down; they get a grace to be refreshed"
                    );
                } else {
                    tracing::warn!(
                        stalled_ms = now - last,
                        hold_ms = until - now,
                        "the registry was stalled; leases that ran out meanwhile get a grace to be refreshed"
                    );
                }
                self.hold = Some((began, until));
            }
        }
        match self.hold {
            Some((began, until)) if now < until => Cutoff {
                due_by: began,
                held_until: Some(until),
            },
            _ => {
                self.hold = None;
                Cutoff {
                    due_by: now,
                    held_until: None,
                }
            }
        }
    }

    /// Marks the end of a round (measured after the work: a long round is not a stall).
    pub fn end_round(&mut self, now: u64) {
        self.last_round = Some(now);
    }
}

/// How long to sleep before `next` (epoch ms) at `now` (epoch ms).
fn sleep_until_next(next: Option<u64>, now: u64) -> Duration {
    match next {
        // Due already (the store removed everything due, so only a racing upsert gets here).
        Some(deadline) if deadline <= now => Duration::from_millis(1),
        Some(deadline) => Duration::from_millis(deadline - now).min(MAX_SLEEP),
        None => MAX_SLEEP,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(next: Option<u64>, now: u64, expected_ms: u64) {
        assert_eq!(
            sleep_until_next(next, now),
            Duration::from_millis(expected_ms),
            "{next:?} at {now}"
        );
    }

    #[test]
    fn sleeps() {
        check(None, 5, 1000);
        check(Some(105), 100, 5);
        check(Some(100), 100, 1);
        check(Some(50), 100, 1);
        check(Some(100_000), 100, 1000);
    }

    #[test]
    fn rounds_a_second_apart_never_hold() {
        let mut hold = StallHold::default();
        for now in (1_000..20_000).step_by(1_000) {
            let cutoff = hold.begin_round(now, |_, _| panic!("no stall"));
            assert_eq!(
                cutoff,
                Cutoff {
                    due_by: now,
                    held_until: None
                }
            );
            hold.end_round(now);
        }
    }

    #[test]
    fn a_stall_holds_for_the_longest_lease_then_releases() {
        let mut hold = StallHold::default();
        hold.end_round(1_000);
        // Stalled from 1_000 to 61_000; the longest lease due meanwhile is 20 s.
        let cutoff = hold.begin_round(61_000, |began, now| {
            assert_eq!((began, now), (1_000, 61_000));
            20_000
        });
        assert_eq!(
            cutoff,
            Cutoff {
                due_by: 1_000,
                held_until: Some(81_000)
            }
        );
        hold.end_round(61_000);
        let cutoff = hold.begin_round(62_000, |_, _| panic!("no new stall"));
        assert_eq!(cutoff.due_by, 1_000);
        hold.end_round(62_000);
        hold.end_round(80_500);
        assert_eq!(hold.begin_round(81_000, |_, _| 0).held_until, None);
    }

    #[test]
    fn holds_are_capped_and_nothing_due_means_no_hold() {
        let mut hold = StallHold::default();
        hold.end_round(1_000);
        assert_eq!(
            hold.begin_round(950_000, |_, _| 900_000).held_until,
            Some(950_000 + MAX_HOLD_MS)
        );
        let mut idle = StallHold::after_downtime();
        assert_eq!(
            idle.begin_round(61_000, |_, _| 0),
            Cutoff {
                due_by: 61_000,
                held_until: None
            }
        );
    }
}
