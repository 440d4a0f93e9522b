//! Wall-clock time in epoch milliseconds, the unit of `lastKnown` and of every deadline (they
//! are absolute so they survive a restart and mean the same thing to every node).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; 0 if the clock is set before 1970.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
