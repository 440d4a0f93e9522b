//! The UI in a real headless Chromium, against the UI router served with a hub this test feeds
//! (the way the control plane will): the walkthrough state renders, members go DOWN -> UP -> DOWN
//! on screen, the version drop-down switches, activity appears, the registry counts down, the
//! page recovers from a server restart, and phones get a layout that fits. Screenshots of every
//! page go to target/ui-screenshots/.
#![allow(clippy::unwrap_used)]

mod support;
mod ui_support;

use axum::extract::{Path, State};
use fantoccini::Locator;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thalassa::auth::{AuthPolicy, Token};
use thalassa::status::{Activity, MemberSample, ProxySample, StatsSample, now_ms};
use thalassa::ui::{Hub, NodeLabel, router_for_node};
use ui_support::{Browser, FakeRegistry, Served, require_chromium};

/// The aqueduct as far as the page can tell: the UI router plus a stand-in for the API's version
/// switch, with a hub fed like the control plane feeds it.
struct Stack {
    dir: tempfile::TempDir,
    hub: Hub,
    registry: FakeRegistry,
    registry_server: Served,
    app: Option<Served>,
    /// Bodies of `POST /backends/{key}` as `(key, body)`.
    switches: Arc<Mutex<Vec<(String, Value)>>>,
    /// Backend versions, as the API would hold them.
    versions: Arc<Mutex<Vec<(String, String)>>>,
    /// Tokens guarding the page's API calls (open by default).
    policy: AuthPolicy,
    /// What the API's `GET /fleet` answers; `None`: 404, as an aqueduct without `--store`.
    fleet: Arc<Mutex<Option<Value>>>,
}

#[derive(Clone)]
struct ApiState {
    hub: Hub,
    registry: FakeRegistry,
    switches: Arc<Mutex<Vec<(String, Value)>>>,
    versions: Arc<Mutex<Vec<(String, String)>>>,
    fleet: Arc<Mutex<Option<Value>>>,
}

const WEB: &str = "webapp-backend";
const DB: &str = "mysql-backend";

impl Stack {
    async fn start() -> Stack {
        Self::start_with(AuthPolicy::open()).await
    }

    async fn start_with(policy: AuthPolicy) -> Stack {
        let registry = FakeRegistry::default();
        let far = now_ms() + 10_000_000;
        registry.register(WEB, "1.0.0", "127.0.0.1", 18080, far);
        registry.register(WEB, "1.0.0", "127.0.0.1", 18081, far + 1);
        registry.register(WEB, "2.0.0", "127.0.0.2", 18080, now_ms() + 90_000);
        registry.register(DB, "1.0.0", "127.0.0.1", 13306, far + 2);
        let registry_server = Served::start(registry.router()).await;
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::open(dir.path()).unwrap();
        let mut stack = Stack {
            dir,
            hub,
            registry,
            registry_server,
            app: None,
            switches: Arc::default(),
            versions: Arc::new(Mutex::new(vec![
                (WEB.into(), "1.0.0".into()),
                (DB.into(), "1.0.0".into()),
            ])),
            policy,
            fleet: Arc::default(),
        };
        stack.push_config();
        stack.hub.activity(Activity::now(
            "started",
            "aqueduct",
            json!({"version": "0.1.0"}),
        ));
        stack.serve(0).await;
        stack
    }

    async fn serve(&mut self, port: u16) {
        let state = ApiState {
            hub: self.hub.clone(),
            registry: self.registry.clone(),
            switches: self.switches.clone(),
            versions: self.versions.clone(),
            fleet: self.fleet.clone(),
        };
        let api = axum::Router::new()
            .route("/backends/{key}", axum::routing::post(switch_version))
            .route("/fleet", axum::routing::get(fleet_view))
            .with_state(state);
        let registry = self.registry_server.url("").parse().expect("registry URL");
        let app = api.merge(router_for_node(
            self.hub.clone(),
            registry,
            None,
            NodeLabel {
                id: "ui-host".into(),
                address: "http://aqueduct.test:10000".into(),
                fleet: false,
            },
        ));
        let app = thalassa::auth::guard(app, self.policy.clone());
        self.app = Some(Served::start_on(app, port).await);
    }

    fn url(&self, path: &str) -> String {
        self.app.as_ref().unwrap().url(path)
    }

    fn push_config(&self) {
        self.hub
            .config(walkthrough(&self.registry, &self.versions.lock().unwrap()));
    }

