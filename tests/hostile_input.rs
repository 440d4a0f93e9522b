//! Hostile input against both APIs, in-process (`tower::ServiceExt::oneshot` on the real
//! routers): arbitrary path segments (any bytes, percent-encoded: newlines, `%0a`, invalid
//! UTF-8, unicode), arbitrary JSON of every type in every body field, and raw garbage bodies.
//! Properties: never a 5xx; every refusal is a 4xx JSON `{"error": string, "field"?: string}`;
//! a refused request changes nothing (same listings, byte-identical haproxy.cfg, no reload);
//! an accepted change renders a config without control characters that passed `haproxy -c`.

#![allow(clippy::unwrap_used)] // Test code: a panic here is a test failure.

mod aqueduct_support;

use aqueduct_support::{CheckOnlyTarget, TestDir, haproxy_bin};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use thalassa::aqueduct::controller::{Controller, ControllerOptions};
use thalassa::aqueduct::{routes, state_file};
use thalassa::config::Config;
use thalassa::registry::handle::{Registry, RegistryConfig};
use tower::ServiceExt;

/// Answers one request in-process: status and body bytes.
async fn call(
    app: &axum::Router,
    method: Method,
    uri: &str,
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, bytes.to_vec())
}

/// The shape every answer must have: no 5xx, and every 4xx is the JSON error object.
fn check_answer(status: StatusCode, body: &[u8], what: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        !status.is_server_error(),
        "{what}: {status} {}",
        String::from_utf8_lossy(body)
    );
    if status.is_client_error() {
        let value: Value = serde_json::from_slice(body)
            .map_err(|err| TestCaseError::fail(format!("{what}: {status} not JSON: {err}")))?;
        prop_assert!(value["error"].is_string(), "{what}: {value}");
        prop_assert!(
            value.get("field").is_none_or(Value::is_string),
            "{what}: {value}"
        );
    }
    Ok(())
}

/// Percent-encodes every byte but unreserved ones, so any byte string becomes a path segment
/// that decodes back to it (newlines, `%`, `/`, invalid UTF-8 included).
fn encode_segment(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (*b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Strings meant to break things: control characters, newlines, directives, unicode, huge.
fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\\x00-\\x1f\\x7f]{1,4}[a-z ]{0,8}",
        "[a-z]{0,6}(\n|\r\n|\r)[a-z ]{0,12}",
        Just("web\nbackend evil".to_owned()),
        Just("x\r\nserver evil 127.0.0.1:1".to_owned()),
        Just("%0a".to_owned()),
        Just("a;b".to_owned()),
        Just("é☃😀".to_owned()),
        Just("".to_owned()),
        Just(" ".to_owned()),
        Just("x".repeat(5000)),
        Just("global".to_owned()),
        Just("../../etc/passwd".to_owned()),
        "[ -~]{0,40}",
    ]
}

/// Any JSON value, hostile strings and extreme numbers included, nested a few levels.
fn hostile_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON has no NaN/inf", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        Just(json!(-1)),
        Just(json!(0)),
        Just(json!(65536)),
        Just(json!(1e300)),
        hostile_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(hostile_string(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid body with one field replaced (or added) by a hostile value, or a nested field of a
/// rule, member or health object replaced.
fn mutated(base: Value, fields: &'static [&'static str]) -> impl Strategy<Value = Value> {
    (prop::sample::select(fields), hostile_value(), any::<bool>()).prop_map(
        move |(field, value, drop_it)| {
            let mut body = base.clone();
            let (top, nested) = match field.split_once('.') {
                Some((top, nested)) => (top, Some(nested)),
                None => (field, None),
            };
            let Some(object) = body.as_object_mut() else {
                return body;
            };
            match nested {
                None if drop_it => {
                    object.remove(top);
                }
                None => {
                    object.insert(top.to_owned(), value);
                }
                Some(nested) => {
                    let slot = object.entry(top.to_owned()).or_insert(json!({}));
                    let target = match slot {
                        Value::Array(items) if !items.is_empty() => &mut items[0],
                        other => other,
                    };
                    if let Some(inner) = target.as_object_mut() {
                        inner.insert(nested.to_owned(), value);
                    }
                }
            }
            body
        },
    )
}

/// Bodies of every kind: mutated valid ones, arbitrary JSON, raw bytes.
fn body_strategy(base: Value, fields: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => mutated(base, fields).prop_map(|v| v.to_string().into_bytes()),
        2 => hostile_value().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..200),
        1 => Just(b"{\"a\":".repeat(200)),
        1 => Just("[".repeat(10_000).into_bytes()),
        1 => Just(vec![b' '; 70 * 1024]),
    ]
}

