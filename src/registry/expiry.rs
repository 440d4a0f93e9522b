//! The expiry driver: sleeps until the store's earliest deadline and removes everything due, so
//! a registration disappears within a few milliseconds of its deadline, however many expire at
//! once. A new earlier deadline wakes it early; it also re-checks every second so a wall-clock
//! jump cannot leave it sleeping on a stale deadline.

use super::clock::now_ms;
use super::handle::Registry;
use std::time::Duration;

/// Longest single sleep, whatever the next deadline.
const MAX_SLEEP: Duration = Duration::from_secs(1);

pub(crate) async fn drive(registry: Registry) {
    let closing = registry.closing();
    loop {
        registry.expire_due(now_ms());
        let sleep = sleep_until_next(registry.next_deadline(), now_ms());
        tokio::select! {
            _ = closing.cancelled() => return,
            _ = registry.expiry_wake().notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
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
}
