//! The numbered event log of the in-memory store: assigns monotonic sequence numbers, keeps the
//! most recent events so a reconnecting follower can resume, and fans events out live.
//!
//! Invariant: a follower may resume from `last_seen` iff `floor <= last_seen <= seq`; every event
//! with a sequence number in `(floor, seq]` is retained.

use super::feed::{FeedItem, RegistryEvent};
use std::collections::VecDeque;
use tokio::sync::broadcast;

/// How many past events are kept for resuming followers.
pub const RETAINED_EVENTS: usize = 4096;

/// How many live events a slow follower may fall behind before it gets a fresh snapshot.
pub const LIVE_BUFFER: usize = 16_384;

#[derive(Debug)]
pub struct EventLog {
    /// Sequence number of the last event issued.
    seq: u64,
    /// Lowest `last_seen` a follower can resume from.
    floor: u64,
    retained: VecDeque<FeedItem>,
    capacity: usize,
    live: broadcast::Sender<FeedItem>,
}

impl EventLog {
    pub fn new(start_seq: u64, capacity: usize) -> Self {
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        EventLog {
            seq: start_seq,
            floor: start_seq,
            retained: VecDeque::new(),
            capacity: capacity.max(1),
            live,
        }
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Forgets history and continues numbering at `start_seq` (after loading a snapshot).
    pub fn restart_at(&mut self, start_seq: u64) {
        self.seq = start_seq;
        self.floor = start_seq;
        self.retained.clear();
    }

    /// Numbers, retains and broadcasts one event.
    pub fn push(&mut self, event: RegistryEvent) {
        self.push_at(self.seq + 1, event);
    }

    /// Appends `event` numbered `seq`, which must be above every number issued so far (the
    /// caller checks).
    pub fn push_at(&mut self, seq: u64, event: RegistryEvent) {
        self.seq = seq;
        let item = FeedItem::Event {
            seq: self.seq,
            event,
        };
        if self.retained.len() == self.capacity
            && let Some(oldest) = self.retained.pop_front()
        {
            self.floor = oldest.seq();
        }
        self.retained.push_back(item.clone());
        // No live followers is not an error: the event is retained for later ones.
        let _ = self.live.send(item);
    }

    /// Sends `item` to live receivers without retaining it (a snapshot after a reset: a
    /// resuming follower gets one from the store instead).
    pub fn announce(&self, item: FeedItem) {
        let _ = self.live.send(item);
    }

    /// A live receiver; create it under the same lock as the backlog so nothing falls between.
    pub fn receiver(&self) -> broadcast::Receiver<FeedItem> {
        self.live.subscribe()
    }

    /// The events after `last_seen`, or `None` if the log cannot cover them (too old, or a
    /// number this log never issued, e.g. from before a crash).
    pub fn since(&self, last_seen: u64) -> Option<Vec<FeedItem>> {
        if last_seen < self.floor || last_seen > self.seq {
            return None;
        }
        // Numbers need not be consecutive (a shared store's stream ids are not): resume only
        // right after the floor or after an item this log holds.
        let skip = if last_seen == self.floor {
            0
        } else {
            let at = self.retained.partition_point(|item| item.seq() < last_seen);
            if self.retained.get(at).map(FeedItem::seq) != Some(last_seen) {
                return None;
            }
            at + 1
        };
        Some(self.retained.iter().skip(skip).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::feed::OfflineReason;

    fn offline(n: u32) -> RegistryEvent {
        RegistryEvent::Offline {
            id: format!("/a/1/h/{n}"),
            reason: OfflineReason::Deleted,
        }
    }

    fn log_with(start: u64, capacity: usize, events: u32) -> EventLog {
        let mut log = EventLog::new(start, capacity);
        for n in 1..=events {
            log.push(offline(n));
        }
        log
    }

    fn check(log: &EventLog, last_seen: u64, expected: Option<Vec<u64>>) {
        let got = log
            .since(last_seen)
            .map(|items| items.iter().map(FeedItem::seq).collect::<Vec<_>>());
        assert_eq!(got, expected, "since({last_seen})");
    }

    #[test]
    fn resume_window() {
        let log = log_with(10, 3, 5); // issued 11..=15, retains 13..=15
        check(&log, 15, Some(vec![]));
        check(&log, 14, Some(vec![15]));
        check(&log, 12, Some(vec![13, 14, 15]));
        check(&log, 11, None);
        check(&log, 0, None);
        check(&log, 16, None);

        let fresh = log_with(100, 3, 0);
        check(&fresh, 100, Some(vec![]));
        check(&fresh, 99, None);
        check(&fresh, 101, None);
    }

    #[test]
    fn resume_with_gaps_in_the_numbering() {
        let mut log = EventLog::new(100, 3);
        for seq in [110, 120, 130, 140] {
            log.push_at(seq, offline(seq as u32));
        }
        // Retains 120, 130, 140; the floor is 110.
        check(&log, 110, Some(vec![120, 130, 140]));
        check(&log, 130, Some(vec![140]));
        check(&log, 140, Some(vec![]));
        check(&log, 125, None);
        check(&log, 100, None);
    }

    #[test]
    fn restart_forgets_history() {
        let mut log = log_with(0, 10, 4);
        log.restart_at(50);
        check(&log, 4, None);
        check(&log, 50, Some(vec![]));
        log.push(offline(9));
        check(&log, 50, Some(vec![51]));
    }

    #[test]
    fn live_receivers_see_pushed_events_in_order() {
        let mut log = EventLog::new(0, 10);
        let mut rx = log.receiver();
        log.push(offline(1));
        log.push(offline(2));
        assert_eq!(rx.try_recv().map(|i| i.seq()).ok(), Some(1));
        assert_eq!(rx.try_recv().map(|i| i.seq()).ok(), Some(2));
    }
}