const FRONTEND_FIELDS: &[&str] = &[
    "bind",
    "backend",
    "mode",
    "keepalive",
    "rules",
    "natives",
    "rules.type",
    "rules.header",
    "rules.operation",
    "rules.value",
    "rules.backend",
    "extra",
];

const BACKEND_FIELDS: &[&str] = &[
    "type",
    "name",
    "version",
    "mode",
    "balance",
    "host",
    "members",
    "natives",
    "health",
    "members.host",
    "members.port",
    "members.weight",
    "health.method",
    "health.uri",
    "health.httpVersion",
    "health.interval",
    "extra",
];

fn valid_frontend() -> Value {
    json!({
        "bind": "127.77.0.1:18080",
        "backend": "web",
        "mode": "http",
        "rules": [{"type": "path", "operation": "path_beg", "value": "/api", "backend": "web"}],
        "natives": ["timeout client 5s"],
    })
}

fn valid_backend() -> Value {
    json!({
        "type": "static",
        "mode": "http",
        "members": [{"host": "127.0.0.1", "port": 8080}],
        "health": {"method": "GET", "uri": "/health", "interval": 2000},
    })
}

/// Keys: hostile bytes, or a fixed valid key so mutated bodies reach deep validation.
fn key_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(b"web".to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..40),
        1 => hostile_string().prop_map(String::into_bytes),
        1 => Just(b"web\nbackend".to_vec()),
        1 => Just(b"%0a".to_vec()),
    ]
}