    /// A stats sample where each `(backend, host:port, status, check)` member has that state.
    fn stats(&self, members: &[(&str, &str, &str, &str)]) -> u64 {
        let time_ms = now_ms();
        let mut sample = StatsSample {
            time_ms,
            ..StatsSample::default()
        };
        let proxy = |status: &str, scur: u64| ProxySample {
            status: status.into(),
            scur,
            smax: 12,
            req_rate: 7,
            rate: 3,
        };
        sample
            .frontends
            .insert("webapp-frontend".into(), proxy("OPEN", 4));
        sample
            .frontends
            .insert("mysql-frontend".into(), proxy("OPEN", 1));
        for (backend, address, status, check) in members {
            let (host, port) = address.split_once(':').unwrap();
            let up = *status == "UP";
            // HAProxy's backend row is UP while any server is.
            let any_up = members.iter().any(|m| m.0 == *backend && m.2 == "UP");
            sample.backends.insert(
                backend.to_string(),
                proxy(if any_up { "UP" } else { "DOWN" }, 2),
            );
            sample
                .members
                .entry(backend.to_string())
                .or_default()
                .push(MemberSample {
                    server: format!("{backend}_{address}"),
                    host: host.into(),
                    port: port.parse().unwrap(),
                    status: status.to_string(),
                    check_status: Some(check.to_string()),
                    check_duration_ms: Some(if up { 1 } else { 0 }),
                    last_change_s: Some(5),
                    scur: u64::from(up),
                    rate: if up { 3 } else { 0 },
                    ..MemberSample::default()
                });
        }
        self.hub.stats(sample);
        time_ms
    }
}

/// The walkthrough's two frontends and two dynamic backends, as the API's GETs return them,
/// plus a third frontend whose backend does not exist yet.
fn walkthrough(registry: &FakeRegistry, versions: &[(String, String)]) -> Value {
    let version = |key: &str| versions.iter().find(|(k, _)| k == key).unwrap().1.clone();
    let (web, db) = (version(WEB), version(DB));
    json!({
        "frontends": [
            {"id": "frontend/api-frontend", "_type": "frontend", "key": "api-frontend", "bind": "*:8443",
             "backend": "api-backend", "mode": "http", "keepalive": "default",
             "rules": [{"type": "header", "header": "host", "operation": "hdr_dom",
                        "value": "admin.example.test", "backend": WEB}],
             "natives": ["http-request set-header X-Via thalassa"], "waitingForBackend": "api-backend"},
            {"id": "frontend/mysql-frontend", "_type": "frontend", "key": "mysql-frontend", "bind": "*:3306",
             "backend": DB, "mode": "tcp", "keepalive": "default", "rules": [], "natives": []},
            {"id": "frontend/webapp-frontend", "_type": "frontend", "key": "webapp-frontend", "bind": "*:80",
             "backend": WEB, "mode": "http", "keepalive": "default", "rules": [], "natives": []},
        ],
        "backends": [
            {"id": "backend/mysql-backend", "_type": "backend", "key": DB, "type": "dynamic", "name": DB,
             "version": db, "balance": "source", "host": null, "mode": "tcp",
             "members": registry.members(DB, &db), "natives": ["option mysql-check"]},
            {"id": "backend/webapp-backend", "_type": "backend", "key": WEB, "type": "dynamic", "name": WEB,
             "version": web, "balance": "source", "host": null, "mode": "http",
             "members": registry.members(WEB, &web), "natives": [],
             "health": {"method": "GET", "uri": "/", "httpVersion": "HTTP/1.0", "interval": 5000}},
        ],
    })
}

/// What the API's `POST /backends/{key}` does, as far as the page can see: the version
/// changes, the members follow the registry, and an activity is recorded.
async fn switch_version(
    State(api): State<ApiState>,
    Path(key): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> axum::Json<Value> {
    api.switches
        .lock()
        .unwrap()
        .push((key.clone(), body.clone()));
    let to = body["version"].as_str().unwrap().to_owned();
    let from = {
        let mut versions = api.versions.lock().unwrap();
        let entry = versions.iter_mut().find(|(k, _)| *k == key).unwrap();
        std::mem::replace(&mut entry.1, to.clone())
    };
    api.hub
        .config(walkthrough(&api.registry, &api.versions.lock().unwrap()));
    api.hub.activity(Activity::now(
        "version-switched",
        format!("backend/{key}"),
        json!({"from": from, "to": to}),
    ));
    axum::Json(json!(200))
}

/// The API's `GET /fleet`: the view the test set (503 when it is an `{"error"}`), or 404 as
/// an aqueduct alone answers.
async fn fleet_view(State(api): State<ApiState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match api.fleet.lock().unwrap().clone() {
        Some(error) if error.get("error").is_some() => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(error),
        )
            .into_response(),
        Some(view) => axum::Json(view).into_response(),
        None => (
            axum::http::StatusCode::NOT_FOUND,
            axum::Json(
                json!({"error": "this aqueduct is not part of a fleet (start it with --store)"}),
            ),
        )
            .into_response(),
    }
}

