//! The member table: every service instance a run registers, its loopback address, and the
//! moments that matter (registration sent, seen in HAProxy, serving, left, drained, gone).
//! The churn driver writes registrations and departures, the observer writes what HAProxy
//! shows; the report reads it all at the end.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::OnceLock;
use std::time::Instant;

/// Microseconds since the harness started (one clock for every component).
pub type Micros = u64;

pub fn now_us() -> Micros {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Member `id`'s address: 127.1.0.1, 127.1.0.2, ... 127.1.0.254, 127.1.1.1, ... All of
/// 127.0.0.0/8 is loopback; skipping .0 and .255 keeps every address unremarkable.
pub fn member_ip(id: u32) -> Ipv4Addr {
    let host = id / 254;
    let last = (id % 254) + 1;
    let second = 1 + host / 256;
    let third = host % 256;
    Ipv4Addr::new(
        127,
        u8::try_from(second).unwrap_or(u8::MAX),
        u8::try_from(third).unwrap_or(0),
        u8::try_from(last).unwrap_or(1),
    )
}

/// The inverse of [`member_ip`], for addresses HAProxy reports.
pub fn member_id(ip: Ipv4Addr) -> Option<u32> {
    let [first, second, third, last] = ip.octets();
    if first != 127 || second == 0 || second == 255 || last == 0 || last == 255 {
        return None;
    }
    let host = (u32::from(second) - 1) * 256 + u32::from(third);
    Some(host * 254 + u32::from(last) - 1)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Registered with a long lease; leaves by DELETE.
    Lasting,
    /// Registered with a short lease, never refreshed; leaves by expiry.
    Expiring,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveKind {
    Deleted,
    Expired,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub backend: usize,
    pub lifetime: Lifetime,
    /// Registered before the measurement (the starting set).
    pub initial: bool,
    /// When the registration POST was sent.
    pub registered_at: Option<Micros>,
    /// The registry answered the POST with 200.
    pub registration_acked: bool,
    /// When that answer arrived.
    pub acked_at: Option<Micros>,
    /// First observed in HAProxy at all (a new runtime member starts in maintenance).
    pub present_at: Option<Micros>,
    /// First observed ready and UP: HAProxy sends it requests.
    pub ready_at: Option<Micros>,
    /// When the DELETE was sent, or the lease's deadline (POST sent + lease).
    pub left_at: Option<Micros>,
    pub leave_kind: Option<LeaveKind>,
    /// First observed draining, in maintenance or absent after leaving: no new requests.
    pub drained_at: Option<Micros>,
    /// First observed absent after leaving.
    pub gone_at: Option<Micros>,
    /// Its listener is closed; nothing more is watched.
    pub released: bool,
    /// Observed absent while still registered, after having been present.
    pub vanished: bool,
    /// Observed present again after being gone.
    pub reappeared: bool,
    /// A heartbeat for it is in flight: it must not be deleted now, or the heartbeat could
    /// reach the registry after the DELETE and register it again.
    pub refreshing: bool,
}

impl Member {
    fn new(backend: usize, lifetime: Lifetime, initial: bool) -> Member {
        Member {
            backend,
            lifetime,
            initial,
            registered_at: None,
            registration_acked: false,
            acked_at: None,
            present_at: None,
            ready_at: None,
            left_at: None,
            leave_kind: None,
            drained_at: None,
            gone_at: None,
            released: false,
            vanished: false,
            reappeared: false,
            refreshing: false,
        }
    }

    /// Has left by `now` (an expiring member leaves at its deadline).
    pub fn has_left(&self, now: Micros) -> bool {
        self.left_at.is_some_and(|at| at <= now)
    }

    /// Was serving when it left: only those give a meaningful departure time.
    pub fn served_before_leaving(&self) -> bool {
        matches!((self.ready_at, self.left_at), (Some(ready), Some(left)) if ready <= left)
    }
}

/// All members of a run, by id (ids are dense and never reused within a run).
#[derive(Debug, Default)]
pub struct MemberTable {
    members: Vec<Member>,
    /// Lasting members whose registration was acknowledged and that have not left: the
    /// candidates for DELETE and heartbeats.
    deletable: Vec<u32>,
    /// Members the observer still watches (not released).
    active: BTreeSet<u32>,
}

impl MemberTable {
    pub fn new() -> MemberTable {
        MemberTable::default()
    }

    /// A new member; its id gives its address.
    pub fn allocate(&mut self, backend: usize, lifetime: Lifetime, initial: bool) -> u32 {
        let id = u32::try_from(self.members.len()).expect("fewer than 4 billion members");
        self.members.push(Member::new(backend, lifetime, initial));
        self.active.insert(id);
        id
    }

    pub fn get(&self, id: u32) -> Option<&Member> {
        self.members.get(id as usize)
    }

    pub fn get_mut(&mut self, id: u32) -> Option<&mut Member> {
        self.members.get_mut(id as usize)
    }

    pub fn all(&self) -> impl Iterator<Item = (u32, &Member)> {
        (0u32..).zip(self.members.iter())
    }

    pub fn active_ids(&self) -> Vec<u32> {
        self.active.iter().copied().collect()
    }

    pub fn release(&mut self, id: u32) {
        self.active.remove(&id);
        if let Some(member) = self.get_mut(id) {
            member.released = true;
        }
    }

    /// The POST is about to be sent. An expiring member's departure is its lease deadline.
    pub fn registering(&mut self, id: u32, at: Micros, lease_us: Option<Micros>) {
        if let Some(member) = self.get_mut(id) {
            member.registered_at = Some(at);
            if let Some(lease) = lease_us {
                member.left_at = Some(at + lease);
                member.leave_kind = Some(LeaveKind::Expired);
            }
        }
    }

    pub fn registered(&mut self, id: u32, acked: bool) {
        let Some(member) = self.get_mut(id) else {
            return;
        };
        member.registration_acked = acked;
        if acked {
            member.acked_at.get_or_insert(now_us());
        }
        if acked && member.lifetime == Lifetime::Lasting && member.left_at.is_none() {
            self.deletable.push(id);
        }
    }

    /// Picks a lasting member to delete (by `pick`, an index source), skipping members with
    /// a heartbeat in flight; it is no longer offered for deletion or heartbeats.
    pub fn take_for_delete(&mut self, pick: u64) -> Option<u32> {
        let len = self.deletable.len();
        let start = (pick % len.max(1) as u64) as usize;
        let index = (0..len).map(|step| (start + step) % len).find(|index| {
            let id = self.deletable[*index];
            self.members.get(id as usize).is_some_and(|m| !m.refreshing)
        })?;
        Some(self.deletable.swap_remove(index))
    }

    /// The DELETE is about to be sent.
    pub fn leaving(&mut self, id: u32, at: Micros) {
        if let Some(member) = self.get_mut(id) {
            member.left_at = Some(at);
            member.leave_kind = Some(LeaveKind::Deleted);
        }
    }

    /// A lasting, registered member to heartbeat, marked as refreshing until
    /// [`MemberTable::refreshed`].
    pub fn take_for_refresh(&mut self, pick: u64) -> Option<u32> {
        if self.deletable.is_empty() {
            return None;
        }
        let id = *self
            .deletable
            .get((pick % self.deletable.len() as u64) as usize)?;
        let member = self.get_mut(id)?;
        if member.refreshing {
            return None;
        }
        member.refreshing = true;
        Some(id)
    }

    pub fn refreshed(&mut self, id: u32) {
        if let Some(member) = self.get_mut(id) {
            member.refreshing = false;
        }
    }

    /// Joins and departures that have not been seen through yet at `now`: a registered member
    /// still present and not yet serving, or a departed one not yet drained.
    pub fn pending(&self, now: Micros, since: Micros) -> usize {
        self.members
            .iter()
            .filter(|m| {
                if m.has_left(now) {
                    m.left_at.is_some_and(|at| at >= since) && m.drained_at.is_none()
                } else {
                    m.registered_at.is_some_and(|at| at >= since)
                        && m.registration_acked
                        && m.ready_at.is_none()
                }
            })
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(id: u32, ip: [u8; 4]) {
        assert_eq!(member_ip(id).octets(), ip, "{id}");
        assert_eq!(member_id(member_ip(id)), Some(id), "{id}");
    }

    #[test]
    fn addresses() {
        check(0, [127, 1, 0, 1]);
        check(253, [127, 1, 0, 254]);
        check(254, [127, 1, 1, 1]);
        check(254 * 256, [127, 2, 0, 1]);
        assert_eq!(member_id(Ipv4Addr::new(127, 0, 0, 1)), None);
        assert_eq!(member_id(Ipv4Addr::new(10, 1, 0, 1)), None);
    }

    #[test]
    fn deletes_take_acknowledged_lasting_members() {
        let mut table = MemberTable::new();
        let lasting = table.allocate(0, Lifetime::Lasting, false);
        let expiring = table.allocate(0, Lifetime::Expiring, false);
        table.registering(lasting, 10, None);
        table.registering(expiring, 10, Some(1_000));
        assert_eq!(table.take_for_delete(0), None, "not acknowledged yet");
        table.registered(lasting, true);
        table.registered(expiring, true);
        assert_eq!(table.take_for_refresh(5), Some(lasting));
        assert_eq!(table.take_for_delete(3), None, "a heartbeat is in flight");
        table.refreshed(lasting);
        assert_eq!(table.take_for_delete(3), Some(lasting));
        assert_eq!(table.take_for_delete(3), None);
        let expiring = table.get(expiring).unwrap();
        assert_eq!(expiring.left_at, Some(1_010));
        assert!(!expiring.has_left(1_000) && expiring.has_left(1_010));
    }
}