#[derive(Debug, Clone)]
enum AqueductRequest {
    PutFrontend(Vec<u8>, Vec<u8>),
    PutBackend(Vec<u8>, Vec<u8>),
    SwitchVersion(Vec<u8>, Vec<u8>),
    Delete(&'static str, Vec<u8>),
    Get(&'static str, Vec<u8>),
}

fn aqueduct_request() -> impl Strategy<Value = AqueductRequest> {
    prop_oneof![
        4 => (key_strategy(), body_strategy(valid_frontend(), FRONTEND_FIELDS))
            .prop_map(|(k, b)| AqueductRequest::PutFrontend(k, b)),
        4 => (key_strategy(), body_strategy(valid_backend(), BACKEND_FIELDS))
            .prop_map(|(k, b)| AqueductRequest::PutBackend(k, b)),
        1 => (key_strategy(), body_strategy(json!({"name": "web", "version": "2"}), &["name", "version", "extra"]))
            .prop_map(|(k, b)| AqueductRequest::SwitchVersion(k, b)),
        1 => (prop::sample::select(&["frontends", "backends"][..]), key_strategy())
            .prop_map(|(kind, k)| AqueductRequest::Delete(kind, k)),
        1 => (prop::sample::select(&["frontends", "backends"][..]), key_strategy())
            .prop_map(|(kind, k)| AqueductRequest::Get(kind, k)),
    ]
}

struct Aqueduct {
    app: axum::Router,
    target: Arc<CheckOnlyTarget>,
    _dir: TestDir,
}

impl Aqueduct {
    async fn state(&self) -> (Vec<u8>, Vec<u8>, Vec<u8>, usize) {
        let get = |path: &'static str| async move {
            call(&self.app, Method::GET, path, Vec::new()).await.1
        };
        (
            get("/frontends").await,
            get("/backends").await,
            get("/haproxy/config").await,
            self.target.reload_count(),
        )
    }
}

/// A rendered haproxy.cfg line may hold no control character (tabs aside).
fn check_config_lines(config: &[u8]) -> Result<(), TestCaseError> {
    let text = String::from_utf8(config.to_vec())
        .map_err(|_| TestCaseError::fail("haproxy.cfg is not UTF-8"))?;
    for line in text.split('\n') {
        prop_assert!(
            !line.chars().any(|c| c.is_control() && c != '\t'),
            "control character in rendered line {line:?}"
        );
    }
    Ok(())
}

#[test]
fn aqueduct_api_survives_hostile_requests() {
    let Some(bin) = haproxy_bin() else { return };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let aqueduct = runtime.block_on(async {
        let dir = TestDir::new();
        let target = Arc::new(CheckOnlyTarget::new(bin));
        let options = ControllerOptions {
            state_file: state_file::path_in(dir.path()),
            render: dir.settings.clone(),
        };
        let controller = Controller::start(target.clone(), options, Config::default());
        let app = routes::router_with_options(controller, None, 4);
        Aqueduct {
            app,
            target,
            _dir: dir,
        }
    });
    let cases = std::env::var("HOSTILE_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let accepted = std::cell::Cell::new(0usize);
    runner
        .run(&aqueduct_request(), |request| {
            runtime.block_on(async {
                let before = aqueduct.state().await;
                let (method, uri, body) = match &request {
                    AqueductRequest::PutFrontend(k, b) => (
                        Method::PUT,
                        format!("/frontends/{}", encode_segment(k)),
                        b.clone(),
                    ),
                    AqueductRequest::PutBackend(k, b) => (
                        Method::PUT,
                        format!("/backends/{}", encode_segment(k)),
                        b.clone(),
                    ),
                    AqueductRequest::SwitchVersion(k, b) => (
                        Method::POST,
                        format!("/backends/{}", encode_segment(k)),
                        b.clone(),
                    ),
                    AqueductRequest::Delete(kind, k) => (
                        Method::DELETE,
                        format!("/{kind}/{}", encode_segment(k)),
                        Vec::new(),
                    ),
                    AqueductRequest::Get(kind, k) => (
                        Method::GET,
                        format!("/{kind}/{}", encode_segment(k)),
                        Vec::new(),
                    ),
                };
                let (status, answer) = call(&aqueduct.app, method.clone(), &uri, body).await;
                check_answer(status, &answer, &format!("{method} {uri}"))?;
                let after = aqueduct.state().await;
                if status.is_client_error() || method == Method::GET {
                    prop_assert_eq!(&before.0, &after.0, "{} {}: frontends changed", method, uri);
                    prop_assert_eq!(&before.1, &after.1, "{} {}: backends changed", method, uri);
                    prop_assert_eq!(
                        &before.2,
                        &after.2,
                        "{} {}: haproxy.cfg changed",
                        method,
                        uri
                    );
                    prop_assert_eq!(before.3, after.3, "{} {}: reloaded", method, uri);
                } else {
                    accepted.set(accepted.get() + 1);
                    check_config_lines(&after.2)?;
                }
                Ok(())
            })
        })
        .unwrap();
    // The generator must reach the success path too, or the "accepted" checks test nothing.
    eprintln!("aqueduct: {} hostile requests accepted", accepted.get());
    assert!(
        accepted.get() > 0,
        "no hostile-but-valid request was accepted"
    );
}

#[test]
fn too_many_static_members_are_refused_naming_the_field() {
    let Some(bin) = haproxy_bin() else { return };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dir = TestDir::new();
        let target = Arc::new(CheckOnlyTarget::new(bin));
        let options = ControllerOptions {
            state_file: state_file::path_in(dir.path()),
            render: dir.settings.clone(),
        };
        let controller = Controller::start(target.clone(), options, Config::default());
        let app = routes::router_with_options(controller, None, 2);
        let members = |n: u16| -> Vec<Value> {
            (0..n)
                .map(|i| json!({"host": "127.0.0.1", "port": 8000 + i}))
                .collect()
        };
        let body = |n| json!({"type": "static", "members": members(n)}).to_string();
        let (status, answer) = call(&app, Method::PUT, "/backends/web", body(3).into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer["field"], "members");
        assert!(answer["error"].as_str().unwrap().contains("at most 2"));
        assert_eq!(target.reload_count(), 0);
        let (status, _) = call(&app, Method::PUT, "/backends/web", body(2).into()).await;
        assert_eq!(status, StatusCode::OK);
    });
}

