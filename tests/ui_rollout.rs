//! A rollout of a new version on the Overview, in a real headless Chromium, against the UI
//! router with a hub this test feeds (the way the control plane will) and a stand-in for the
//! API's rollout controls: the card shows the new version's share as a progress bar, the plan's
//! step, the stickiness, the decisions with their reasons, and each version's error rate
//! computed in the page from the members' counters (across a counter reset); Pause, Resume,
//! Promote and Abort (which asks for a second click) POST to the API, are disabled while their
//! request runs, and show its answer or its error; an ended rollout is one line, without
//! controls. Screenshots go to target/ui-screenshots/.
#![allow(clippy::unwrap_used)] // a panic is a test failure

mod support;
mod ui_support;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use thalassa::status::{StatsSample, now_ms};
use thalassa::ui::{Hub, NodeLabel, router_for_node};
use tokio::sync::oneshot;
use ui_support::{Browser, FakeRegistry, Served, require_chromium};

const WEB: &str = "webapp-backend";
const DB: &str = "mysql-backend";
/// The planned rollout's card, and its rollout block.
const CARD: &str = "[data-backend='webapp-backend']";
const ROLLOUT: &str = "[data-rollout='webapp-backend']";
const ADVANCE_REASON: &str =
    "2.0.0: 0.4% errors of 812 requests, 1.0.0: 0.3% of 2,400; within limits";
const ABORT_REASON: &str = "2.0.0: 20.0% errors of 250 requests, above the 5.0% limit";

/// What the page can tell of the aqueduct: the UI router, a hub, a registry for the version
/// counts, and the stand-in rollout API.
struct Stack {
    _dir: tempfile::TempDir,
    hub: Hub,
    registry: FakeRegistry,
    _registry_server: Served,
    app: Served,
    api: RolloutApi,
}

/// A stand-in for `POST /backends/{key}/rollout/{pause,resume,promote,abort}`.
#[derive(Clone, Default)]
struct RolloutApi {
    /// `(path, body)` of every request, in order, recorded as it arrives.
    calls: Arc<Mutex<Vec<(String, Value)>>>,
    /// Answered once, instead of the row, to the next request: `(status, body)`.
    fail_next: Arc<Mutex<Option<(StatusCode, Value)>>>,
    /// While set, the next request waits for it before answering (so the test sees it pending).
    hold: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
    /// The backend row the API answers with: the last one fed to the hub.
    row: Arc<Mutex<Value>>,
}

impl Stack {
    async fn start(rollout: Value) -> Stack {
        let registry = FakeRegistry::default();
        let far = now_ms() + 10_000_000;
        registry.register(WEB, "1.0.0", "127.0.0.1", 18080, far);
        registry.register(WEB, "1.0.0", "127.0.0.1", 18081, far);
        registry.register(WEB, "2.0.0", "127.0.0.2", 18080, far);
        registry.register(DB, "1.0.0", "127.0.0.1", 13306, far);
        registry.register(DB, "1.1.0", "127.0.0.2", 13306, far);
        let registry_server = Served::start(registry.router()).await;
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::open(dir.path()).unwrap();
        let api = RolloutApi::default();
        let routes = axum::Router::new()
            .route(
                "/backends/{key}/rollout/{action}",
                axum::routing::post(control),
            )
            .with_state(api.clone());
        let app = routes.merge(router_for_node(
            hub.clone(),
            registry_server.url("").parse().expect("registry URL"),
            None,
            NodeLabel {
                id: "ui-host".into(),
                address: "http://aqueduct.test:10000".into(),
                fleet: false,
            },
        ));
        let stack = Stack {
            _dir: dir,
            hub,
            registry,
            _registry_server: registry_server,
            app: Served::start(app).await,
            api,
        };
        stack.feed(rollout);
        stack
    }

    fn url(&self, path: &str) -> String {
        self.app.url(path)
    }