/// A fleet of three as `GET /fleet` shows it from `aq-1`: `aq-2` refused version 8 (with
/// HAProxy's lines), `aq-3` stopped reporting.
fn three_node_fleet() -> Value {
    let now = now_ms();
    let node = |id: &str, version: u64, seen: u64| {
        json!({"id": id, "address": format!("http://10.0.0.{}:10000", &id[3..]), "version": version,
               "outcome": "applied", "startedMs": now - 600_000, "lastSeenMs": seen,
               "haproxyVersion": "3.0.11-1", "members": {"total": 4, "up": 4},
               "lag": 8 - version, "gone": false, "self": false})
    };
    let mut first = node("aq-1", 8, now);
    first["self"] = json!(true);
    let mut second = node("aq-2", 7, now - 400);
    second["outcome"] = json!("refused");
    second["refusedVersion"] = json!(8);
    second["error"] = json!(
        "haproxy refused the configuration: [ALERT] (1234) : Binding [/var/lib/thalassa/haproxy/haproxy.cfg:42] for frontend www: cannot bind socket (Address already in use) [10.0.0.2:8443]"
    );
    second["errorLines"] = json!([
        "[ALERT]    (1234) : Binding [/var/lib/thalassa/aqueduct/haproxy/haproxy.cfg:42] for frontend www: cannot bind socket (Address already in use) [10.0.0.2:8443]",
        "[ALERT]    (1234) : [haproxy.main()] Some protocols failed to start their listeners! Exiting."
    ]);
    let mut third = node("aq-3", 6, now - 42_000);
    third["gone"] = json!(true);
    third["members"] = json!({"total": 4, "up": 1});
    json!({"version": 8, "node": "aq-1", "nodes": [first, second, third]})
}

fn member(address: &str) -> String {
    format!("[data-backend='{WEB}'] [data-member='{address}'] .badge")
}

#[tokio::test]
async fn members_go_up_and_down_on_screen_and_charts_are_full_on_load() {
    if !require_chromium() {
        return;
    }
    let stack = Stack::start().await;
    // Two minutes of history before the page opens: its charts must not start empty.
    let start = now_ms() - 120_000;
    for i in 0..60u64 {
        let mut sample = StatsSample {
            time_ms: start + i * 2000,
            ..StatsSample::default()
        };
        let row = ProxySample {
            status: "OPEN".into(),
            scur: i % 7,
            smax: 9,
            req_rate: (i * 3) % 11,
            rate: 1,
        };
        sample
            .frontends
            .insert("webapp-frontend".into(), row.clone());
        sample.backends.insert(
            WEB.into(),
            ProxySample {
                status: "DOWN".into(),
                ..row
            },
        );
        stack.hub.stats(sample);
    }
    stack.stats(&[
        (WEB, "127.0.0.1:18080", "DOWN", "L4CON"),
        (WEB, "127.0.0.1:18081", "DOWN", "L4CON"),
        (DB, "127.0.0.1:13306", "DOWN", "L7TOUT"),
    ]);

    let browser = Browser::start().await;
    browser.goto(&stack.url("/")).await;
    browser
        .wait_text("#connection", "the live indicator", |t| t == Some("live"))
        .await;
    assert!(browser.client.current_url().await.unwrap().path() == "/overview");

    // The walkthrough state.
    let frontends = browser.texts("[data-frontend] h3").await;
    assert_eq!(
        frontends,
        ["api-frontend", "mysql-frontend", "webapp-frontend"]
    );
    let backends = browser.texts("[data-backend] h3").await;
    assert_eq!(backends, [DB, WEB]);
    let web_fe = browser
        .text("[data-frontend='webapp-frontend']")
        .await
        .unwrap();
    for part in ["OPEN", "4 connections / 12 max", "*:80", WEB, "http"] {
        assert!(web_fe.contains(part), "{part:?} in {web_fe:?}");
    }
    let api_fe = browser
        .text("[data-frontend='api-frontend']")
        .await
        .unwrap();
    for part in [
        "WAITING",
        "waiting for backend api-backend",
        r#"header: hdr_dom host "admin.example.test" → webapp-backend"#,
        "http-request set-header X-Via thalassa",
    ] {
        assert!(api_fe.contains(part), "{part:?} in {api_fe:?}");
    }
    let db = browser
        .text(&format!("[data-backend='{DB}']"))
        .await
        .unwrap();
    for part in [
        "DOWN",
        "mysql-backend@",
        "0/1",
        "127.0.0.1:13306",
        "check L7TOUT",
        "option mysql-check",
    ] {
        assert!(db.contains(part), "{part:?} in {db:?}");
    }
    assert_eq!(
        browser.text(&member("127.0.0.1:18080")).await.unwrap(),
        "DOWN"
    );
    assert_eq!(
        browser
            .text(&format!("[data-backend='{WEB}'] .card-head .badge"))
            .await
            .unwrap(),
        "DOWN"
    );
    let points = browser
        .js(
            "return document.querySelector(\"[data-frontend='webapp-frontend'] .charts\").dataset.points;",
            vec![],
        )
        .await;
    assert_eq!(
        points,
        json!("61"),
        "charts are filled from the server's history"
    );
    browser.screenshot("overview-members-down").await;

    // DOWN -> UP when the check passes, and back, each a few times to measure how fast a
    // status change reaches the screen (hub.stats() to rendered DOM).
    let mut latencies = Vec::new();
    for round in 0..6 {
        let (status, check) = if round % 2 == 0 {
            ("UP", "L7OK")
        } else {
            ("DOWN", "L4CON")
        };
        let sent = stack.stats(&[
            (WEB, "127.0.0.1:18080", status, check),
            (WEB, "127.0.0.1:18081", "DOWN", "L4CON"),
            (DB, "127.0.0.1:13306", "DOWN", "L7TOUT"),
        ]);
        browser
            .wait_text(&member("127.0.0.1:18080"), status, |t| t == Some(status))
            .await;
        let render = browser
            .js("return window.thalassa.lastRender;", vec![])
            .await;
        if render["sampleTime"] == json!(sent) {
            latencies.push(render["renderedAt"].as_u64().unwrap().saturating_sub(sent));
        }
        if round == 0 {
            let web = browser
                .text(&format!("[data-backend='{WEB}']"))
                .await
                .unwrap();
            for part in ["1/2", "check L7OK in 1 ms", "1 sess · 3/s"] {
                assert!(web.contains(part), "{part:?} in {web:?}");
            }
            assert_eq!(
                browser
                    .text(&format!("[data-backend='{WEB}'] .card-head .badge"))
                    .await
                    .unwrap(),
                "UP"
            );
            browser.screenshot("overview-member-up").await;
        }
    }
    latencies.sort_unstable();
    eprintln!("status change, hub -> rendered on screen (ms, sorted): {latencies:?}");

    // The lead records each transition as an activity: it shows up live on the Activity page.
    stack.hub.activity(Activity::now(
        "member-up",
        format!("backend/{WEB}/{WEB}_127.0.0.1:18080"),
        json!({"check_status": "L7OK", "check_duration_ms": 1}),
    ));
    browser
        .client
        .find(Locator::Css("nav a[href='/activity']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait_text(".entry:first-child", "the member-up entry", |t| {
            t.is_some_and(|t| t.contains("member-up") && t.contains("check L7OK in 1 ms"))
        })
        .await;
    browser.close().await;
}

