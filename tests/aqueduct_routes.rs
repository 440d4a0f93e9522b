//! The aqueduct API in-process over a real listener, with the check-only target: every
//! candidate config goes through the REAL `haproxy -c`, reloads are recorded.

#![allow(clippy::unwrap_used)] // Test code: a panic here is a test failure.

mod aqueduct_support;

use aqueduct_support::{CheckOnlyTarget, TestDir, eventually, haproxy_bin};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use thalassa::aqueduct::controller::{Controller, ControllerOptions};
use thalassa::aqueduct::{routes, state_file};
use thalassa::cli::DEFAULT_MAX_MEMBERS;
use thalassa::config::Config;
use thalassa::haproxy::ReloadError;
use thalassa::membership::control_plane::ControlPlane;
use thalassa::membership::members::DynamicMembers;

const WAIT: Duration = Duration::from_secs(10);

// Frontends here bind 127.77.0.1: the check-only target never binds them, but the bind
// pre-flight probes new addresses, and no other process on the machine uses that address.

struct Api {
    base: String,
    client: reqwest::Client,
    target: Arc<CheckOnlyTarget>,
    controller: Controller,
    dir: TestDir,
}

impl Api {
    /// `None` (after a skip line) when haproxy is missing outside CI.
    async fn start() -> Option<Api> {
        Self::start_in(TestDir::new(), Config::default()).await
    }

    async fn start_in(dir: TestDir, config: Config) -> Option<Api> {
        let target = Arc::new(CheckOnlyTarget::new(haproxy_bin()?));
        let options = ControllerOptions {
            state_file: state_file::path_in(dir.path()),
            render: dir.settings.clone(),
        };
        // The product's wiring: the controller keeps membership's member book.
        let controller = Controller::start_with_members(
            target.clone(),
            options,
            config,
            Box::new(DynamicMembers::default()),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = routes::router_with_options(controller.clone(), None, DEFAULT_MAX_MEMBERS);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Some(Api {
            base,
            client: reqwest::Client::new(),
            target,
            controller,
            dir,
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
    ) -> (StatusCode, String) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            // curl -d sends a form content type; the body is JSON whatever it says.
            request = request
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.to_owned());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.text().await.unwrap())
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (status, text) = self
            .send(reqwest::Method::PUT, path, Some(&body.to_string()))
            .await;
        (status, serde_json::from_str(&text).unwrap())
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (status, text) = self
            .send(reqwest::Method::POST, path, Some(&body.to_string()))
            .await;
        (status, serde_json::from_str(&text).unwrap())
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (status, text) = self.send(reqwest::Method::GET, path, None).await;
        (status, serde_json::from_str(&text).unwrap())
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let (status, text) = self.send(reqwest::Method::DELETE, path, None).await;
        (status, serde_json::from_str(&text).unwrap())
    }

    async fn config_text(&self) -> String {
        let response = self
            .client
            .get(format!("{}/haproxy/config", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers()["content-type"],
            "text/plain; charset=utf-8"
        );
        response.text().await.unwrap()
    }

    async fn assert_ok(&self, method: &str, path: &str, body: Value) {
        let (status, answer) = match method {
            "PUT" => self.put(path, body).await,
            "POST" => self.post(path, body).await,
            _ => self.delete(path).await,
        };
        assert_eq!(
            (status, answer),
            (StatusCode::OK, json!(200)),
            "{method} {path}"
        );
    }

    /// Asserts a 400 naming `field` whose message contains `fragment`.
    async fn assert_400(&self, path: &str, body: Value, field: Option<&str>, fragment: &str) {
        let (status, answer) = match path.strip_prefix("POST ") {
            Some(path) => self.post(path, body.clone()).await,
            None => self.put(path, body.clone()).await,
        };
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}: {answer}");
        assert_eq!(answer["field"].as_str(), field, "{path} {body}: {answer}");
        let message = answer["error"].as_str().unwrap();
        assert!(message.contains(fragment), "{path} {body}: {answer}");
    }
}

fn mysql_frontend() -> Value {
    json!({ "bind": "127.77.0.1:13306", "backend": "mysql-backend", "mode": "tcp"})
}

fn webapp_frontend() -> Value {
    json!({ "bind": "127.77.0.1:18080", "backend": "webapp-backend", "mode": "http"})
}