    /// Pushes the config with `rollout` on webapp-backend (`null`: none), and a manual
    /// rollout on mysql-backend; the API answers with that webapp-backend row from now on.
    fn feed(&self, rollout: Value) {
        let version = if rollout["state"] == "finished" {
            "2.0.0"
        } else {
            "1.0.0"
        };
        let web = json!({
            "id": "backend/webapp-backend", "_type": "backend", "key": WEB, "type": "dynamic",
            "name": WEB, "version": version, "balance": "roundrobin", "host": null, "mode": "http",
            // The old version's members: the new one's are known from the stats (`version`).
            "members": self.registry.members(WEB, version), "natives": [],
            "stickyCookie": "SRV", "rollout": rollout,
        });
        let db = json!({
            "id": "backend/mysql-backend", "_type": "backend", "key": DB, "type": "dynamic",
            "name": DB, "version": "1.0.0", "balance": "source", "host": null, "mode": "tcp",
            "members": self.registry.members(DB, "1.0.0"), "natives": [],
            "rollout": manual_rollout(),
        });
        *self.api.row.lock().unwrap() = web.clone();
        self.hub
            .config(json!({"frontends": [], "backends": [db, web]}));
    }

    /// One stats poll where each `(host:port, version, requests, errors)` server of
    /// webapp-backend has those cumulative counters.
    fn stats(&self, time: u64, servers: &[(&str, &str, u64, u64)]) {
        let members: Vec<Value> = servers
            .iter()
            .map(|(address, version, requests, errors)| {
                let (host, port) = address.split_once(':').unwrap();
                json!({
                    "server": format!("{WEB}_{address}"), "host": host,
                    "port": port.parse::<u16>().unwrap(), "status": "UP", "checkStatus": "L7OK",
                    "checkDurationMs": 1, "lastChangeS": 30, "scur": 1, "rate": 4,
                    "version": version, "requests": requests, "errors": errors, "rtimeMs": 2,
                    "weight": if *version == "2.0.0" { 64 } else { 192 },
                })
            })
            .collect();
        let row = json!({"status": "UP", "scur": 3, "smax": 9, "reqRate": 0, "rate": 12});
        self.hub.stats(stats_sample(json!({
            "time": time, "frontends": {}, "backends": {WEB: row},
            "members": {WEB: members},
        })));
    }
}

/// The sample the hub broadcasts, from its wire form. The page computes the error rates from
/// the members' `version`, `requests` and `errors`: fail plainly when `MemberSample` does not
/// carry them (rather than time out waiting for charts that cannot fill).
fn stats_sample(wire: Value) -> StatsSample {
    let sample: StatsSample = serde_json::from_value(wire.clone()).unwrap();
    let sent = serde_json::to_value(&sample).unwrap();
    for (before, after) in wire["members"][WEB]
        .as_array()
        .unwrap()
        .iter()
        .zip(sent["members"][WEB].as_array().unwrap())
    {
        for field in ["version", "requests", "errors", "rtimeMs", "weight"] {
            assert_eq!(
                after[field], before[field],
                "MemberSample drops {field:?}: the server side of rollouts (member counters in \
                 the stats samples) is missing"
            );
        }
    }
    sample
}

/// What the API does, as far as the page can tell: it records the request and answers with
/// the backend row, or with the error it was told to give once.
async fn control(
    State(api): State<RolloutApi>,
    Path((key, action)): Path<(String, String)>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    api.calls
        .lock()
        .unwrap()
        .push((format!("/backends/{key}/rollout/{action}"), body));
    let held = api.hold.lock().unwrap().take();
    if let Some(held) = held {
        let _ = held.await;
    }
    if let Some((status, error)) = api.fail_next.lock().unwrap().take() {
        return (status, axum::Json(error)).into_response();
    }
    axum::Json(api.row.lock().unwrap().clone()).into_response()
}