#[tokio::test]
async fn the_version_drop_down_switches_and_the_switch_is_logged() {
    if !require_chromium() {
        return;
    }
    let stack = Stack::start().await;
    stack.stats(&[
        (WEB, "127.0.0.1:18080", "UP", "L7OK"),
        (WEB, "127.0.0.1:18081", "UP", "L7OK"),
    ]);
    let browser = Browser::start().await;
    browser.goto(&stack.url("/overview")).await;
    let select = format!("[data-backend='{WEB}'] select.version");
    browser
        .wait_text(&select, "versions from the registry", |t| {
            t.is_some_and(|t| t.contains("2.0.0 (1 instance)"))
        })
        .await;
    let options = browser.texts(&format!("{select} option")).await;
    assert_eq!(options, ["1.0.0 (2 instances)", "2.0.0 (1 instance)"]);

    browser
        .client
        .find(Locator::Css(&select))
        .await
        .unwrap()
        .select_by_value("2.0.0")
        .await
        .unwrap();
    browser
        .wait_text(
            &format!("[data-backend='{WEB}'] .switch"),
            "the switch result",
            |t| t == Some("switched to 2.0.0"),
        )
        .await;
    assert_eq!(
        *stack.switches.lock().unwrap(),
        [(WEB.to_owned(), json!({"version": "2.0.0"}))]
    );
    // Until HAProxy's next stats, the old servers are still there: shown as leaving.
    let leaving = format!("[data-backend='{WEB}'] [data-member='127.0.0.1:18081'] .leaving");
    browser
        .wait_text(&leaving, "the old member leaving", |t| t == Some("leaving"))
        .await;
    stack.stats(&[(WEB, "127.0.0.2:18080", "UP", "L7OK")]);
    browser
        .wait_text(
            &format!("[data-backend='{WEB}'] .members"),
            "the 2.0.0 member",
            |t| t.is_some_and(|t| t.contains("127.0.0.2:18080") && !t.contains("127.0.0.1:18081")),
        )
        .await;
    let chosen = browser
        .js(
            "return document.querySelector(arguments[0]).value;",
            vec![json!(select)],
        )
        .await;
    assert_eq!(chosen, "2.0.0");
    browser.screenshot("overview-version-switched").await;

    browser.goto(&stack.url("/activity")).await;
    let top = browser
        .wait_text(".entry:first-child", "the version-switched entry", |t| {
            t.is_some_and(|t| t.contains("version-switched"))
        })
        .await
        .unwrap();
    assert!(
        top.contains("backend/webapp-backend") && top.contains("to: 2.0.0"),
        "{top}"
    );
    browser.close().await;
}