#[derive(Debug, Clone)]
enum RegistryRequest {
    Post([Vec<u8>; 4], Vec<u8>),
    Delete([Vec<u8>; 4]),
    List(Vec<Vec<u8>>),
}

fn segment_strategy(valid: &'static str) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(valid.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..30),
        1 => hostile_string().prop_map(String::into_bytes),
        1 => Just(b"a\nb".to_vec()),
        1 => Just(b"99999999999".to_vec()),
        1 => Just(b"-1".to_vec()),
    ]
}

fn registry_key() -> impl Strategy<Value = [Vec<u8>; 4]> {
    (
        segment_strategy("web"),
        segment_strategy("1.0"),
        segment_strategy("127.0.0.1"),
        segment_strategy("8080"),
    )
        .prop_map(|(a, b, c, d)| [a, b, c, d])
}

fn registry_request() -> impl Strategy<Value = RegistryRequest> {
    let meta = body_strategy(
        json!({"secondsToExpire": 60, "hostname": "box"}),
        &["secondsToExpire", "hostname", "extra"],
    );
    prop_oneof![
        4 => (registry_key(), meta).prop_map(|(k, b)| RegistryRequest::Post(k, b)),
        1 => registry_key().prop_map(RegistryRequest::Delete),
        1 => prop::collection::vec(segment_strategy("web"), 0..3).prop_map(RegistryRequest::List),
    ]
}

#[test]
fn registry_api_survives_hostile_requests() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (registry, app) = runtime.block_on(async {
        let registry = Registry::open(RegistryConfig {
            max_registrations: 50,
            ..RegistryConfig::default()
        })
        .unwrap();
        let app = thalassa::registry::routes::router(registry.clone());
        (registry, app)
    });
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 500,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let accepted_posts = std::cell::Cell::new(0usize);
    runner
        .run(&registry_request(), |request| {
            runtime.block_on(async {
                let before = call(&app, Method::GET, "/registrations", Vec::new())
                    .await
                    .1;
                let (method, uri, body) = match &request {
                    RegistryRequest::Post(key, body) => (
                        Method::POST,
                        format!(
                            "/registrations/{}",
                            key.iter()
                                .map(|s| encode_segment(s))
                                .collect::<Vec<_>>()
                                .join("/")
                        ),
                        body.clone(),
                    ),
                    RegistryRequest::Delete(key) => (
                        Method::DELETE,
                        format!(
                            "/registrations/{}",
                            key.iter()
                                .map(|s| encode_segment(s))
                                .collect::<Vec<_>>()
                                .join("/")
                        ),
                        Vec::new(),
                    ),
                    RegistryRequest::List(segments) => (
                        Method::GET,
                        format!(
                            "/registrations/{}",
                            segments
                                .iter()
                                .map(|s| encode_segment(s))
                                .collect::<Vec<_>>()
                                .join("/")
                        ),
                        Vec::new(),
                    ),
                };
                let (status, answer) = call(&app, method.clone(), &uri, body).await;
                check_answer(status, &answer, &format!("{method} {uri}"))?;
                if status.is_client_error() {
                    let after = call(&app, Method::GET, "/registrations", Vec::new())
                        .await
                        .1;
                    prop_assert_eq!(
                        before,
                        after,
                        "{} {}: a refused request changed the registry",
                        method,
                        uri
                    );
                } else if method == Method::POST {
                    accepted_posts.set(accepted_posts.get() + 1);
                }
                // Whatever got in is a key the registry can print back on one line.
                let list: Vec<Map<String, Value>> = serde_json::from_slice(
                    &call(&app, Method::GET, "/registrations", Vec::new())
                        .await
                        .1,
                )
                .unwrap();
                for registration in &list {
                    let id = registration["id"].as_str().unwrap_or("");
                    prop_assert!(
                        !id.chars().any(char::is_control),
                        "control character in id {id:?}"
                    );
                }
                prop_assert!(registry.len() <= 50, "cap exceeded: {}", registry.len());
                Ok(())
            })
        })
        .unwrap();
    eprintln!("registry: {} hostile POSTs accepted", accepted_posts.get());
    assert!(
        accepted_posts.get() > 0,
        "no valid registration was generated"
    );
}