/// A planned rollout of webapp-backend 1.0.0 -> 2.0.0 in `state`, at its second step (25%),
/// with `decisions` after its start and first advance.
fn planned_rollout(state: &str, weight: u64, decisions: &[Value]) -> Value {
    let started = now_ms() - 90_000;
    let mut all = vec![
        json!({"time": started, "action": "start", "weight": 5,
               "reason": "rollout of 2.0.0 started by API, plan 5, 25, 50, 100%"}),
        json!({"time": started + 60_000, "action": "advance", "weight": 25, "reason": ADVANCE_REASON,
               "figures": {"new": {"requests": 812, "errors": 3, "errorRate": 0.0037, "rtimeMs": 2},
                           "old": {"requests": 2400, "errors": 7, "errorRate": 0.0029, "rtimeMs": 1}}}),
    ];
    all.extend_from_slice(decisions);
    json!({
        "version": "2.0.0", "from": "1.0.0", "state": state, "weight": weight, "sticky": "cookie",
        "plan": {"steps": [5, 25, 50, 100], "interval": "60s", "intervalMs": 60_000,
                 "abort": {"errorRate": 0.05, "minRequests": 200, "latencyP95Ms": 500}},
        "step": 1, "stepStarted": started + 60_000, "decisions": all,
    })
}

/// A decision taken through the API (no figures).
fn by_api(action: &str, weight: u64, reason: &str) -> Value {
    json!({"time": now_ms(), "action": action, "weight": weight, "reason": reason})
}

/// mysql-backend at 10% to 1.1.0, set by hand (no plan).
fn manual_rollout() -> Value {
    json!({
        "version": "1.1.0", "from": "1.0.0", "state": "running", "weight": 10, "sticky": "hash",
        "plan": null, "step": null, "stepStarted": now_ms() - 30_000,
        "decisions": [{"time": now_ms() - 30_000, "action": "weight", "weight": 10,
                       "reason": "weight of 1.1.0 set to 10% by API"}],
    })
}

/// The `data-action`s of the rollout's buttons, in order.
const BUTTONS: &str = "return Array.from(document.querySelectorAll(\"[data-rollout='webapp-backend'] button\")).map(b => b.dataset.action);";

async fn wait_buttons(browser: &Browser, what: &str, expected: &[&str]) {
    browser
        .wait_js(BUTTONS, what, |v| *v == json!(expected))
        .await;
}

async fn wait_status(browser: &Browser, what: &str, expected: &str) {
    browser
        .wait_text(&format!("{ROLLOUT} [role='status']"), what, |t| {
            t == Some(expected)
        })
        .await;
}