#[tokio::test]
async fn activity_is_newest_first_filterable_with_diffs_and_survives_a_restart() {
    if !require_chromium() {
        return;
    }
    let mut stack = Stack::start().await;
    let old_cfg = "global\n    master-worker\n\nbackend webapp-backend\n    balance roundrobin\n";
    let new_cfg = "global\n    master-worker\n\nbackend webapp-backend\n    balance source\n    option httpchk GET /\n";
    let entries = [
        ("online", "/webapp-backend/1.0.0/127.0.0.1/18080", json!({})),
        (
            "config-changed",
            "haproxy.cfg",
            json!({"diff": thalassa::ui::diff::unified(old_cfg, new_cfg)}),
        ),
        (
            "reloaded",
            "haproxy",
            json!({"reason": "backend webapp-backend changed", "duration_ms": 41, "outcome": "ok"}),
        ),
        (
            "member-down",
            "backend/webapp-backend/webapp-backend_127.0.0.1:18080",
            json!({"check_status": "L4CON", "check_duration_ms": 0}),
        ),
        (
            "rejected",
            "frontend/bad",
            json!({"error": "[ALERT] (1) : config : parsing [haproxy.cfg:12] : unknown keyword 'bindd'"}),
        ),
        (
            "expired",
            "/webapp-backend/1.0.0/127.0.0.1/18081",
            json!({}),
        ),
    ];
    for (verb, object, detail) in entries.iter().cloned() {
        stack.hub.activity(Activity::now(verb, object, detail));
    }
    let browser = Browser::start().await;
    browser.goto(&stack.url("/activity")).await;
    browser
        .wait_text("#activity-count", "the entries", |t| {
            t == Some("7 entries, newest first")
        })
        .await;
    let verbs = browser.texts(".entry .badge").await;
    assert_eq!(
        verbs,
        [
            "expired",
            "rejected",
            "member-down",
            "reloaded",
            "config-changed",
            "online",
            "started"
        ]
    );
    let reload = browser.text(".entry[data-verb='reloaded']").await.unwrap();
    for part in [
        "reason: backend webapp-backend changed",
        "took 41 ms",
        "outcome: ok",
    ] {
        assert!(reload.contains(part), "{part:?} in {reload:?}");
    }
    let diff = browser
        .texts(".entry[data-verb='config-changed'] pre.diff span")
        .await;
    assert!(
        diff.contains(&"-    balance roundrobin".to_owned()),
        "{diff:?}"
    );
    assert!(
        diff.contains(&"+    option httpchk GET /".to_owned()),
        "{diff:?}"
    );
    let error = browser
        .text(".entry[data-verb='rejected'] pre")
        .await
        .unwrap();
    assert!(error.contains("unknown keyword 'bindd'"), "{error}");
    browser.full_screenshot("activity", 1366).await;

    // Text filter, then kind filter; both end up in the URL.
    let filter = browser
        .client
        .find(Locator::Css("#activity-filter"))
        .await
        .unwrap();
    filter.send_keys("18080").await.unwrap();
    browser
        .wait_text("#activity-count", "the text filter", |t| {
            t == Some("2 of 7 entries match")
        })
        .await;
    browser
        .client
        .find(Locator::Css("#activity-verb"))
        .await
        .unwrap()
        .select_by_value("member-down")
        .await
        .unwrap();
    browser
        .wait_text("#activity-count", "the kind filter", |t| {
            t == Some("1 of 7 entries match")
        })
        .await;
    let url = browser.client.current_url().await.unwrap();
    assert_eq!(url.query(), Some("q=18080&verb=member-down"));

    // A restart of the aqueduct: the log is read back from disk.
    stack.app.take().unwrap().stop().await;
    stack.hub.close();
    stack.hub = Hub::open(stack.dir.path()).unwrap();
    stack.serve(0).await;
    browser.goto(&stack.url("/activity")).await;
    browser
        .wait_text("#activity-count", "the persisted entries", |t| {
            t == Some("7 entries, newest first")
        })
        .await;
    browser.close().await;
}

#[tokio::test]
async fn the_registry_page_groups_and_counts_down() {
    if !require_chromium() {
        return;
    }
    let stack = Stack::start().await;
    let browser = Browser::start().await;
    browser.goto(&stack.url("/registry")).await;
    browser
        .wait_text("#registry-summary", "the registrations", |t| {
            t == Some("4 registrations of 2 services")
        })
        .await;
    let groups = browser.texts(".service > h2").await;
    assert_eq!(groups, [DB, WEB]);
    let versions = browser
        .texts(&format!("[data-service='{WEB}'] .version-group h3"))
        .await;
    assert_eq!(
        versions,
        [
            "webapp-backend@1.0.0 2 instances",
            "webapp-backend@2.0.0 1 instance"
        ]
    );
    let soon = "[data-id='/webapp-backend/2.0.0/127.0.0.2/18080'] .countdown";
    let first = browser
        .wait_text(soon, "a countdown", |t| {
            t.is_some_and(|t| t.starts_with("expires in 1m 2"))
        })
        .await
        .unwrap();
    let meta = browser
        .text("[data-id='/webapp-backend/2.0.0/127.0.0.2/18080'] .meta")
        .await
        .unwrap();
    assert!(meta.contains("secondsToExpire10000"), "{meta}");
    browser.full_screenshot("registry", 1366).await;
    // It counts down by itself, without new data.
    browser
        .wait_text(soon, "the countdown to move", |t| {
            t.is_some_and(|t| t != first)
        })
        .await;

    stack.registry_server.stop().await;
    browser
        .wait_text("#registry-error", "the outage message", |t| {
            t.is_some_and(|t| t.starts_with("Registry unavailable: registry unavailable: GET"))
        })
        .await;
    browser.close().await;
}

