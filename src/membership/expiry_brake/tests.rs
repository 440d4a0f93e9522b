use super::*;

/// One backend following `web@1`: the registry's registrations, the member list the brake
/// returned last, and the events it reported.
struct World {
    brake: ExpiryBrake,
    registry: BTreeMap<String, Registration>,
    members: Vec<Registration>,
    events: Vec<BrakeEvent>,
    start: Instant,
    service: (String, String),
}

fn registration(version: &str, port: u16) -> Registration {
    Registration {
        name: "web".into(),
        version: version.into(),
        host: "127.0.0.1".into(),
        port,
        last_known: 0,
        meta: Default::default(),
        id: format!("/web/{version}/127.0.0.1/{port}"),
        address: None,
        unresolved: None,
    }
}

impl World {
    fn new(settings: BrakeSettings, ports: &[u16]) -> World {
        let mut world = World {
            brake: ExpiryBrake::new(settings),
            registry: BTreeMap::new(),
            members: Vec::new(),
            events: Vec::new(),
            start: Instant::now(),
            service: ("web".into(), "1".into()),
        };
        world.register(ports, 0);
        world.events.clear();
        world
    }

    fn round(&mut self, expired: BTreeSet<String>, at_ms: u64) {
        let current: Vec<Registration> = self
            .registry
            .values()
            .filter(|r| (r.name.clone(), r.version.clone()) == self.service)
            .cloned()
            .collect();
        let previous = std::mem::take(&mut self.members);
        self.members = self.brake.members(
            BackendRound {
                backend: "web",
                service: self.service.clone(),
                current,
                previous: &previous,
                expired: &expired,
            },
            self.start + Duration::from_millis(at_ms),
            at_ms,
            &mut self.events,
        );
    }

    fn register(&mut self, ports: &[u16], at_ms: u64) {
        for port in ports {
            let reg = registration(&self.service.1, *port);
            self.registry.insert(reg.id.clone(), reg);
        }
        self.round(BTreeSet::new(), at_ms);
    }

    fn expire(&mut self, ports: &[u16], at_ms: u64) {
        let ids = self.remove(ports);
        self.round(ids, at_ms);
    }

    fn delete(&mut self, ports: &[u16], at_ms: u64) {
        self.remove(ports);
        self.round(BTreeSet::new(), at_ms);
    }

    fn remove(&mut self, ports: &[u16]) -> BTreeSet<String> {
        ports
            .iter()
            .map(|p| registration(&self.service.1, *p).id)
            .inspect(|id| {
                self.registry.remove(id);
            })
            .collect()
    }

    fn ports(&self) -> Vec<u16> {
        self.members.iter().map(|r| r.port).collect()
    }

    fn held(&self) -> Option<Vec<String>> {
        self.brake.degraded().get("web").map(|m| m.held.clone())
    }

    fn take_events(&mut self) -> Vec<String> {
        self.events
            .drain(..)
            .map(|e| match e {
                BrakeEvent::Engaged {
                    expired,
                    members,
                    held,
                    ..
                } => {
                    format!("engaged {expired}/{members} {}", held.join(","))
                }
                BrakeEvent::Held { member, .. } => format!("held {member}"),
                BrakeEvent::Released { member, .. } => format!("released {member}"),
                BrakeEvent::Cleared {
                    reason, dropped, ..
                } => {
                    format!("cleared {} {}", reason.as_str(), dropped.join(","))
                }
            })
            .collect()
    }
}

const FIVE: [u16; 5] = [1, 2, 3, 4, 5];

fn addr(ports: &[u16]) -> Vec<String> {
    ports.iter().map(|p| format!("127.0.0.1:{p}")).collect()
}

/// Expires `expiring` of FIVE in one round (default settings) and checks the members left and
/// the held ones.
fn check_expiry(expiring: &[u16], members: &[u16], held: Option<&[u16]>) {
    let mut w = World::new(BrakeSettings::default(), &FIVE);
    w.expire(expiring, 1000);
    assert_eq!(w.ports(), members, "expiring {expiring:?}");
    assert_eq!(w.held(), held.map(addr), "expiring {expiring:?}");
}

#[test]
fn most_members_expiring_at_once_are_held() {
    check_expiry(&[1], &[2, 3, 4, 5], None);
    check_expiry(&[1, 2], &[3, 4, 5], None);
    check_expiry(&[1, 2, 3], &FIVE, Some(&[1, 2, 3]));
    check_expiry(&[1, 2, 3, 4], &FIVE, Some(&[1, 2, 3, 4]));
    check_expiry(&FIVE, &FIVE, Some(&FIVE));
}

#[test]
fn expiries_spread_over_rounds_within_the_window_engage_and_put_the_first_back() {
    let mut w = World::new(BrakeSettings::default(), &FIVE);
    w.expire(&[1], 100);
    w.expire(&[2], 200);
    assert_eq!(w.ports(), [3, 4, 5]);
    w.expire(&[3], 300);
    assert_eq!(w.ports(), FIVE, "the earlier expiries come back");
    assert_eq!(
        w.take_events(),
        ["engaged 3/5 127.0.0.1:1,127.0.0.1:2,127.0.0.1:3"]
    );
    w.expire(&[4], 20_000);
    assert_eq!(w.ports(), FIVE, "later expiries are held while degraded");
    assert_eq!(w.take_events(), ["held 127.0.0.1:4"]);
}