#[tokio::test]
async fn a_running_rollout_shows_its_progress_decisions_and_each_versions_error_rate() {
    if !require_chromium() {
        return;
    }
    let stack = Stack::start(planned_rollout("running", 25, &[])).await;
    let browser = Browser::start().await;
    browser.goto(&stack.url("/overview")).await;
    browser
        .wait_text("#connection", "the live stream", |t| t == Some("live"))
        .await;

    // Three polls: the new version fails 20% of its requests, the old none. HAProxy reloads
    // before the third: every counter restarts from 0.
    let (old_a, old_b, new) = ("127.0.0.1:18080", "127.0.0.1:18081", "127.0.0.2:18080");
    let start = now_ms();
    stack.stats(
        start,
        &[
            (old_a, "1.0.0", 1000, 2),
            (old_b, "1.0.0", 1000, 0),
            (new, "2.0.0", 100, 1),
        ],
    );
    stack.stats(
        start + 2000,
        &[
            (old_a, "1.0.0", 1500, 2),
            (old_b, "1.0.0", 1500, 0),
            (new, "2.0.0", 200, 21),
        ],
    );
    stack.stats(
        start + 4000,
        &[
            (old_a, "1.0.0", 300, 0),
            (old_b, "1.0.0", 300, 0),
            (new, "2.0.0", 50, 10),
        ],
    );

    let chart = |version: &str| {
        format!("[data-rollout-charts='{WEB}'] [data-version='{version}'] .chart-value")
    };
    browser
        .wait_text(&chart("2.0.0"), "the new version's error rate", |t| {
            t == Some("20.0% now · 20.0% peak")
        })
        .await;
    browser
        .wait_text(&chart("1.0.0"), "the old version's error rate", |t| {
            t == Some("0.0% now · 0.0% peak")
        })
        .await;
    let labels = browser
        .texts(&format!("[data-rollout-charts='{WEB}'] .chart-label"))
        .await;
    assert_eq!(labels, ["1.0.0 (old) errors", "2.0.0 (new) errors"]);
    let points = browser
        .js(
            "return document.querySelector(\"[data-rollout-charts='webapp-backend']\").dataset.points;",
            vec![],
        )
        .await;
    assert_eq!(points, "2", "a point per poll after the first");

    // Progress, plan, stickiness, decisions.
    let bar = format!("{ROLLOUT} [role='progressbar']");
    browser
        .wait_text(&bar, "the progress bar", |t| t == Some("25% to 2.0.0"))
        .await;
    let aria = browser
        .js(
            "const bar = document.querySelector(arguments[0]);
             return [bar.getAttribute('aria-valuenow'), bar.getAttribute('aria-valuemin'), bar.getAttribute('aria-valuemax')];",
            vec![json!(bar)],
        )
        .await;
    assert_eq!(aria, json!(["25", "0", "100"]));
    assert_eq!(
        browser
            .text(&format!("{ROLLOUT} .rollout-title"))
            .await
            .as_deref(),
        Some("Rollout 1.0.0 → 2.0.0")
    );
    assert_eq!(
        browser
            .text(&format!("{ROLLOUT} .rollout-head .badge"))
            .await
            .as_deref(),
        Some("RUNNING")
    );
    assert_eq!(
        browser
            .text(&format!("{ROLLOUT} .rollout-step"))
            .await
            .as_deref(),
        Some("step 2 of 4")
    );
    assert_eq!(
        browser
            .texts(&format!("{ROLLOUT} .steps [aria-current='step']"))
            .await,
        ["25%"]
    );
    let facts = browser.text(&format!("{ROLLOUT} .facts")).await.unwrap();
    for part in [
        "5%25%50%100% every 60s",
        "errors above 5.0% (of at least 200 requests) or responses slower than 500 ms on average",
        "by cookie SRV",
    ] {
        assert!(facts.contains(part), "{part:?} in {facts:?}");
    }
    assert_eq!(
        browser
            .text(&format!("{ROLLOUT} .decision.latest .reason"))
            .await
            .as_deref(),
        Some(ADVANCE_REASON)
    );
    let figures = browser
        .js(
            "return document.querySelector(arguments[0]).title;",
            vec![json!(format!("{ROLLOUT} .decision.latest"))],
        )
        .await;
    assert!(
        figures
            .as_str()
            .unwrap()
            .starts_with("new: 3 errors of 812 requests (0.4%), 2 ms · old: 7 errors of "),
        "the figures behind the decision: {figures}"
    );
    assert_eq!(
        browser.texts(&format!("{ROLLOUT} .decision .badge")).await,
        ["advance", "start"],
        "newest first"
    );
    wait_buttons(
        &browser,
        "the running rollout's controls",
        &["pause", "promote", "abort"],
    )
    .await;

    // Members say which version they run; the new one's is a member, not leaving.
    let tags = browser
        .texts(&format!("{CARD} .member .member-version"))
        .await;
    assert_eq!(tags, ["1.0.0", "1.0.0", "2.0.0"]);
    assert_eq!(browser.texts(&format!("{CARD} .leaving")).await.len(), 0);
    assert_eq!(
        browser.text(&format!("{CARD} .ring-text")).await.as_deref(),
        Some("3/3")
    );

    // A manual rollout: its weight, no steps, no limits.
    let manual = "[data-rollout='mysql-backend']";
    assert_eq!(
        browser
            .text(&format!("{manual} [role='progressbar']"))
            .await
            .as_deref(),
        Some("10% to 1.1.0")
    );
    assert_eq!(
        browser
            .text(&format!("{manual} .rollout-step"))
            .await
            .as_deref(),
        Some("manual weight")
    );
    let manual_facts = browser.text(&format!("{manual} .facts")).await.unwrap();
    assert!(
        manual_facts.contains("manual: the weight changes only through the API")
            && manual_facts.contains("by hash")
            && !manual_facts.contains("aborts on"),
        "{manual_facts}"
    );
    browser.full_screenshot("overview-rollout", 1366).await;

    // A phone: nothing of the rollout sticks out of its card.
    browser.client.set_window_size(390, 844).await.unwrap();
    let overflow = browser
        .wait_js(
            "if (window.innerWidth > 600) return 'not narrow yet';
             const wide = [document.documentElement];
             for (const el of document.querySelectorAll('.card, .card .rollout, .card .rollout *'))
               wide.push(el);
             return wide.filter(el => el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX !== 'hidden')
               .map(el => el.className || el.tagName);",
            "the phone layout",
            |v| v.is_array(),
        )
        .await;
    assert_eq!(overflow, json!([]), "overflowing on a phone");
    let layout = browser
        .js(
            "const card = document.querySelector(arguments[0]).getBoundingClientRect();
             const inside = Array.from(document.querySelectorAll(arguments[0] + ' .rollout *, ' + arguments[0] + ' .rollout-charts *'))
               .filter(el => { const r = el.getBoundingClientRect(); return r.width && (r.left < card.left - 1 || r.right > card.right + 1); });
             return inside.map(el => el.className || el.tagName);",
            vec![json!(CARD)],
        )
        .await;
    assert_eq!(layout, json!([]), "outside the card on a phone");
    browser.full_screenshot("overview-rollout-phone", 390).await;
    browser.close().await;
}

