//! Bad input gets a clear 400 (413 for an oversized body) with a JSON `{"error","field"}` body
//! and changes nothing, against the real binary.

mod registry_support;
mod support;

use registry_support::{Registry, client, send};
use serde_json::{Value, json};

const GOOD: &str = "/registrations/svc/1.0.0/10.0.0.1/8080";

/// POSTs `body` to `path` and expects `status` with the JSON error naming `field`.
async fn check(registry: &Registry, path: &str, body: &str, status: u16, field: Option<&str>) {
    let (got_status, got_body) = send(
        client()
            .post(format!("{}{path}", registry.url))
            .header("content-type", "application/json")
            .body(body.to_owned()),
    )
    .await;
    assert_eq!(got_status, status, "POST {path} {body:?}: {got_body}");
    let error: Value = serde_json::from_str(&got_body)
        .unwrap_or_else(|_| panic!("POST {path}: not a JSON body: {got_body:?}"));
    assert!(
        error["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{error}"
    );
    assert_eq!(
        error.get("field").and_then(Value::as_str),
        field,
        "POST {path} {body:?}: {error}"
    );
}

#[tokio::test]
async fn bad_path_segments_are_refused_and_change_nothing() {
    let registry = Registry::start(&[]).await;
    let long = "a".repeat(254);
    let cases: Vec<(String, &str)> = vec![
        ("/registrations/svc/1.0.0/10.0.0.1/http".into(), "port"),
        ("/registrations/svc/1.0.0/10.0.0.1/80abc".into(), "port"),
        ("/registrations/svc/1.0.0/10.0.0.1/0".into(), "port"),
        ("/registrations/svc/1.0.0/10.0.0.1/65536".into(), "port"),
        ("/registrations/svc/1.0.0/10.0.0.1/-1".into(), "port"),
        (
            "/registrations/svc/1.0.0/10.0.0.1/99999999999999999999".into(),
            "port",
        ),
        ("/registrations/my%20svc/1.0.0/10.0.0.1/80".into(), "name"),
        ("/registrations/my%2Fsvc/1.0.0/10.0.0.1/80".into(), "name"),
        ("/registrations/svc%01/1.0.0/10.0.0.1/80".into(), "name"),
        ("/registrations/svc%0A/1.0.0/10.0.0.1/80".into(), "name"),
        (format!("/registrations/{long}/1.0.0/10.0.0.1/80"), "name"),
        ("/registrations/svc/1.0%090/10.0.0.1/80".into(), "version"),
        ("/registrations/svc/1.0.0/10.0.0.1%0D/80".into(), "host"),
        (format!("/registrations/svc/1.0.0/{long}/80"), "host"),
    ];
    for (path, field) in &cases {
        check(&registry, path, "{}", 400, Some(field)).await;
    }
    // DELETE validates the same way.
    let (status, body) = registry
        .delete("/registrations/svc/1.0.0/10.0.0.1/http")
        .await;
    assert_eq!(status, 400, "{body}");
    // 253 bytes is still fine.
    let longest = "a".repeat(253);
    check_ok(&registry, &format!("/registrations/{longest}/1/h/80")).await;

    assert_eq!(registry.ids().await.len(), 1);
    assert_eq!(
        registry
            .metric("thalassa_registry_posts_total{outcome=\"rejected\"}")
            .await,
        cases.len() as f64
    );
}

async fn check_ok(registry: &Registry, path: &str) {
    let (status, body) = registry.post(path, "{}").await;
    assert_eq!((status, body.as_str()), (200, "200"), "{path}");
}

#[tokio::test]
async fn bad_bodies_are_refused_and_leave_the_registration_untouched() {
    let registry = Registry::start(&[]).await;
    registry
        .post(GOOD, r#"{"secondsToExpire":100,"keep":"me"}"#)
        .await;
    let before = registry.get("/leases").await;
    let meta_before = registry.get("/registrations/svc/1.0.0").await[0]["meta"].clone();

    let cases: &[(&str, &str)] = &[
        (r#"{"secondsToExpire":"abc"}"#, "secondsToExpire"),
        (r#"{"secondsToExpire":"NaN"}"#, "secondsToExpire"),
        (r#"{"secondsToExpire":"10s"}"#, "secondsToExpire"),
        (r#"{"secondsToExpire":-1}"#, "secondsToExpire"),
        (r#"{"secondsToExpire":"-5"}"#, "secondsToExpire"),
        (r#"{"secondsToExpire":true}"#, "secondsToExpire"),
        (r#"{"secondsToExpire":[60]}"#, "secondsToExpire"),
        (r#"{"secondsToExpire":{"s":60}}"#, "secondsToExpire"),
        (r#"{"secondsToExpire":1e300}"#, "secondsToExpire"),
        ("[1,2]", "body"),
        ("5", "body"),
        (r#""text""#, "body"),
        ("true", "body"),
        ("{not json", "body"),
        ("secondsToExpire=60", "body"),
    ];
    for (body, field) in cases {
        check(&registry, GOOD, body, 400, Some(field)).await;
    }
    assert_eq!(registry.get("/leases").await, before);
    assert_eq!(
        registry.get("/registrations/svc/1.0.0").await[0]["meta"],
        meta_before
    );
    // Nothing new appeared either.
    assert_eq!(registry.ids().await, ["/svc/1.0.0/10.0.0.1/8080"]);
}

#[tokio::test]
async fn oversized_bodies_get_413_and_change_nothing() {
    let registry = Registry::start(&[]).await;
    let padding = "x".repeat(64 * 1024);
    let big = json!({ "pad": padding }).to_string();
    check(&registry, GOOD, &big, 413, None).await;
    // Far larger than axum's own default limit too.
    let huge = json!({ "pad": "y".repeat(3 * 1024 * 1024) }).to_string();
    check(&registry, GOOD, &huge, 413, None).await;
    assert_eq!(registry.ids().await, Vec::<String>::new());
    // Just under the limit is fine.
    let fits = json!({ "pad": "z".repeat(60 * 1024) }).to_string();
    let (status, _) = registry.post(GOOD, &fits).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn undecodable_path_segments_get_a_json_400() {
    let registry = Registry::start(&[]).await;
    for path in [
        "/registrations/%FF",
        "/registrations/a/%FF",
        "/registrations/a/1/h/%FF",
    ] {
        let (status, body) = send(client().get(format!("{}{path}", registry.url))).await;
        if path.ends_with("/h/%FF") {
            // Only POST and DELETE exist on the four-segment path.
            assert_eq!(status, 405, "{path}");
            check(&registry, path, "{}", 400, Some("path")).await;
            continue;
        }
        assert_eq!(status, 400, "{path}: {body}");
        let error: Value = serde_json::from_str(&body).expect("JSON error body");
        assert_eq!(error["field"], "path", "{error}");
    }
}
