//! The API tells the truth during transitions, against `thalassa up` and a real HAProxy:
//! an old version's members that still serve stay listed (`"leaving": true`) until HAProxy
//! has removed them, and a member HAProxy refuses is listed as refused, with HAProxy's own
//! message, counted, logged once per cause and retried with backoff.

#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

mod support;

use serde_json::Value;
use std::time::Duration;
use support::{
    Load, Origin, eventually, free_port, get_once, require_haproxy, stack_with_app,
    stack_with_backend, wait_for_body,
};

const WAIT: Duration = Duration::from_secs(20);

fn member_at(members: &Value, port: u16) -> Option<&Value> {
    members
        .as_array()?
        .iter()
        .find(|m| m["port"].as_u64() == Some(u64::from(port)))
}

/// App at version 1 with one live member (`v1`), switched to version 2 whose only member
/// (`dead_port`) never passes a check: returned once the API lists v1 as leaving (`DRAIN`)
/// and the new member `DOWN`.
struct Switched {
    stack: support::Stack,
    port: u16,
    v1: Origin,
    dead_port: u16,
}

async fn switch_to_a_dead_version() -> Switched {
    let (stack, port) = stack_with_app("1").await;
    let v1 = Origin::start("v1").await;
    stack.register_origin("app", "1", &v1).await;
    let dead_port = free_port();
    stack
        .register(
            &format!("app/2/127.0.0.1/{dead_port}"),
            r#"{"secondsToExpire":600}"#,
        )
        .await;
    wait_for_body(port, "v1").await;

    let (status, body) = stack
        .aqueduct_post("/backends/app", r#"{"version":"2"}"#)
        .await;
    assert_eq!((status, body.as_str()), (200, "200"));
    // Statuses come from a `show stat` sample (one a second) while the member list is current:
    // right after the switch, the latest sample may predate it (under load it can even be the
    // one taken while v1 was still joining, in maintenance). Awaited, not read once.
    eventually(WAIT, "v1 listed as leaving (DRAIN) next to v2", || async {
        let members = stack.get_json("/backends/app/members").await;
        let old = member_at(&members, v1.port())?;
        let new = member_at(&members, dead_port)?;
        (old["leaving"] == true && old["status"] == "DRAIN" && new["status"] == "DOWN")
            .then_some(())
    })
    .await;
    Switched {
        stack,
        port,
        v1,
        dead_port,
    }
}

/// A switch to a version whose only member never passes a check: the old member keeps
/// serving (make before break), and the API keeps listing it, as leaving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_members_serving_through_a_switch_stay_listed_as_leaving() {
    if !require_haproxy() {
        return;
    }
    let Switched {
        stack,
        port,
        v1,
        dead_port,
    } = switch_to_a_dead_version().await;
    // It does serve: nothing better is there yet.
    assert_eq!(get_once(port, "/").await, Ok((200, "v1".to_owned())));
    // The backend row says the same.
    let row = stack.get_json("/backends/app").await;
    assert!(
        member_at(&row["members"], v1.port()).is_some_and(|m| m["leaving"] == true),
        "{row}"
    );
    // Back to version 1: it is a member again, no longer leaving.
    stack
        .aqueduct_post("/backends/app", r#"{"version":"1"}"#)
        .await;
    eventually(WAIT, "v1 a member again", || async {
        let members = stack.get_json("/backends/app/members").await;
        let old = member_at(&members, v1.port())?;
        (old.get("leaving").is_none()
            && old["status"] == "UP"
            && member_at(&members, dead_port).is_none())
        .then_some(())
    })
    .await;
}

/// A structural reload while an old version's member is kept serving (the new one still
/// joining) keeps it: the reload renders it, so it is neither dropped with the old config nor
/// brought back in maintenance. The model test's seed 14974405765699040425 saw 71 x 503: a
/// switch, then a backend deleted and re-created elsewhere, and f0's only serving server gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_during_a_switch_keeps_the_old_member_serving() {
    if !require_haproxy() {
        return;
    }
    let Switched {
        stack,
        port,
        v1,
        dead_port: _,
    } = switch_to_a_dead_version().await;

    let load = Load::start(port, 1);
    load.wait_ok(20).await;
    let before = load.snapshot();
    let reloaded_at = std::time::Instant::now();
    let reloads = stack.metric_total("thalassa_haproxy_reloads_total").await;
    let other = free_port();
    let (status, body) = stack
        .put(
            "/frontends/other",
            &format!(r#"{{"bind":"127.0.0.1:{other}","backend":"app","mode":"http"}}"#),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        stack.metric_total("thalassa_haproxy_reloads_total").await,
        reloads + 1
    );
    let config = stack.get_text("/haproxy/config").await;
    assert!(
        config.contains(&format!(
            "# leaving: kept in service until removed\n    server app_127.0.0.1:{0} 127.0.0.1:{0} check inter 100\n",
            v1.port()
        )),
        "{config}"
    );
    load.wait_ok(100).await;
    let report = load.report_since(&before, reloaded_at);
    load.stop().await;
    report.print("structural reload while v1 is kept for v2");
    assert_eq!(report.failed, 0, "no request may fail: {:?}", report.kinds);
    let members = stack.get_json("/backends/app/members").await;
    assert_eq!(member_at(&members, v1.port()).unwrap()["leaving"], true);
}

/// Make before break holds for a deletion too: deleting the registration of a backend's only
/// serving member while another member is still joining keeps it serving (listed as leaving)
/// until the newcomer passes a check; only then does it go. The fast lane, which drains a
/// deleted registration's server at once, must not empty the backend meanwhile (the model
/// test's seed 11443337096768534184 saw 503s there: a deleted member, the backend's last
/// serving one, drained while its replacement was joining).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_last_serving_member_while_another_joins_keeps_it_until_that_one_serves() {
    if !require_haproxy() {
        return;
    }
    let (stack, port) = stack_with_app("1").await;
    let a = Origin::start("a").await;
    stack.register_origin("app", "1", &a).await;
    wait_for_body(port, "a").await;
    // Nothing listens on b's port yet: it joins and stays joining.
    let b_port = free_port();
    let b_id = format!("app/1/127.0.0.1/{b_port}");
    stack.register(&b_id, r#"{"secondsToExpire":600}"#).await;
    eventually(WAIT, "b joining in HAProxy", || async {
        let members = stack.get_json("/backends/app/members").await;
        (member_at(&members, b_port)?["status"] == "DOWN").then_some(())
    })
    .await;

    let load = Load::start(port, 1);
    load.wait_ok(20).await;
    let before = load.snapshot();
    let deleted_at = std::time::Instant::now();
    let (status, _) = stack
        .deregister(&format!("app/1/127.0.0.1/{}", a.port()))
        .await;
    assert_eq!(status, 200);
    // a keeps serving, listed as leaving, while b cannot serve.
    eventually(WAIT, "a listed as leaving", || async {
        let members = stack.get_json("/backends/app/members").await;
        (member_at(&members, a.port())?["leaving"] == true).then_some(())
    })
    .await;
    load.wait_ok(50).await;
    let b = Origin::start_on("b", b_port).await;
    wait_for_body(port, "b").await;
    eventually(WAIT, "a gone once b serves", || async {
        let members = stack.get_json("/backends/app/members").await;
        member_at(&members, a.port()).is_none().then_some(())
    })
    .await;
    load.wait_ok(20).await;
    let report = load.report_since(&before, deleted_at);
    load.stop().await;
    report.print("delete the last serving member while another joins");
    assert_eq!(report.failed, 0, "no request may fail: {:?}", report.kinds);
    assert!(b.count() > 0);
}

/// `static-rr` takes no runtime servers: HAProxy refuses the member's `add server`. The API
/// says so in HAProxy's words, a metric counts it, the log says it once (not on every retry),
/// and once the backend can take it (another balance) the member joins and serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_haproxy_refuses_is_listed_as_refused_and_retried() {
    if !require_haproxy() {
        return;
    }
    let backend = |balance: &str| {
        format!(
            r#"{{"type":"dynamic","name":"app","version":"1","balance":"{balance}","mode":"http","health":{{"interval":100}}}}"#
        )
    };
    let (stack, port) = stack_with_backend("app", &backend("static-rr")).await;
    let origin = Origin::start("app").await;
    stack.register_origin("app", "1", &origin).await;

    let member = eventually(WAIT, "the member listed as refused", || async {
        let members = stack.get_json("/backends/app/members").await;
        let member = member_at(&members, origin.port())?.clone();
        (member["status"] == "REFUSED").then_some(member)
    })
    .await;
    let error = member["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.to_lowercase().contains("dynamic"),
        "HAProxy's own message: {member}"
    );
    eventually(WAIT, "the refusal counted", || async {
        (stack.metric_total("thalassa_members_refused").await == 1).then_some(())
    })
    .await;
    // Retries go on with backoff (1 s, 2 s, ...): within 4 s, at most a few, logged once.
    let adds = || async {
        let text = stack.get_text("/metrics").await;
        text.lines()
            .find_map(|l| {
                l.strip_prefix(r#"thalassa_runtime_commands_total{kind="add",outcome="error"} "#)
            })
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = adds().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let retries = adds().await - before;
    assert!(
        retries <= 3,
        "{retries} refused adds in 4 s: not backing off"
    );
    let logged = stack
        .proc
        .log_text()
        .matches("haproxy refused a member")
        .count();
    assert_eq!(logged, 1, "logged once per cause, not per retry");

    // A balance that takes runtime servers: the member joins, serves, and is no longer refused.
    let (status, body) = stack.put("/backends/app", &backend("roundrobin")).await;
    assert_eq!(status, 200, "{body}");
    wait_for_body(port, "app").await;
    eventually(WAIT, "the refusal to be over", || async {
        let members = stack.get_json("/backends/app/members").await;
        let member = member_at(&members, origin.port())?;
        (member["status"] == "UP"
            && member.get("error").is_none()
            && stack.metric_total("thalassa_members_refused").await == 0)
            .then_some(())
    })
    .await;
}

/// Readiness is event-driven: the aqueduct streams HAProxy's health-check ring, and follows it
/// to the new worker after a reload (the old worker's stream goes silent): a member that joins
/// after the reload is heard passing its check there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passing_checks_are_heard_from_the_ring_across_reloads() {
    if !require_haproxy() {
        return;
    }
    let (stack, port) = stack_with_app("1").await;
    let passed = || async {
        let text = stack.get_text("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(r#"thalassa_health_events_total{kind="passed"} "#))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let first = Origin::start("first").await;
    stack.register_origin("app", "1", &first).await;
    wait_for_body(port, "first").await;
    eventually(WAIT, "the first member's passing check heard", || async {
        (passed().await >= 1).then_some(())
    })
    .await;

    // A structural change reloads HAProxy: a new worker, a new ring.
    let reloads = stack.metric_total("thalassa_haproxy_reloads_total").await;
    let (status, body) = stack
        .put(
            "/backends/app",
            r#"{"type":"dynamic","name":"app","version":"1","mode":"http","balance":"leastconn","health":{"interval":100}}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(stack.metric_total("thalassa_haproxy_reloads_total").await > reloads);
    let before = passed().await;
    let second = Origin::start("second").await;
    stack.register_origin("app", "1", &second).await;
    eventually(WAIT, "the second member's passing check heard", || async {
        (passed().await > before).then_some(())
    })
    .await;
    eventually(WAIT, "the second member to serve", || async {
        let members = stack.get_json("/backends/app/members").await;
        (member_at(&members, second.port())?["status"] == "UP").then_some(())
    })
    .await;
}

/// Members registered by DNS name: a name that resolves serves at its address, listed with
/// its name as `host` and the address beside it; one that does not is listed as
/// `UNRESOLVED` with the resolver's reason (never dropped silently), and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_registered_by_dns_name_are_resolved_or_shown_unresolved() {
    if !require_haproxy() {
        return;
    }
    let (stack, port) = stack_with_app("1").await;
    let origin = Origin::start("by-name").await;
    let (status, body) = stack
        .register(
            &format!("app/1/localhost/{}", origin.port()),
            r#"{"secondsToExpire":600}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = stack
        .register(
            "app/1/no-such-host.invalid/8080",
            r#"{"secondsToExpire":600}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    wait_for_body(port, "by-name").await;
    eventually(
        WAIT,
        "both members listed, one UP and one UNRESOLVED",
        || async {
            let members = stack.get_json("/backends/app/members").await;
            let named = member_at(&members, origin.port())?;
            let lost = member_at(&members, 8080)?;
            (named["host"] == "localhost"
                && named["address"] == "127.0.0.1"
                && named["status"] == "UP"
                && lost["host"] == "no-such-host.invalid"
                && lost["status"] == "UNRESOLVED"
                && lost["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("no-such-host.invalid")))
            .then_some(())
        },
    )
    .await;
    eventually(WAIT, "the unresolved name counted", || async {
        let metrics = stack.get_text("/metrics").await;
        metrics
            .lines()
            .any(|l| l == "thalassa_member_names_unresolved 1")
            .then_some(())
    })
    .await;
    // HAProxy has exactly the resolved member's server.
    let config = stack.get_json("/backends/app").await;
    assert_eq!(
        config["members"].as_array().map(Vec::len),
        Some(2),
        "{config}"
    );
}