#[tokio::test]
async fn the_rollout_controls_post_to_the_api_and_show_its_answer() {
    if !require_chromium() {
        return;
    }
    let stack = Stack::start(planned_rollout("running", 25, &[])).await;
    let browser = Browser::start().await;
    browser.goto(&stack.url("/overview")).await;
    wait_buttons(&browser, "the controls", &["pause", "promote", "abort"]).await;
    let calls = || stack.api.calls.lock().unwrap().clone();

    // Pause: the controls wait for the API's answer, then say it.
    let (release, held) = oneshot::channel();
    *stack.api.hold.lock().unwrap() = Some(held);
    browser
        .click(&format!("{ROLLOUT} button[data-action='pause']"))
        .await;
    wait_status(&browser, "the pending pause", "pausing…").await;
    let disabled = browser
        .wait_js(
            "return Array.from(document.querySelectorAll(\"[data-rollout='webapp-backend'] button\")).map(b => b.disabled);",
            "the disabled controls",
            |v| *v == json!([true, true, true]),
        )
        .await;
    assert_eq!(disabled, json!([true, true, true]));
    release.send(()).unwrap();
    wait_status(&browser, "the pause's answer", "paused: the weight holds").await;
    assert_eq!(
        calls(),
        [(format!("/backends/{WEB}/rollout/pause"), json!({}))]
    );

    // The control plane paused it: Resume replaces Pause.
    let paused = [by_api("pause", 25, "paused by API")];
    stack.feed(planned_rollout("paused", 25, &paused));
    wait_buttons(
        &browser,
        "the paused rollout's controls",
        &["resume", "promote", "abort"],
    )
    .await;
    browser
        .wait_text(&format!("{ROLLOUT} .rollout-head .badge"), "PAUSED", |t| {
            t == Some("PAUSED")
        })
        .await;

    // The API refuses once: its message is shown and the controls work again.
    *stack.api.fail_next.lock().unwrap() = Some((
        StatusCode::CONFLICT,
        json!({"error": "rollout of webapp-backend is not running", "field": "state"}),
    ));
    browser
        .click(&format!("{ROLLOUT} button[data-action='promote']"))
        .await;
    wait_status(
        &browser,
        "the API's error",
        "promote failed: rollout of webapp-backend is not running",
    )
    .await;
    browser
        .wait_js(
            "return document.querySelector(\"[data-rollout='webapp-backend'] button[data-action='promote']\").disabled;",
            "the controls enabled again",
            |v| *v == json!(false),
        )
        .await;
    browser
        .full_screenshot("overview-rollout-refused", 1366)
        .await;

    // Resume, then running again.
    browser
        .click(&format!("{ROLLOUT} button[data-action='resume']"))
        .await;
    wait_status(&browser, "the resume's answer", "resumed").await;
    let resumed = [paused[0].clone(), by_api("resume", 25, "resumed by API")];
    stack.feed(planned_rollout("running", 25, &resumed));
    wait_buttons(
        &browser,
        "the resumed rollout's controls",
        &["pause", "promote", "abort"],
    )
    .await;

    // Promote.
    browser
        .click(&format!("{ROLLOUT} button[data-action='promote']"))
        .await;
    wait_status(
        &browser,
        "the promote's answer",
        "promoted: every new session goes to the new version",
    )
    .await;

    // Abort asks for a second click in the page; "Keep going" takes it back.
    let before = calls().len();
    browser
        .click(&format!("{ROLLOUT} button[data-action='abort']"))
        .await;
    wait_buttons(
        &browser,
        "the abort confirmation",
        &["pause", "promote", "confirm-abort", "keep"],
    )
    .await;
    wait_status(
        &browser,
        "what an abort does",
        "Abort sends every new session back to 1.0.0.",
    )
    .await;
    browser
        .click(&format!("{ROLLOUT} button[data-action='keep']"))
        .await;
    wait_buttons(
        &browser,
        "the abort taken back",
        &["pause", "promote", "abort"],
    )
    .await;
    assert_eq!(
        calls().len(),
        before,
        "nothing sent before the confirmation"
    );
    browser
        .click(&format!("{ROLLOUT} button[data-action='abort']"))
        .await;
    browser
        .click(&format!("{ROLLOUT} button[data-action='confirm-abort']"))
        .await;
    wait_status(
        &browser,
        "the abort's answer",
        "aborted: every new session goes back to the old version",
    )
    .await;
    let sent: Vec<String> = calls()
        .into_iter()
        .map(|(path, body)| {
            assert_eq!(body, json!({}), "{path}");
            path.rsplit('/').next().unwrap().to_owned()
        })
        .collect();
    assert_eq!(sent, ["pause", "promote", "resume", "promote", "abort"]);

    // Aborted: one line with the reason, no controls, no charts.
    let mut aborted = planned_rollout("aborted", 0, &resumed);
    aborted["decisions"]
        .as_array_mut()
        .unwrap()
        .push(json!({"time": now_ms(), "action": "abort", "weight": 0, "reason": ABORT_REASON,
                     "figures": {"new": {"requests": 250, "errors": 50, "errorRate": 0.2, "rtimeMs": 3},
                                 "old": {"requests": 3000, "errors": 3, "errorRate": 0.001, "rtimeMs": 1}}}));
    stack.feed(aborted);
    let summary = browser
        .wait_text(
            &format!("{ROLLOUT} .rollout-summary"),
            "the aborted summary",
            |t| t.is_some_and(|t| t.starts_with("ABORTED")),
        )
        .await
        .unwrap();
    assert!(
        summary.contains("Rollout 1.0.0 → 2.0.0 aborted at ") && summary.ends_with(ABORT_REASON),
        "{summary}"
    );
    assert_eq!(browser.texts(&format!("{ROLLOUT} button")).await.len(), 0);
    assert_eq!(
        browser
            .texts(&format!("{CARD} [data-rollout-charts]"))
            .await
            .len(),
        0
    );
    browser
        .full_screenshot("overview-rollout-aborted", 1366)
        .await;

    // Finished: the row runs the new version; the summary says so.
    let mut finished = planned_rollout("finished", 100, &[]);
    finished["decisions"].as_array_mut().unwrap().push(by_api(
        "finish",
        100,
        "2.0.0 took every session; 1.0.0 retired",
    ));
    stack.feed(finished);
    let summary = browser
        .wait_text(
            &format!("{ROLLOUT} .rollout-summary"),
            "the finished summary",
            |t| t.is_some_and(|t| t.starts_with("FINISHED")),
        )
        .await
        .unwrap();
    assert!(
        summary.ends_with("2.0.0 took every session; 1.0.0 retired"),
        "{summary}"
    );
    assert_eq!(browser.texts(&format!("{ROLLOUT} button")).await.len(), 0);
    browser.close().await;
}