#[tokio::test]
async fn the_page_recovers_after_the_aqueduct_restarts() {
    if !require_chromium() {
        return;
    }
    let mut stack = Stack::start().await;
    stack.stats(&[(WEB, "127.0.0.1:18080", "UP", "L7OK")]);
    let browser = Browser::start().await;
    browser.goto(&stack.url("/overview")).await;
    browser
        .wait_text("#connection", "live", |t| t == Some("live"))
        .await;
    browser
        .wait_text(&member("127.0.0.1:18080"), "UP", |t| t == Some("UP"))
        .await;

    // A crash: every connection is cut, nothing listens for a while.
    let port = stack.app.as_ref().unwrap().addr.port();
    stack.app.take().unwrap().stop().await;
    browser
        .wait_text("#connection", "the lost connection", |t| {
            t.is_some_and(|t| t != "live")
        })
        .await;
    let stale = browser
        .js("return document.body.classList.contains('stale');", vec![])
        .await;
    assert_eq!(
        stale, true,
        "the last known state is dimmed while disconnected"
    );
    browser.screenshot("overview-reconnecting").await;

    // The next process: same data dir, same port; the member is DOWN after the restart.
    stack.hub = Hub::open(stack.dir.path()).unwrap();
    stack.push_config();
    stack.hub.activity(Activity::now(
        "started",
        "aqueduct",
        json!({"version": "0.1.0"}),
    ));
    stack.stats(&[(WEB, "127.0.0.1:18080", "DOWN", "L4CON")]);
    stack.serve(port).await;
    browser
        .wait_text("#connection", "live again", |t| t == Some("live"))
        .await;
    browser
        .wait_text(&member("127.0.0.1:18080"), "DOWN", |t| t == Some("DOWN"))
        .await;
    // And it is live, not just reloaded once.
    stack.stats(&[(WEB, "127.0.0.1:18080", "UP", "L7OK")]);
    browser
        .wait_text(&member("127.0.0.1:18080"), "UP again", |t| t == Some("UP"))
        .await;
    let started = browser
        .js(
            "return window.thalassa.store.activity.filter(a => a.verb === 'started').length;",
            vec![],
        )
        .await;
    assert_eq!(started, 2, "both starts, the first read back from disk");
    browser.close().await;
}

#[tokio::test]
async fn every_page_fits_a_phone_and_a_laptop() {
    if !require_chromium() {
        return;
    }
    let stack = Stack::start().await;
    stack.stats(&[
        (WEB, "127.0.0.1:18080", "UP", "L7OK"),
        (WEB, "127.0.0.1:18081", "DOWN", "L4CON"),
        (DB, "127.0.0.1:13306", "MAINT", "L7TOUT"),
    ]);
    stack.hub.activity(Activity::now(
        "config-changed",
        "haproxy.cfg",
        json!({"diff": thalassa::ui::diff::unified("a\nb\n", "a\nc\n")}),
    ));
    stack.hub.activity(Activity::now(
        "fleet-applied",
        "config",
        json!({"version": 8, "node": "aq-1", "change": "put frontend www"}),
    ));
    *stack.fleet.lock().unwrap() = Some(three_node_fleet());
    for (name, width, height) in [("phone", 390u32, 844u32), ("laptop", 1366, 900)] {
        let browser = Browser::start_sized(width, height).await;
        for page in ["overview", "activity", "registry", "nodes"] {
            browser.goto(&stack.url(&format!("/{page}"))).await;
            browser
                .wait_text("#connection", "live", |t| t == Some("live"))
                .await;
            if page == "registry" {
                browser
                    .wait_text("#registry-summary", "registrations", |t| {
                        t.is_some_and(|t| t.starts_with('4'))
                    })
                    .await;
            }
            if page == "nodes" {
                browser
                    .wait_text("#fleet-summary", "the fleet", |t| {
                        t.is_some_and(|t| t.contains("3 nodes"))
                    })
                    .await;
            }
            let overflow = browser
                .js(
                    "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
                    vec![],
                )
                .await;
            assert_eq!(overflow, 0, "{page} scrolls sideways on a {name}");
            browser
                .full_screenshot(&format!("{page}-{name}"), width)
                .await;
            browser.client.set_window_size(width, height).await.unwrap();
        }
        // Status is never colour only: every badge carries its word.
        let empty_badges = browser
            .js(
                "return Array.from(document.querySelectorAll('.badge')).filter(b => !b.textContent.trim()).length;",
                vec![],
            )
            .await;
        assert_eq!(empty_badges, 0);
        browser.close().await;
    }
    drop(stack);
}

