//! The registry side of a manager round, around the pure core ([`MemberSync`]): feed items
//! in, activities reported; each round's member lists handed to the controller, with what the
//! next reconcile round must look at.
//!
//! [`MemberSync`]: crate::membership::member_sync::MemberSync

use super::Manager;
use crate::registry::feed::FeedItem;
use crate::status::now_ms;
use std::time::Instant;

impl Manager {
    pub(super) fn apply_feed(&mut self, item: FeedItem) {
        self.feed_applied += 1;
        for note in self.sync.apply_feed(item) {
            self.record(note.verb, &note.object, note.detail);
        }
    }

    /// Hands each dynamic backend whose service changed its registrations (for rendering,
    /// ids and the API); true when any backend's members changed.
    pub(super) async fn sync_members(&mut self) -> bool {
        let config = self.controller.config();
        let (now, wall_ms) = (Instant::now(), now_ms());
        let controller = &self.controller;
        let resolver = &mut self.resolver;
        let Some(outcome) = self.sync.sync(
            config.clone(),
            || controller.backends_with_members(),
            |registrations| resolver.addressed(registrations, now),
            now,
            wall_ms,
        ) else {
            return false;
        };
        if outcome.config_changed {
            // Structure or static members may have changed anywhere: look at everything.
            self.next_full_round = Instant::now();
        }
        for (backend, left_out) in &outcome.left_out {
            self.note_left_out(backend, *left_out);
        }
        // Known leavers: their servers go now, without the grace an unclaimed joining server
        // gets (that one may be a fast-lane join still on its way here).
        for server in &outcome.leavers {
            self.tracker.leaving(server, now);
        }
        self.lane_handled_backends.extend(outcome.lane_handled);
        self.dirty_backends.extend(outcome.plan_now);
        if !outcome.brake_events.is_empty() || outcome.config_changed {
            self.publish_brake(&config, &outcome.brake_events);
        }
        let changed = !outcome.changes.is_empty();
        if changed {
            self.controller.set_members_of(outcome.changes).await;
        }
        changed
    }
}