fn mysql_backend() -> Value {
    json!({ "type":"dynamic", "name":"mysql-backend", "version":"1.0.0","balance":"source", "mode":"tcp","natives":["option mysql-check"]})
}

fn webapp_backend() -> Value {
    json!({ "type":"dynamic", "name":"webapp-backend", "version":"1.0.0","balance":"source", "mode":"http","health":{"interval":"5000"}})
}

#[tokio::test]
async fn walkthrough_frontends_first_then_backends() {
    let Some(api) = Api::start().await else {
        return;
    };
    api.assert_ok("PUT", "/frontends/mysql-frontend", mysql_frontend())
        .await;
    api.assert_ok("PUT", "/frontends/webapp-frontend", webapp_frontend())
        .await;
    let (_, waiting) = api.get("/frontends/mysql-frontend").await;
    assert_eq!(waiting["waitingForBackend"], json!(true));
    let text = api.config_text().await;
    assert!(
        text.contains("# waiting for backend mysql-backend"),
        "{text}"
    );
    assert_eq!(
        api.target.last_reload().as_deref(),
        Some(text.as_str()),
        "GET shows what HAProxy runs"
    );

    api.assert_ok("PUT", "/backends/mysql-backend", mysql_backend())
        .await;
    api.assert_ok("PUT", "/backends/webapp-backend", webapp_backend())
        .await;
    assert_eq!(
        api.target.reload_count(),
        4,
        "one reload per change, each answered once live"
    );

    assert_eq!(
        api.get("/frontends/mysql-frontend").await,
        (
            StatusCode::OK,
            json!({"id":"frontend/mysql-frontend","_type":"frontend","key":"mysql-frontend",
            "bind":"127.77.0.1:13306","backend":"mysql-backend","mode":"tcp","keepalive":"default","rules":[],"natives":[]})
        )
    );
    let (_, webapp) = api.get("/backends/webapp-backend").await;
    assert_eq!(
        webapp,
        json!({"id":"backend/webapp-backend","_type":"backend","key":"webapp-backend","type":"dynamic",
            "name":"webapp-backend","version":"1.0.0","balance":"source","host":null,"mode":"http","members":[],
            "natives":[],"health":{"method":"GET","uri":"/","httpVersion":"HTTP/1.0","interval":5000}})
    );
    let (_, mysql) = api.get("/backends/mysql-backend").await;
    assert!(mysql.get("health").is_none(), "{mysql}");
    assert_eq!(mysql["natives"], json!(["option mysql-check"]));
    assert_eq!(
        api.get("/backends/mysql-backend/members").await,
        (StatusCode::OK, json!([]))
    );

    let (_, frontends) = api.get("/frontends").await;
    let ids: Vec<&str> = frontends
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["frontend/mysql-frontend", "frontend/webapp-frontend"]);
    let (_, backends) = api.get("/backends").await;
    assert_eq!(backends[1], webapp);

    let text = api.config_text().await;
    assert!(!text.contains("waiting for backend"), "{text}");
    assert!(text.contains("    option mysql-check\n"), "{text}");
    assert!(
        text.contains("    option httpchk GET / HTTP/1.0\n"),
        "{text}"
    );
    assert_eq!(text.matches("option httplog").count(), 1, "{text}");
}

#[tokio::test]
async fn set_members_renders_servers_without_a_reload() {
    use thalassa::registry::model::{Registration, RegistrationKey};
    let Some(api) = Api::start().await else {
        return;
    };
    api.assert_ok("PUT", "/backends/mysql-backend", mysql_backend())
        .await;
    let key = RegistrationKey::parse("mysql-backend", "1.0.0", "127.0.0.11", "3306").unwrap();
    let registration = Registration::new(key, 1_700_000_000_000, Default::default());
    api.controller
        .set_members_of(vec![(
            "mysql-backend".to_owned(),
            vec![registration.clone()],
        )])
        .await;
    let (_, members) = api.get("/backends/mysql-backend/members").await;
    assert_eq!(members, json!([registration]));
    assert!(api.config_text().await.contains(
        "    server mysql-backend_127.0.0.11:3306 127.0.0.11:3306 check inter 2000 id 1\n"
    ));
    assert_eq!(api.target.reload_count(), 1, "membership never reloads");
    // A structural change afterwards keeps the member in the reloaded config.
    api.assert_ok(
        "POST",
        "/backends/mysql-backend",
        json!({"version":"1.0.0","key":"x"}),
    )
    .await;
    api.assert_ok(
        "PUT",
        "/frontends/db",
        json!({"bind":"127.77.0.1:13306","backend":"mysql-backend","mode":"tcp"}),
    )
    .await;
    assert!(
        api.target
            .last_reload()
            .unwrap()
            .contains("server mysql-backend_127.0.0.11:3306")
    );
}