/// The Fleet page: an aqueduct without `--store` says it runs alone; in a fleet, one row per
/// node with its version against the fleet's, its refusal with HAProxy's lines, and the node
/// serving the page and the gone ones marked in words. The header names the aqueduct.
#[tokio::test]
async fn the_fleet_page_shows_each_node_or_that_the_aqueduct_runs_alone() {
    if !require_chromium() {
        return;
    }
    let stack = Stack::start().await;
    let browser = Browser::start().await;
    browser.goto(&stack.url("/overview")).await;
    browser
        .wait_text("#node-label", "the node label", |t| {
            t == Some("host ui-host at aqueduct.test:10000")
        })
        .await;
    browser
        .client
        .find(Locator::Css("nav a[data-page='nodes']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait_text("#fleet-alone", "the alone note", |t| {
            t == Some("This aqueduct runs alone; start it with --store to join a fleet.")
        })
        .await;
    assert_eq!(
        browser.js("return document.title;", vec![]).await,
        "Fleet · Thalassa Aqueduct"
    );
    assert_eq!(
        browser
            .js(
                "return document.getElementById('fleet-table').hidden;",
                vec![]
            )
            .await,
        true
    );
    assert_eq!(browser.text("#fleet-error").await.as_deref(), Some(""));

    // Joined: the page polls and shows the fleet.
    *stack.fleet.lock().unwrap() = Some(three_node_fleet());
    browser
        .wait_text("#fleet-summary", "the fleet's summary", |t| {
            t == Some(
                "fleet config v8 · 3 nodes · 1 in sync · 1 behind · 1 refused a version · 1 gone",
            )
        })
        .await;
    let row = |id: &str, cell: &str| format!("[data-node='{id}'] .{cell}");
    assert_eq!(
        browser.text(&row("aq-1", "id")).await.unwrap(),
        "aq-1this node"
    );
    assert_eq!(
        browser.text(&row("aq-1", "config")).await.unwrap(),
        "v8in sync"
    );
    assert_eq!(
        browser.text(&row("aq-1", "seen")).await.unwrap(),
        "just now"
    );
    let link = browser
        .js(
            "return document.querySelector(\"[data-node='aq-2'] .address a\").href;",
            vec![],
        )
        .await;
    assert_eq!(link, "http://10.0.0.2:10000/");
    assert_eq!(
        browser.text(&row("aq-2", "config")).await.unwrap(),
        "v71 behindfleet runs v8"
    );
    let refused = browser.text(&row("aq-2", "outcome")).await.unwrap();
    assert!(
        refused.starts_with("refusedv8 refused; serving v7: haproxy refused the configuration")
            && refused.contains("Some protocols failed to start their listeners"),
        "{refused}"
    );
    assert_eq!(browser.text(&row("aq-3", "id")).await.unwrap(), "aq-3gone");
    assert_eq!(
        browser.text(&row("aq-3", "seen")).await.unwrap(),
        "no report for 42s"
    );
    assert_eq!(
        browser.text(&row("aq-3", "members-up")).await.unwrap(),
        "1 of 4 members up"
    );
    browser.screenshot("fleet-fake").await;

    // The store stops answering (503): the last answer stays, with the reason above it.
    *stack.fleet.lock().unwrap() = Some(json!({"error": "the fleet's store does not answer"}));
    browser
        .wait_text("#fleet-error", "the store's outage", |t| {
            t == Some(
                "The fleet's state is unavailable: the fleet's store does not answer \
                 (showing the last answer)",
            )
        })
        .await;
    assert_eq!(browser.texts("#fleet-nodes tr").await.len(), 3);
    browser.close().await;
}

/// In a fleet, each version this node applied reads as the change and the node that made it.
#[tokio::test]
async fn fleet_changes_in_the_activity_name_the_node_that_made_them() {
    if !require_chromium() {
        return;
    }
    let stack = Stack::start().await;
    stack.hub.activity(Activity::now(
        "fleet-applied",
        "config",
        json!({"version": 7, "node": "aq-2", "change": "put frontend www"}),
    ));
    let browser = Browser::start().await;
    browser
        .goto(&stack.url("/activity?verb=fleet-applied"))
        .await;
    browser
        .wait_text(
            "[data-verb='fleet-applied'] .fleet-change",
            "the fleet change",
            |t| t == Some("fleet config v7 from aq-2: put frontend www"),
        )
        .await;
    assert_eq!(
        browser
            .text("[data-verb='fleet-applied'] .badge")
            .await
            .as_deref(),
        Some("fleet-applied")
    );
    browser.close().await;
}

/// Members registered by DNS name: one resolved reads its name with the address beside it
/// and its live status; one whose name does not resolve reads UNRESOLVED, with the reason.
#[tokio::test]
async fn members_by_dns_name_show_their_address_or_why_they_have_none() {
    if !require_chromium() {
        return;
    }
    let stack = Stack::start().await;
    let mut config = walkthrough(&stack.registry, &stack.versions.lock().unwrap());
    config["backends"][1]["members"] = json!([
        {"name": WEB, "version": "1.0.0", "host": "webapp", "port": 18080, "lastKnown": now_ms(),
         "meta": {"hostname": "webapp"}, "id": "/webapp-backend/1.0.0/webapp/18080",
         "address": "127.0.0.9"},
        {"name": WEB, "version": "1.0.0", "host": "gone.invalid", "port": 18080, "lastKnown": now_ms(),
         "meta": {"hostname": "gone.invalid"}, "id": "/webapp-backend/1.0.0/gone.invalid/18080",
         "unresolved": "cannot resolve gone.invalid: failed to lookup address information"},
    ]);
    stack.hub.config(config);
    stack.stats(&[(WEB, "127.0.0.9:18080", "UP", "L7OK")]);
    let browser = Browser::start().await;
    browser.goto(&stack.url("/overview")).await;
    browser
        .wait_text(&member("127.0.0.9:18080"), "UP", |t| t == Some("UP"))
        .await;
    let resolved = browser
        .text(&format!(
            "[data-backend='{WEB}'] [data-member='127.0.0.9:18080'] .address"
        ))
        .await
        .unwrap();
    assert_eq!(resolved, "webapp:18080 (127.0.0.9)");
    assert_eq!(
        browser.text(&member("gone.invalid:18080")).await.unwrap(),
        "UNRESOLVED"
    );
    let lost = browser
        .text(&format!(
            "[data-backend='{WEB}'] [data-member='gone.invalid:18080']"
        ))
        .await
        .unwrap();
    assert!(lost.contains("cannot resolve gone.invalid"), "{lost}");
    tokio::time::timeout(Duration::from_secs(5), browser.close())
        .await
        .unwrap();
}