#[test]
fn expiries_further_apart_than_the_window_do_not_engage() {
    let mut w = World::new(BrakeSettings::default(), &FIVE);
    w.expire(&[1], 0);
    w.expire(&[2], 11_000);
    w.expire(&[3], 22_000);
    w.expire(&[4], 33_000);
    assert_eq!(w.ports(), [5]);
    assert_eq!(w.held(), None);
}

#[test]
fn deletions_and_version_switches_are_never_braked() {
    let mut w = World::new(BrakeSettings::default(), &FIVE);
    w.delete(&[1, 2, 3, 4], 100);
    assert_eq!(w.ports(), [5]);
    assert_eq!(w.held(), None);

    let mut w = World::new(BrakeSettings::default(), &FIVE);
    w.expire(&[1, 2, 3], 100);
    assert_eq!(w.held(), Some(addr(&[1, 2, 3])));
    w.service.1 = "2".into();
    w.register(&[7], 200);
    assert_eq!(w.ports(), [7], "the old version's members leave as usual");
    assert_eq!(w.held(), None);
    let events = w.take_events();
    assert_eq!(
        events.last().map(String::as_str),
        Some("cleared resubscribed 127.0.0.1:1,127.0.0.1:2,127.0.0.1:3")
    );
}

#[test]
fn small_backends_are_not_braked() {
    let mut w = World::new(BrakeSettings::default(), &[1, 2]);
    w.expire(&[1, 2], 100);
    assert!(w.ports().is_empty());
}

#[test]
fn a_threshold_of_one_disables_the_brake() {
    let mut w = World::new(BrakeSettings::disabled(), &FIVE);
    w.expire(&FIVE, 100);
    assert!(w.ports().is_empty());
    assert!(w.take_events().is_empty());
}

#[test]
fn members_joining_and_leaving_in_the_window_count_in_the_population() {
    // The churn benchmark's mix per backend: 30 members; per step 4 joins (one with a short
    // lease), 3 deletions and the expiry of an earlier short-lease member. Over a window that
    // is 25 expiries among ~150 members seen: never "most".
    let mut w = World::new(BrakeSettings::default(), &(1..=30).collect::<Vec<_>>());
    let mut long_lived: std::collections::VecDeque<u16> = (1..=30).collect();
    let mut next = 1000u16;
    for step in 0..200u64 {
        let at = 1000 + step * 400;
        let joins = [next, next + 1, next + 2, next + 3];
        w.register(&joins, at);
        long_lived.extend(&joins[1..]);
        let leaving: Vec<u16> = (0..3).filter_map(|_| long_lived.pop_front()).collect();
        w.delete(&leaving, at + 1);
        if step >= 2 {
            w.expire(&[next - 8], at + 2);
        }
        next += 4;
    }
    assert_eq!(w.held(), None);
    assert_eq!(w.ports().len(), 32);
}

#[test]
fn held_members_registering_again_clear_the_mark_without_leaving() {
    let mut w = World::new(BrakeSettings::default(), &FIVE);
    w.expire(&[1, 2, 3, 4], 100);
    w.take_events();
    w.register(&[1, 2], 200);
    assert_eq!(w.ports(), FIVE);
    assert_eq!(w.held(), Some(addr(&[3, 4])));
    w.register(&[3, 4], 300);
    assert_eq!(w.ports(), FIVE);
    assert_eq!(w.held(), None);
    assert_eq!(
        w.take_events(),
        [
            "released 127.0.0.1:1",
            "released 127.0.0.1:2",
            "released 127.0.0.1:3",
            "released 127.0.0.1:4",
            "cleared recovered "
        ]
    );
    // The earlier expiries were not departures: one more expiry is just one.
    w.expire(&[5], 400);
    assert_eq!(w.ports(), [1, 2, 3, 4]);
}

#[test]
fn confirming_drops_the_held_members() {
    let mut w = World::new(BrakeSettings::default(), &FIVE);
    w.expire(&[1, 2, 3, 4], 100);
    w.take_events();
    assert_eq!(
        w.brake.confirm("web"),
        Ok(BrakeEvent::Cleared {
            backend: "web".into(),
            reason: ClearReason::Confirmed,
            dropped: addr(&[1, 2, 3, 4]),
        })
    );
    w.round(BTreeSet::new(), 200);
    assert_eq!(w.ports(), [5]);
    assert_eq!(w.held(), None);
    assert_eq!(w.brake.confirm("web"), Err(NothingHeld("web".into())));
    assert_eq!(w.brake.confirm("nope"), Err(NothingHeld("nope".into())));
}

#[test]
fn a_deleted_backend_forgets_its_held_members() {
    let mut w = World::new(BrakeSettings::default(), &FIVE);
    w.expire(&[1, 2, 3], 100);
    w.take_events();
    let mut events = Vec::new();
    w.brake.retain_backends(|_| false, &mut events);
    assert!(matches!(
        events.as_slice(),
        [BrakeEvent::Cleared {
            reason: ClearReason::Resubscribed,
            ..
        }]
    ));
    assert!(w.brake.degraded().is_empty());
}