#[tokio::test]
async fn reload_members_reloads_what_set_members_rendered() {
    use thalassa::registry::model::{Registration, RegistrationKey};
    let Some(api) = Api::start().await else {
        return;
    };
    api.assert_ok("PUT", "/backends/mysql-backend", mysql_backend())
        .await;
    let key = RegistrationKey::parse("mysql-backend", "1.0.0", "127.0.0.11", "3306").unwrap();
    let registration = Registration::new(key, 1_700_000_000_000, Default::default());
    api.controller
        .set_members_of(vec![("mysql-backend".to_owned(), vec![registration])])
        .await;
    assert_eq!(api.target.reload_count(), 1);
    // The `--membership reload` baseline: the member reaches HAProxy by a reload...
    api.controller
        .reload_members("membership changed")
        .await
        .unwrap();
    assert_eq!(api.target.reload_count(), 2);
    assert!(
        api.target
            .last_reload()
            .unwrap()
            .contains("server mysql-backend_127.0.0.11:3306")
    );
    // ...and an unchanged membership reloads nothing.
    api.controller
        .reload_members("membership changed")
        .await
        .unwrap();
    assert_eq!(api.target.reload_count(), 2);
}

#[tokio::test]
async fn validation_rules_of_checklist_26_to_31() {
    let Some(api) = Api::start().await else {
        return;
    };
    let host_msg = "host is required with health check with httpVersion=HTTP/1.1";
    api.assert_400(
        "/backends/x",
        json!({"type":"dynamic","name":"a","version":"1","health":{"httpVersion":"HTTP/1.1"}}),
        Some("host"),
        host_msg,
    )
    .await;
    api.assert_400(
        "/backends/x",
        json!({"type":"dynamic","mode":"tcp","health":{"httpVersion":"HTTP/1.1"}}),
        Some("host"),
        host_msg,
    )
    .await;
    api.assert_ok("PUT", "/backends/x", json!({"type":"dynamic","name":"a","version":"1","host":"example.com","health":{"httpVersion":"HTTP/1.1"}})).await;
    let text = api.config_text().await;
    assert!(
        text.contains("http-check send meth GET uri / ver HTTP/1.1 hdr Host example.com"),
        "{text}"
    );
    assert!(
        text.contains("http-request set-header Host example.com"),
        "{text}"
    );

    api.assert_400("/backends/y", json!({}), Some("type"), "type is required")
        .await;
    api.assert_400(
        "/backends/y",
        json!({"type":"foo"}),
        Some("type"),
        "type must be one of",
    )
    .await;
    api.assert_400(
        "/backends/y",
        json!({"type":"static","mode":"udp"}),
        Some("mode"),
        "mode must be one of",
    )
    .await;
    api.assert_400(
        "/frontends/y",
        json!({"bind":":1","backend":"b","keepalive":"x"}),
        Some("keepalive"),
        "keepalive must be one of",
    )
    .await;
    api.assert_400(
        "/backends/y",
        json!({"type":"static","health":{"method":"PUT"}}),
        Some("health.method"),
        "method must be one of",
    )
    .await;
    api.assert_400(
        "/backends/y",
        json!({"type":"static","health":{"interval":0}}),
        Some("health.interval"),
        "interval must be between",
    )
    .await;
    api.assert_400(
        "/backends/y",
        json!({"type":"static","health":{"interval":"abc"}}),
        Some("health.interval"),
        "interval must be a number",
    )
    .await;
    api.assert_400(
        "/backends/y",
        json!({"type":"static","role":"x"}),
        Some("role"),
        "role is not allowed",
    )
    .await;
    api.assert_400(
        "/backends/y",
        json!({"type":"static","health":{"id":1}}),
        Some("health.id"),
        "id is not allowed",
    )
    .await;
    api.assert_400(
        "/frontends/y",
        json!({"backend":"b"}),
        Some("bind"),
        "bind is required",
    )
    .await;
    api.assert_400(
        "/frontends/y",
        json!({"bind":":1"}),
        Some("backend"),
        "backend is required",
    )
    .await;
    api.assert_400(
        "/frontends/bad%20key",
        json!({"bind":":1","backend":"b"}),
        Some("key"),
        "key may only contain",
    )
    .await;
    let (status, answer) = api
        .send(reqwest::Method::PUT, "/frontends/y", Some("{nope"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(
        api.get("/backends/y").await.0,
        StatusCode::NOT_FOUND,
        "nothing refused was stored"
    );

    // 28: the path key wins; id and _type of a GET round trip are accepted.
    api.assert_ok("PUT", "/frontends/fe", json!({"key":"other","id":"frontend/other","_type":"frontend","bind":"127.77.0.1:18086","backend":"x"})).await;
    let (_, row) = api.get("/frontends/fe").await;
    assert_eq!(row["key"], "fe");
    assert_eq!(api.get("/frontends/other").await.0, StatusCode::NOT_FOUND);
    let reloads = api.target.reload_count();
    api.assert_ok("PUT", "/frontends/fe", row).await;
    assert_eq!(
        api.target.reload_count(),
        reloads,
        "an unchanged PUT does not reload"
    );

    // 29: 404 texts.
    for (path, text) in [
        ("/frontends/nope", "frontend nope not found"),
        ("/backends/nope", "backend nope not found"),
        ("/backends/nope/members", "backend nope not found"),
    ] {
        assert_eq!(
            api.get(path).await,
            (StatusCode::NOT_FOUND, json!({"error": text})),
            "GET {path}"
        );
    }
    assert_eq!(
        api.delete("/frontends/nope").await,
        (
            StatusCode::NOT_FOUND,
            json!({"error":"frontend nope not found"})
        )
    );
    assert_eq!(
        api.delete("/backends/nope").await,
        (
            StatusCode::NOT_FOUND,
            json!({"error":"backend nope not found"})
        )
    );

    // 30: DELETE, then a re-PUT inherits nothing.
    api.assert_ok(
        "PUT",
        "/backends/w",
        json!({"type":"dynamic","name":"w","version":"1","health":{"interval":100}}),
    )
    .await;
    api.assert_ok("DELETE", "/backends/w", Value::Null).await;
    assert_eq!(api.get("/backends/w").await.0, StatusCode::NOT_FOUND);
    assert!(!api.config_text().await.contains("backend w\n"));
    api.assert_ok(
        "PUT",
        "/backends/w",
        json!({"type":"dynamic","name":"w","version":"1"}),
    )
    .await;
    assert!(api.get("/backends/w").await.1.get("health").is_none());
    api.assert_ok("DELETE", "/frontends/fe", Value::Null).await;
    assert_eq!(api.get("/frontends/fe").await.0, StatusCode::NOT_FOUND);

    // 31: version switch.
    api.assert_ok("POST", "/backends/w", json!({"version":"2.0.0"}))
        .await;
    assert_eq!(api.get("/backends/w").await.1["version"], "2.0.0");
    api.assert_ok(
        "POST",
        "/backends/w",
        json!({"name":"other","version":"1.0.0"}),
    )
    .await;
    let (_, w) = api.get("/backends/w").await;
    assert_eq!(
        (w["name"].as_str(), w["version"].as_str()),
        (Some("other"), Some("1.0.0"))
    );
    api.assert_400(
        "POST /backends/w",
        json!({"name":"n"}),
        Some("version"),
        "version is required",
    )
    .await;
    assert_eq!(
        api.post("/backends/nope", json!({"version":"1"})).await,
        (
            StatusCode::NOT_FOUND,
            json!({"error":"backend nope not found"})
        )
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json_errors() {
    let Some(api) = Api::start().await else {
        return;
    };
    let (status, body) = api.get("/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().unwrap().contains("/nope"));
    let (status, text) = api.send(reqwest::Method::PATCH, "/frontends/x", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(serde_json::from_str::<Value>(&text).unwrap()["error"].is_string());
}

#[tokio::test]
async fn smuggled_newlines_are_refused_and_change_nothing() {
    let Some(api) = Api::start().await else {
        return;
    };
    api.assert_ok(
        "PUT",
        "/frontends/fe",
        json!({"bind":"127.77.0.1:18087","backend":"be"}),
    )
    .await;
    let before = api.config_text().await;
    let evil = "\nlisten evil\n    bind 127.0.0.1:1";
    for (path, body, field) in [
        (
            "/frontends/fe",
            json!({"bind": format!("127.0.0.1:1{evil}"), "backend":"be"}),
            "bind",
        ),
        (
            "/frontends/fe",
            json!({"bind":":1","backend": format!("be{evil}")}),
            "backend",
        ),
        (
            "/frontends/fe",
            json!({"bind":":1","backend":"be","natives":[format!("option forwardfor{evil}")]}),
            "natives[0]",
        ),
        (
            "/frontends/fe",
            json!({"bind":":1","backend":"be","rules":[{"type":"path","operation":"path_beg","value":format!("/a{evil}"),"backend":"b"}]}),
            "rules[0].value",
        ),
        (
            "/backends/be",
            json!({"type":"static","host": format!("h{evil}")}),
            "host",
        ),
        (
            "/backends/be",
            json!({"type":"static","balance": format!("roundrobin{evil}")}),
            "balance",
        ),
        (
            "/backends/be",
            json!({"type":"static","health":{"uri": format!("/{evil}")}}),
            "health.uri",
        ),
        (
            "/backends/be",
            json!({"type":"dynamic","name": format!("n{evil}")}),
            "name",
        ),
        (
            "/backends/be",
            json!({"type":"static","members":[{"host":"127.0.0.1","port":"80\r\n"}]}),
            "members[0].port",
        ),
    ] {
        let (status, answer) = api.put(path, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer["field"], field, "{body}: {answer}");
    }
    assert_eq!(api.config_text().await, before);
    assert_eq!(api.target.reload_count(), 1);
}

#[tokio::test]
async fn a_native_haproxy_refuses_is_400_and_the_old_config_keeps_serving() {
    let Some(api) = Api::start().await else {
        return;
    };
    api.assert_ok(
        "PUT",
        "/backends/be",
        json!({"type":"static","natives":["option forwardfor"]}),
    )
    .await;
    let before = api.config_text().await;
    let (status, answer) = api
        .put(
            "/backends/be",
            json!({"type":"static","natives":["option no-such-option"]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let message = answer["error"].as_str().unwrap();
    assert!(
        message.contains("[ALERT]") && message.contains("no-such-option"),
        "HAProxy's own lines: {message}"
    );
    assert_eq!(
        api.get("/backends/be").await.1["natives"],
        json!(["option forwardfor"])
    );
    assert_eq!(api.config_text().await, before);
    assert_eq!(api.target.reload_count(), 1);
    let saved = state_file::load(&state_file::path_in(api.dir.path()))
        .unwrap()
        .unwrap();
    assert_eq!(saved.backends["be"].natives, ["option forwardfor"]);
    let metrics = api.send(reqwest::Method::GET, "/metrics", None).await.1;
    assert!(
        metrics.contains("thalassa_aqueduct_changes_total{outcome=\"rejected\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("thalassa_haproxy_reloads_total{outcome=\"ok\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn concurrent_changes_coalesce_into_one_reload() {
    let Some(api) = Api::start().await else {
        return;
    };
    let api = Arc::new(api);
    api.target.hold_reloads();
    let first = tokio::spawn({
        let api = api.clone();
        async move {
            api.put(
                "/frontends/first",
                json!({"bind":"127.77.0.1:18090","backend":"be"}),
            )
            .await
        }
    });
    eventually("the first reload to start", WAIT, || {
        api.target.reload_calls.load(Ordering::SeqCst) == 1
    })
    .await;
    let mut queued = Vec::new();
    for i in 0..6 {
        let api = api.clone();
        let body = if i == 3 {
            // One change HAProxy refuses: answered 400 alone, the others still go through.
            json!({"bind":"127.77.0.1:18099","backend":"be","natives":["option no-such-option"]})
        } else {
            json!({"bind": format!("127.77.0.1:{}", 18091 + i), "backend":"be"})
        };
        queued.push(tokio::spawn(async move {
            api.put(&format!("/frontends/f{i}"), body).await
        }));
    }
    eventually("six queued changes", WAIT, || {
        api.controller.pending_changes() == 6
    })
    .await;
    api.target.release_reloads(2);
    assert_eq!(first.await.unwrap(), (StatusCode::OK, json!(200)));
    for (i, answer) in queued.into_iter().enumerate() {
        let (status, _) = answer.await.unwrap();
        let expected = if i == 3 {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        assert_eq!(status, expected, "f{i}");
    }
    assert_eq!(
        api.target.reload_count(),
        2,
        "six queued changes, one reload"
    );
    let last = api.target.last_reload().unwrap();
    for i in [0, 1, 2, 4, 5] {
        assert!(last.contains(&format!("frontend f{i}\n")), "{last}");
    }
    assert!(!last.contains("frontend f3\n"));
    assert_eq!(api.config_text().await, last);
}

#[tokio::test]
async fn a_failed_reload_rolls_the_whole_batch_back() {
    let Some(api) = Api::start().await else {
        return;
    };
    api.assert_ok(
        "PUT",
        "/frontends/fe",
        json!({"bind":"127.77.0.1:18100","backend":"be"}),
    )
    .await;
    let before = api.config_text().await;
    let saved_before = std::fs::read_to_string(state_file::path_in(api.dir.path())).unwrap();

    *api.target.fail_reloads_with.lock().unwrap() = Some(ReloadError::Failed(
        "cannot bind socket (Address already in use) [127.77.0.1:18101]".into(),
    ));
    let (status, answer) = api
        .put(
            "/frontends/taken",
            json!({"bind":"127.77.0.1:18101","backend":"be"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("Address already in use"),
        "{answer}"
    );
    assert_eq!(api.get("/frontends/taken").await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.config_text().await, before);
    assert_eq!(
        std::fs::read_to_string(state_file::path_in(api.dir.path())).unwrap(),
        saved_before
    );

    *api.target.fail_reloads_with.lock().unwrap() =
        Some(ReloadError::Unavailable("haproxy is restarting".into()));
    let (status, _) = api
        .put(
            "/frontends/later",
            json!({"bind":"127.77.0.1:18102","backend":"be"}),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    *api.target.fail_reloads_with.lock().unwrap() = None;
    api.assert_ok(
        "PUT",
        "/frontends/later",
        json!({"bind":"127.77.0.1:18102","backend":"be"}),
    )
    .await;
    let metrics = api.controller.metrics().text();
    assert!(
        metrics.contains("thalassa_haproxy_reloads_total{outcome=\"failed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("thalassa_haproxy_reloads_total{outcome=\"unavailable\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("thalassa_haproxy_reloads_total{outcome=\"ok\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn state_survives_a_restart() {
    let Some(api) = Api::start().await else {
        return;
    };
    api.assert_ok("PUT", "/frontends/mysql-frontend", mysql_frontend())
        .await;
    api.assert_ok("PUT", "/backends/mysql-backend", mysql_backend())
        .await;
    api.assert_ok(
        "PUT",
        "/backends/static",
        json!({"type":"static","members":[{"host":"10.10.10.10","port":"80"}]}),
    )
    .await;
    api.assert_ok("PUT", "/frontends/webapp-frontend", webapp_frontend())
        .await;
    api.assert_ok("DELETE", "/frontends/webapp-frontend", Value::Null)
        .await;
    let (frontends, backends) = (api.get("/frontends").await.1, api.get("/backends").await.1);
    let text = std::fs::read_to_string(state_file::path_in(api.dir.path())).unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();
    // The file's own format (version 2): the PUT bodies, without the API's row fields.
    assert_eq!(file["version"], 2, "{text}");
    let keys = |rows: &Value| -> Vec<Value> {
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| r["key"].clone())
            .collect()
    };
    assert_eq!(keys(&file["frontends"]), keys(&frontends), "{text}");
    assert_eq!(keys(&file["backends"]), keys(&backends), "{text}");
    assert!(!text.contains("\"_type\""), "{text}");

    let Api { dir, .. } = api;
    let loaded = state_file::load(&state_file::path_in(dir.path()))
        .unwrap()
        .unwrap();
    let restarted = Api::start_in(dir, loaded).await.unwrap();
    assert_eq!(restarted.get("/frontends").await.1, frontends);
    assert_eq!(restarted.get("/backends").await.1, backends);
    assert_eq!(
        restarted.get("/backends/static/members").await.1,
        json!([{"host":"10.10.10.10","port":"80"}])
    );
    assert_eq!(
        restarted.config_text().await,
        "",
        "nothing is live before the startup reload"
    );
    restarted.controller.apply_startup().await.unwrap();
    assert!(
        restarted
            .config_text()
            .await
            .contains("server static_10.10.10.10:80 10.10.10.10:80 check inter 2000")
    );
}

#[tokio::test]
async fn deleting_a_backend_makes_its_frontends_wait_again() {
    let Some(api) = Api::start().await else {
        return;
    };
    api.assert_ok("PUT", "/backends/webapp-backend", webapp_backend())
        .await;
    api.assert_ok("PUT", "/frontends/webapp-frontend", webapp_frontend())
        .await;
    assert!(
        api.get("/frontends/webapp-frontend")
            .await
            .1
            .get("waitingForBackend")
            .is_none()
    );
    api.assert_ok("DELETE", "/backends/webapp-backend", Value::Null)
        .await;
    assert_eq!(
        api.get("/frontends/webapp-frontend").await.1["waitingForBackend"],
        json!(true)
    );
    assert!(
        api.config_text()
            .await
            .contains("# waiting for backend webapp-backend")
    );
}

#[tokio::test]
async fn a_bind_on_a_port_in_use_is_refused_before_any_reload() {
    let Some(api) = Api::start().await else {
        return;
    };
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ours = free.local_addr().unwrap().to_string();
    drop(free);
    api.assert_ok(
        "PUT",
        "/frontends/fe",
        json!({"bind": ours, "backend":"be"}),
    )
    .await;
    // Stand-in for HAProxy holding the running config's address.
    let _held_by_haproxy = std::net::TcpListener::bind(&ours).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let (status, answer) = api
        .put("/frontends/clash", json!({"bind": address, "backend":"be"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["field"], "bind");
    assert_eq!(
        answer["error"],
        format!("frontend clash: cannot bind {address}: address already in use")
    );
    assert_eq!(api.get("/frontends/clash").await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.target.reload_count(), 1, "nothing half-applied");
    // An address the running config already binds is HAProxy's own, not a clash.
    api.assert_ok(
        "PUT",
        "/frontends/fe",
        json!({"bind": ours, "backend":"be","keepalive":"close"}),
    )
    .await;
    assert_eq!(api.target.reload_count(), 2);
    // Another frontend on exactly that address would bind too (SO_REUSEPORT) and take half of
    // its connections at random: refused, naming both.
    let (status, answer) = api
        .put(
            "/frontends/twin",
            json!({"bind": format!("{ours},127.0.0.9:1"), "backend":"be"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["field"], "bind");
    assert_eq!(
        answer["error"],
        format!(
            "frontend twin: {ours} is already bound by frontend fe (HAProxy would split its connections between the two at random)"
        )
    );
    assert_eq!(api.get("/frontends/twin").await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.target.reload_count(), 2, "nothing applied");
}

#[tokio::test]
async fn a_corrupt_state_file_stops_the_start_and_is_left_alone() {
    let Some(bin) = haproxy_bin() else { return };
    let dir = TestDir::new();
    let path = state_file::path_in(dir.path());
    std::fs::write(&path, "{\"version\":1,\"frontends\":[{\"key\":\"fe\"").unwrap();
    let options = ControllerOptions {
        state_file: path.clone(),
        render: dir.settings.clone(),
    };
    let target = Arc::new(CheckOnlyTarget::new(bin));
    let Err(err) = Controller::start_from_state_file(target.clone(), options.clone()) else {
        panic!("a corrupt state file must not start");
    };
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"version\":1,\"frontends\":[{\"key\":\"fe\""
    );
    std::fs::remove_file(&path).unwrap();
    let empty = Controller::start_from_state_file(target, options).unwrap();
    assert!(empty.config().frontends.is_empty());
}
