//! Progressive delivery against a real HAProxy: a dynamic backend rolls out from version 1
//! to version 2 by weight, with no reload.
//! - At 5, 25 and 50 % the measured share of new sessions on version 2 is within 3 points of
//!   the target (2,000 sessions each), whatever the member counts (two old members, one new);
//!   sticky clients (the backend's cookie, or its hash) never move back to the old version
//!   (with the cookie, not at all); no request under load fails; nothing reloads. Weight 100
//!   finishes the switch and the old members leave.
//! - A plan whose new version answers 500 on 20 % of requests aborts by itself once
//!   `minRequests` reached it, within the step's interval; traffic returns fully to version 1,
//!   and the decision and the activity entry name the measured error rate.
//! - A healthy plan, with the aqueduct restarted mid-way, resumes at the step it was at and
//!   promotes to 100 %; the old members leave.
//! - A structural reload mid-rollout keeps the split: the new worker starts with every
//!   member's weight (rendered into haproxy.cfg), never equal weights for a moment.

#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

mod support;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use support::{Load, Origin, Stack, eventually, require_haproxy, stack_with_backend};
use thalassa::haproxy::runtime::RuntimeClient;

const WAIT: Duration = Duration::from_secs(30);

/// Sessions measured at each step.
const SESSIONS: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_sticky_split_follows_the_weights_without_a_reload() {
    weighted_split(Stickiness::Cookie).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_sticky_split_follows_the_weights_without_a_reload() {
    weighted_split(Stickiness::Hash).await;
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Stickiness {
    /// roundrobin with `stickyCookie`: a client sends back the cookie it got.
    Cookie,
    /// `balance hdr(X-Client)`: a client is its header.
    Hash,
}

async fn weighted_split(sticky: Stickiness) {
    if !require_haproxy() {
        return;
    }
    let balance = match sticky {
        Stickiness::Cookie => r#""balance":"roundrobin","stickyCookie":"SRV""#,
        Stickiness::Hash => r#""balance":"hdr(X-Client)""#,
    };
    let (stack, port) = stack_with_backend(
        "app",
        &format!(
            r#"{{"type":"dynamic","name":"app","version":"1","mode":"http",{balance},"health":{{"interval":100,"uri":"/health"}}}}"#
        ),
    )
    .await;
    let (old, new) = two_old_one_new(&stack).await;
    let reloads = stack.metric_total("thalassa_haproxy_reloads_total").await;
    let load = Load::start(port, 2);
    load.wait_ok(20).await;

    let clients: Vec<Client> = (0..200).map(|i| Client::new(sticky, i)).collect();
    let mut homes: BTreeMap<usize, String> = BTreeMap::new();
    for target in [5u8, 25, 50] {
        let (status, row) =
            rollout(&stack, &format!(r#"{{"version":"2","weight":{target}}}"#)).await;
        assert_eq!(status, 200, "{row}");
        assert_eq!(row["rollout"]["weight"], target, "{row}");
        weights_applied(&stack, target, old.len(), 1).await;
        let share = share_of_new_sessions(port, sticky, target).await;
        assert!(
            (share - f64::from(target)).abs() <= 3.0,
            "{sticky:?}: {share:.2}% of {SESSIONS} new sessions on version 2 at a {target}% step"
        );
        for client in &clients {
            let version = client.get(port).await;
            match homes.get(&client.id) {
                None => {
                    homes.insert(client.id, version);
                }
                Some(home) if home == "v2" || sticky == Stickiness::Cookie => assert_eq!(
                    &version, home,
                    "{sticky:?}: client {} left its version at the {target}% step",
                    client.id
                ),
                // A hash moves clients from the old version to the new one as it grows.
                Some(_) => {
                    homes.insert(client.id, version);
                }
            }
        }
    }
    assert_eq!(
        stack.metric_total("thalassa_haproxy_reloads_total").await,
        reloads,
        "{sticky:?}: a rollout's steps must not reload HAProxy"
    );
    let metrics = stack.get_text("/metrics").await;
    assert!(
        metrics.contains(r#"thalassa_rollout_weight_percent{backend="app",version="2"} 50"#),
        "{metrics}"
    );
    // The step's figures per version, as the engine measures them from the stats poller.
    eventually(
        WAIT,
        "the step's live figures in GET /backends/app",
        || async {
            let live = &stack.get_json("/backends/app").await["rollout"]["live"];
            let served = |side: &str| live[side]["requests"].as_u64().is_some_and(|n| n > 0);
            (served("new") && served("old") && live["new"]["errors"] == 0).then_some(())
        },
    )
    .await;

    let (status, row) = rollout(&stack, r#"{"version":"2","weight":100}"#).await;
    assert_eq!(status, 200, "{row}");
    assert_eq!(row["version"], "2", "weight 100 finishes the switch: {row}");
    assert_eq!(row["rollout"]["state"], "finished", "{row}");
    serving(&stack, &[new.port()]).await;
    stop_without_failures(load, &format!("{sticky:?}: a rollout")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_rolls_a_failing_version_back_by_itself() {
    if !require_haproxy() {
        return;
    }
    let (stack, port) = cookie_stack().await;
    let good = Origin::start("v1").await;
    let failing = Origin::start_failing("v2", 0, 5).await;
    stack.register_origin("app", "1", &good).await;
    stack.register_origin("app", "2", &failing).await;
    serving(&stack, &[good.port()]).await;
    let load = Load::start(port, 2);
    load.wait_ok(20).await;

    let interval = Duration::from_secs(30);
    let (status, row) = rollout(
        &stack,
        r#"{"version":"2","steps":[50,100],"interval":"30s","abort":{"errorRate":0.05,"minRequests":100}}"#,
    )
    .await;
    assert_eq!(status, 200, "{row}");
    let started = std::time::Instant::now();
    let row = eventually(
        interval,
        "the plan to abort the failing version",
        || async {
            let row = stack.get_json("/backends/app").await;
            (row["rollout"]["state"] == "aborted").then_some(row)
        },
    )
    .await;
    assert!(
        started.elapsed() < interval,
        "aborted within the step's interval"
    );
    let decision = row["rollout"]["decisions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(decision["action"], "abort", "{row}");
    let measured = decision["figures"]["new"]["errorRate"].as_f64().unwrap();
    assert!(
        (0.1..=0.3).contains(&measured),
        "measured {measured}: {decision}"
    );
    let requests = decision["figures"]["new"]["requests"].as_u64().unwrap();
    assert!(requests >= 100, "judged after minRequests: {decision}");
    let shown = format!("{:.1}%", measured * 100.0);
    assert!(
        decision["reason"].as_str().unwrap().contains(&shown),
        "the reason names the measured rate {shown}: {decision}"
    );
    assert_eq!(row["version"], "1", "{row}");

    serving(&stack, &[good.port()]).await;
    let before = load.snapshot();
    load.wait_ok(before.ok + 300).await;
    let after = load.snapshot();
    load.stop().await;
    assert_eq!(
        after.failed, before.failed,
        "after the abort every request goes to version 1: {:?}",
        after.failures
    );
    let activity = stack.get_json("/ui/api/activity?limit=200").await;
    let entry = activity
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["verb"] == "rollout-abort")
        .unwrap_or_else(|| panic!("no rollout-abort activity: {activity}"))
        .clone();
    assert!(entry.to_string().contains(&shown), "{entry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_plan_resumes_after_a_restart_and_promotes() {
    if !require_haproxy() {
        return;
    }
    let mut stack = Stack::start_leaving_haproxy_serving().await;
    let _haproxies = support::KillHaproxiesOnDrop(stack.dir.path().join("haproxy"));
    let port = support::free_port();
    let (status, answer) = stack
        .put(
            "/frontends/web",
            &format!(r#"{{"bind":"127.0.0.1:{port}","backend":"app","mode":"http"}}"#),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = stack.put("/backends/app", COOKIE_BACKEND).await;
    assert_eq!(status, 200, "{answer}");
    let old = Origin::start("v1").await;
    let new = [Origin::start("v2").await, Origin::start("v2").await];
    stack.register_origin("app", "1", &old).await;
    for origin in &new {
        stack.register_origin("app", "2", origin).await;
    }
    serving(&stack, &[old.port()]).await;
    let load = Load::start(port, 2);
    load.wait_ok(20).await;

    let (status, row) = rollout(
        &stack,
        // Long enough that the restart (HAProxy left serving: about a second) ends inside
        // the 50% step, so the step it resumes at is the one it left.
        r#"{"version":"2","steps":[10,50,100],"interval":"10s","abort":{"minRequests":20}}"#,
    )
    .await;
    assert_eq!(status, 200, "{row}");
    eventually(WAIT, "the plan to reach its 50% step", || async {
        let row = stack.get_json("/backends/app").await;
        (row["rollout"]["weight"] == 50).then_some(())
    })
    .await;
    stack.restart().await;
    let row = stack.get_json("/backends/app").await;
    assert_eq!(
        row["rollout"]["state"], "running",
        "resumed after the restart: {row}"
    );
    assert!(
        row["rollout"]["weight"] == 50 || row["rollout"]["state"] == "finished",
        "resumed at the step it was at: {row}"
    );
    let row = eventually(2 * WAIT, "the plan to promote version 2", || async {
        let row = stack.get_json("/backends/app").await;
        (row["rollout"]["state"] == "finished").then_some(row)
    })
    .await;
    assert_eq!(row["version"], "2", "{row}");
    let actions: Vec<&str> = row["rollout"]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["start", "advance", "finish"], "{row}");
    serving(&stack, &new.iter().map(Origin::port).collect::<Vec<_>>()).await;
    stop_without_failures(load, "the rollout and the restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_split() {
    if !require_haproxy() {
        return;
    }
    let (stack, _port) = cookie_stack().await;
    let (old, new) = two_old_one_new(&stack).await;
    let (status, row) = rollout(&stack, r#"{"version":"2","weight":25}"#).await;
    assert_eq!(status, 200, "{row}");
    weights_applied(&stack, 25, old.len(), 1).await;
    let reloads = stack.metric_total("thalassa_haproxy_reloads_total").await;
    // A structural change: HAProxy reloads, and its new worker must start with the split
    // (every member's weight is in haproxy.cfg), not flash back to equal weights.
    let (status, answer) = stack
        .put(
            "/frontends/other",
            &format!(
                r#"{{"bind":"127.0.0.1:{}","backend":"app","mode":"http"}}"#,
                support::free_port()
            ),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        stack.metric_total("thalassa_haproxy_reloads_total").await,
        reloads + 1,
        "the PUT reloaded"
    );
    let (w_old, w_new) = thalassa::config::rollout::split_weights(25, old.len(), 1);
    let expected: BTreeMap<u16, u32> = old
        .iter()
        .map(|o| (o.port(), u32::from(w_old)))
        .chain([(new.port(), u32::from(w_new))])
        .collect();
    let client = RuntimeClient::new(stack.admin_socket());
    let until = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < until {
        let rows = client.show_servers_state(Some("app")).await.unwrap();
        let weights: BTreeMap<u16, u32> = rows
            .iter()
            .filter_map(|r| Some((r.port?, r.weight)))
            .collect();
        assert_eq!(weights, expected, "after the reload");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_requests_that_cannot_work_are_refused_naming_the_field() {
    if !require_haproxy() {
        return;
    }
    let (stack, _port) = stack_with_backend(
        "app",
        r#"{"type":"dynamic","name":"app","version":"1","mode":"http"}"#,
    )
    .await;
    for (body, status, field) in [
        (r#"{"version":"2","weight":5}"#, 400, "sticky"),
        (
            r#"{"version":"1","weight":5,"sticky":false}"#,
            400,
            "version",
        ),
        (r#"{"version":"2","weight":500}"#, 400, "weight"),
        (r#"{"version":"2","steps":[5,50]}"#, 400, "steps"),
    ] {
        let (got, row) = rollout(&stack, body).await;
        assert_eq!(
            (got, row["field"].as_str()),
            (status, Some(field)),
            "{body}: {row}"
        );
    }
    let (got, row) = post(&stack, "/backends/app/rollout/pause", "{}").await;
    assert_eq!(got, 409, "no rollout to pause: {row}");
    let (got, _) = post(
        &stack,
        "/backends/none/rollout",
        r#"{"version":"2","weight":5}"#,
    )
    .await;
    assert_eq!(got, 404);
    let (got, row) = post(&stack, "/backends/app/rollout/sideways", "{}").await;
    assert_eq!(got, 404, "{row}");
    let (got, row) = rollout(&stack, r#"{"version":"2","weight":5,"sticky":false}"#).await;
    assert_eq!(
        (got, &row["rollout"]["sticky"]),
        (200, &Value::from("none")),
        "{row}"
    );
    let (got, row) = rollout(&stack, r#"{"version":"3","weight":5,"sticky":false}"#).await;
    assert_eq!(got, 409, "another version while one rolls out: {row}");
    let (got, row) = post(&stack, "/backends/app", r#"{"version":"3"}"#).await;
    assert_eq!(got, 409, "a switch while a rollout runs: {row}");
    // A PUT of the backend's settings keeps the rollout going.
    let (got, answer) = stack
        .put(
            "/backends/app",
            r#"{"type":"dynamic","name":"app","version":"1","mode":"http","balance":"random"}"#,
        )
        .await;
    assert_eq!(got, 200, "{answer}");
    assert_eq!(
        stack.get_json("/backends/app").await["rollout"]["state"],
        "running"
    );
    let row = delete(&stack, "/backends/app/rollout").await;
    assert_eq!(row["rollout"]["state"], "aborted", "{row}");
    assert_eq!(row["version"], "1", "{row}");
}

const COOKIE_BACKEND: &str = r#"{"type":"dynamic","name":"app","version":"1","mode":"http","stickyCookie":"SRV","health":{"interval":100,"uri":"/health"}}"#;

async fn cookie_stack() -> (Stack, u16) {
    stack_with_backend("app", COOKIE_BACKEND).await
}

/// Two members of `app@1` and one of `app@2` registered; waits until the two serve.
async fn two_old_one_new(stack: &Stack) -> ([Origin; 2], Origin) {
    let old = [Origin::start("v1").await, Origin::start("v1").await];
    let new = Origin::start("v2").await;
    for origin in &old {
        stack.register_origin("app", "1", origin).await;
    }
    stack.register_origin("app", "2", &new).await;
    serving(stack, &old.iter().map(Origin::port).collect::<Vec<_>>()).await;
    (old, new)
}

/// Stops `load` and asserts that none of its requests failed during `what`.
async fn stop_without_failures(load: Load, what: &str) {
    let stats = load.snapshot();
    load.stop().await;
    assert_eq!(
        stats.failed, 0,
        "no request may fail during {what} ({} ok): {:?}",
        stats.ok, stats.failures
    );
}

async fn rollout(stack: &Stack, body: &str) -> (u16, Value) {
    post(stack, "/backends/app/rollout", body).await
}

async fn post(stack: &Stack, path: &str, body: &str) -> (u16, Value) {
    let (status, text) = stack.aqueduct_post(path, body).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn delete(stack: &Stack, path: &str) -> Value {
    let response = support::client()
        .delete(format!("{}{path}", stack.aqueduct))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Waits until HAProxy's `app` holds exactly the servers on `ports`, all ready.
async fn serving(stack: &Stack, ports: &[u16]) {
    let client = RuntimeClient::new(stack.admin_socket());
    let expected: BTreeSet<String> = ports.iter().map(|p| format!("app_127.0.0.1:{p}")).collect();
    eventually(
        WAIT,
        &format!("app to serve exactly {expected:?}"),
        || async {
            let rows = client.show_servers_state(Some("app")).await.ok()?;
            let ready: BTreeSet<String> = rows
                .iter()
                .filter(|r| r.admin_state() == thalassa::haproxy::stat::AdminState::Ready)
                .map(|r| r.server.clone())
                .collect();
            (rows.len() == expected.len() && ready == expected).then_some(())
        },
    )
    .await;
}

/// Waits until every server of `app` is ready with the weight the split gives it.
async fn weights_applied(stack: &Stack, target: u8, old: usize, new: usize) {
    let (w_old, w_new) = thalassa::config::rollout::split_weights(target, old, new);
    let client = RuntimeClient::new(stack.admin_socket());
    eventually(
        WAIT,
        &format!("weights {w_old}/{w_new} for {target}%"),
        || async {
            let rows = client.show_servers_state(Some("app")).await.ok()?;
            let ready = rows
                .iter()
                .filter(|r| r.admin_state() == thalassa::haproxy::stat::AdminState::Ready)
                .count();
            let weights: Vec<u32> = rows.iter().map(|r| r.weight).collect();
            let expected_new = u32::from(w_new);
            let news = weights.iter().filter(|w| **w == expected_new).count();
            let olds = weights.iter().filter(|w| **w == u32::from(w_old)).count();
            let right = if w_old == w_new {
                news == old + new
            } else {
                news == new && olds == old
            };
            (ready == old + new && right).then_some(())
        },
    )
    .await;
}

/// The percentage of `SESSIONS` new sessions (no cookie; for a hash, clients never seen
/// before) that version 2 answered, sent 8 at a time.
async fn share_of_new_sessions(port: u16, sticky: Stickiness, step: u8) -> f64 {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let on_new = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (next, on_new) = (next.clone(), on_new.clone());
        workers.push(tokio::spawn(async move {
            let http = support::client();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= SESSIONS {
                    return;
                }
                let mut request = http.get(format!("http://127.0.0.1:{port}/"));
                if sticky == Stickiness::Hash {
                    request = request.header("X-Client", format!("session-{step}-{i}"));
                }
                let body = request.send().await.unwrap().text().await.unwrap();
                if body == "v2" {
                    on_new.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    100.0 * on_new.load(std::sync::atomic::Ordering::SeqCst) as f64 / SESSIONS as f64
}

/// A returning client: it keeps the cookie HAProxy gave it, or its own header.
struct Client {
    id: usize,
    sticky: Stickiness,
    cookie: std::sync::Mutex<Option<String>>,
}

impl Client {
    fn new(sticky: Stickiness, id: usize) -> Client {
        Client {
            id,
            sticky,
            cookie: std::sync::Mutex::new(None),
        }
    }

    /// The version that answers it.
    async fn get(&self, port: u16) -> String {
        let mut request = support::client().get(format!("http://127.0.0.1:{port}/"));
        match self.sticky {
            Stickiness::Hash => request = request.header("X-Client", format!("client-{}", self.id)),
            Stickiness::Cookie => {
                let cookie = self.cookie.lock().unwrap().clone();
                if let Some(cookie) = cookie {
                    request = request.header("Cookie", cookie);
                }
            }
        }
        let response = request.send().await.unwrap();
        if let Some(set) = response.headers().get("set-cookie") {
            let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
            *self.cookie.lock().unwrap() = Some(pair);
        }
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }
}