#[tokio::test]
async fn statuses_are_words_not_only_colours() {
    if !require_chromium() {
        return;
    }
    let stack = Stack::start().await;
    stack.stats(&[
        (WEB, "127.0.0.1:18080", "DRAIN", "L7OK"),
        (WEB, "127.0.0.1:18081", "MAINT", "L4CON"),
    ]);
    let browser = Browser::start().await;
    browser.goto(&stack.url("/overview")).await;
    browser
        .wait_text(&member("127.0.0.1:18080"), "DRAIN", |t| t == Some("DRAIN"))
        .await;
    assert_eq!(
        browser.text(&member("127.0.0.1:18081")).await.unwrap(),
        "MAINT"
    );
    let head = format!("[data-backend='{WEB}'] .card-head .badge");
    assert_eq!(
        browser.text(&head).await.unwrap(),
        "DOWN",
        "no member is UP"
    );
    let ring = browser
        .text(&format!("[data-backend='{WEB}'] .ring-text"))
        .await
        .unwrap();
    assert_eq!(ring, "0/2");
    // A member HAProxy has not reported yet reads DOWN, with no check.
    let db = browser
        .text(&format!("[data-backend='{DB}'] .member"))
        .await
        .unwrap();
    assert!(
        db.starts_with("DOWN") && db.contains("no check yet"),
        "{db}"
    );
    tokio::time::timeout(Duration::from_secs(5), browser.close())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_guarded_page_asks_for_the_token_once_then_renders_and_switches() {
    if !require_chromium() {
        return;
    }
    let stack = Stack::start_with(AuthPolicy {
        admin: Some(Token::new("ui-admin-token").unwrap()),
        read: Some(Token::new("ui-read-token").unwrap()),
    })
    .await;
    stack.stats(&[(WEB, "127.0.0.1:18080", "UP", "L7OK")]);
    let browser = Browser::start().await;
    browser.goto(&stack.url("/overview")).await;
    // The shell loads without a token; the stream is refused, so the page asks for one.
    browser
        .wait_text("#token-form p", "the token form", |t| {
            t.is_some_and(|t| t.contains("needs a token"))
        })
        .await;
    assert_ne!(browser.text("#connection").await.as_deref(), Some("live"));
    browser.screenshot("token-form").await;

    // A wrong token is refused and asked for again.
    let input = browser
        .client
        .find(Locator::Css("#token-input"))
        .await
        .unwrap();
    input.send_keys("wrong-token").await.unwrap();
    browser
        .client
        .find(Locator::Css("#token-form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait_text("#token-form p", "the retry prompt", |t| {
            t.is_some_and(|t| t.contains("not accepted"))
        })
        .await;

    let input = browser
        .client
        .find(Locator::Css("#token-input"))
        .await
        .unwrap();
    input.send_keys("ui-admin-token").await.unwrap();
    browser
        .client
        .find(Locator::Css("#token-form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait_text("#connection", "the live stream", |t| t == Some("live"))
        .await;
    browser
        .wait_text(&member("127.0.0.1:18080"), "UP", |t| t == Some("UP"))
        .await;
    assert_eq!(browser.text("#token-form").await, None, "the form is gone");
    // Kept for the session, never in the URL.
    let kept = browser
        .js("return sessionStorage.getItem('thalassa.token');", vec![])
        .await;
    assert_eq!(kept, "ui-admin-token");
    assert!(
        !browser
            .client
            .current_url()
            .await
            .unwrap()
            .as_str()
            .contains("token")
    );

    // The version switch sends the token too.
    let select = format!("[data-backend='{WEB}'] select.version");
    browser
        .wait_text(&select, "versions from the registry", |t| {
            t.is_some_and(|t| t.contains("2.0.0 (1 instance)"))
        })
        .await;
    browser
        .client
        .find(Locator::Css(&select))
        .await
        .unwrap()
        .select_by_value("2.0.0")
        .await
        .unwrap();
    browser
        .wait_text(
            &format!("[data-backend='{WEB}'] .switch"),
            "the switch result",
            |t| t == Some("switched to 2.0.0"),
        )
        .await;
    assert_eq!(
        *stack.switches.lock().unwrap(),
        [(WEB.to_owned(), json!({"version": "2.0.0"}))]
    );

    // Another page of the same session does not ask again.
    browser.goto(&stack.url("/activity")).await;
    browser
        .wait_text("#connection", "live without asking", |t| t == Some("live"))
        .await;
    assert_eq!(browser.text("#token-form").await, None);
    browser.assert_no_script_errors().await;
    browser.close().await;
}
