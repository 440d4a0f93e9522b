//! The expiry driver: sleeps until the store's earliest deadline and removes everything due, so
//! a registration disappears within a few milliseconds of its deadline, however many expire at
//! once. A new earlier deadline wakes it early; it also re-checks every second so a wall-clock
//! jump cannot leave it sleeping on a stale deadline.
//!
//! A registry that was itself stalled (SIGSTOP, a frozen VM, a suspended host) wakes up to
//! find leases that ran out while it could not receive a single heartbeat: that is the
//! registry's outage, not the services'. After a stall, registrations that fell due during it
//! are held for one lease length (the longest such lease, capped) so heartbeating services can
//! refresh them; whatever is not refreshed by then expires as usual. A restart from the
//! snapshot is the same situation (nobody could heartbeat while no registry ran): leases that
//! ran out while it was down are held the same way from the start.

use super::clock::now_ms;
use super::handle::Registry;
use super::store::Lease;
use std::time::Duration;

/// Longest single sleep, whatever the next deadline.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// A wake-up this much later than planned means the registry itself was not running.
const STALL_MS: u64 = 3_000;
/// Longest hold after a stall, whatever the leases.
const MAX_HOLD_MS: u64 = 300_000;

pub(crate) async fn drive(registry: Registry, after_downtime: bool) {
    let closing = registry.closing();
    let mut last_run = now_ms();
    let mut planned_wake = last_run;
    // After a stall: (when it began, until when registrations due since then are held).
    let mut hold: Option<(u64, u64)> = None;
    if after_downtime {
        // Everything overdue in the snapshot ran out while no registry ran.
        let until = hold_after_stall(&registry.leases(), 0, last_run);
        if until > last_run {
            tracing::warn!(
                hold_ms = until - last_run,
                "leases ran out while the registry was down; they get a grace to be refreshed"
            );
            hold = Some((0, until));
        }
    }
    loop {
        let now = now_ms();
        if now > planned_wake.saturating_add(STALL_MS) {
            let held = hold_after_stall(&registry.leases(), last_run, now);
            tracing::warn!(
                stalled_ms = now - last_run,
                hold_ms = held.saturating_sub(now),
                "the registry was stalled; leases that ran out meanwhile get a grace to be refreshed"
            );
            hold = Some((last_run, held));
        }
        match hold {
            Some((stall_began, until)) if now < until => {
                registry.expire_due(stall_began);
            }
            _ => {
                hold = None;
                registry.expire_due(now);
            }
        }
        let next = registry.next_deadline();
        let sleep = match hold {
            // Held deadlines are due already: wake for the end of the hold instead.
            Some((_, until)) => Duration::from_millis(until.saturating_sub(now)).min(MAX_SLEEP),
            None => sleep_until_next(next, now),
        };
        // Measured after the work: a long expiry round is not a stall.
        last_run = now_ms();
        planned_wake = last_run + sleep.as_millis() as u64;
        tokio::select! {
            _ = closing.cancelled() => return,
            _ = registry.expiry_wake().notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// Until when (epoch ms) registrations that fell due during a stall from `began` to `now` are
/// held: one lease length (`expiresAt - lastKnown`, the longest among them) from `now`, at
/// most [`MAX_HOLD_MS`].
fn hold_after_stall(leases: &[Lease], began: u64, now: u64) -> u64 {
    let longest = leases
        .iter()
        .filter(|lease| lease.expires_at > began && lease.expires_at <= now)
        .map(|lease| lease.expires_at.saturating_sub(lease.last_known))
        .max()
        .unwrap_or(0);
    now + longest.min(MAX_HOLD_MS)
}

/// How long to sleep before the deadline `next` (epoch ms) is due at `now` (epoch ms).
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

    fn lease(last_known: u64, expires_at: u64) -> Lease {
        Lease {
            id: format!("/svc/1/10.0.0.1/{expires_at}"),
            expires_at,
            last_known,
        }
    }

    fn check_hold(leases: &[Lease], began: u64, now: u64, expected_until: u64) {
        assert_eq!(hold_after_stall(leases, began, now), expected_until);
    }

    #[test]
    fn holds_for_the_longest_lease_that_ran_out_during_the_stall() {
        // Stalled from 1_000 to 61_000: 5 s and 20 s leases ran out meanwhile.
        let leases = [
            lease(0, 5_000),
            lease(10_000, 30_000),
            lease(0, 500),          // due before the stall: not held
            lease(60_000, 660_000), // not due yet
        ];
        check_hold(&leases, 1_000, 61_000, 81_000);
        check_hold(&[], 1_000, 61_000, 61_000);
        check_hold(&[lease(0, 900_000)], 1_000, 950_000, 950_000 + MAX_HOLD_MS);
    }
}
