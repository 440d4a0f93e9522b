//! The registry's HTTP API against the real binary: the original's wire format (checklist items
//! 1-2, 5-12), `/leases`, `/metrics`, and the registry's own registration.

mod registry_support;
mod support;

use registry_support::{Registry, client, send};
use serde_json::{Value, json};

const MYSQL: &str = "/registrations/mysql-backend/1.0.0/10.0.0.1/3306";

fn keys(object: &Value) -> Vec<&str> {
    object
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect()
}

fn now_ms() -> u64 {
    thalassa::registry::clock::now_ms()
}

#[tokio::test]
async fn post_then_get_has_the_originals_shape_and_form_bodies_are_json() {
    let registry = Registry::start(&[]).await;
    // curl -d sends a form content type; the body is still JSON.
    let before = now_ms();
    let response = client()
        .post(format!("{}{MYSQL}", registry.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"secondsToExpire":"10000"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.text().await.unwrap(), "200");
    let after = now_ms();

    let list = registry.get("/registrations/mysql-backend/1.0.0").await;
    let list = list.as_array().expect("array");
    assert_eq!(list.len(), 1);
    let reg = &list[0];
    assert_eq!(
        keys(reg),
        ["name", "version", "host", "port", "lastKnown", "meta", "id"]
    );
    assert_eq!(reg["name"], "mysql-backend");
    assert_eq!(reg["version"], "1.0.0");
    assert_eq!(reg["host"], "10.0.0.1");
    assert_eq!(reg["port"], 3306);
    assert_eq!(reg["id"], "/mysql-backend/1.0.0/10.0.0.1/3306");
    assert_eq!(
        reg["meta"],
        json!({"secondsToExpire": "10000", "hostname": "10.0.0.1"})
    );
    assert_eq!(keys(&reg["meta"]), ["secondsToExpire", "hostname"]);
    let last_known = reg["lastKnown"].as_u64().expect("epoch ms");
    assert!((before..=after).contains(&last_known), "{last_known}");

    // The string "10000" is honoured as 10000 s, not the 10 s default, despite the form type.
    let leases = registry.get("/leases").await;
    let lease = leases
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == "/mysql-backend/1.0.0/10.0.0.1/3306")
        .expect("lease");
    assert_eq!(keys(lease), ["id", "expiresAt", "lastKnown"]);
    assert_eq!(
        lease["expiresAt"].as_u64().unwrap() - lease["lastKnown"].as_u64().unwrap(),
        10_000_000
    );
}

#[tokio::test]
async fn repost_replaces_meta_and_refreshes_last_known_with_the_same_id() {
    let registry = Registry::start(&[]).await;
    registry.post(MYSQL, r#"{"a":1,"b":2}"#).await;
    let first = registry.get("/registrations/mysql-backend").await[0].clone();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    // A leading zero is the same port (parseInt), so the same registration.
    let (status, _) = registry
        .post(
            "/registrations/mysql-backend/1.0.0/10.0.0.1/03306",
            r#"{"hostname":"db1"}"#,
        )
        .await;
    assert_eq!(status, 200);
    let list = registry.get("/registrations/mysql-backend").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let second = &list[0];
    assert_eq!(second["id"], first["id"]);
    // Replaced, not merged; a client-sent hostname is kept.
    assert_eq!(second["meta"], json!({"hostname": "db1"}));
    assert!(second["lastKnown"].as_u64() > first["lastKnown"].as_u64());
}

#[tokio::test]
async fn listing_by_name_version_and_unknowns() {
    let registry = Registry::start(&[]).await;
    registry.post(MYSQL, "").await;
    registry
        .post("/registrations/mysql-backend/2.0.0/10.0.0.2/3306", "{}")
        .await;
    registry
        .post("/registrations/webapp/1.0.0/10.0.0.3/80", "{}")
        .await;

    let ids = |value: Value| -> Vec<String> {
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(registry.get("/registrations/mysql-backend").await),
        [
            "/mysql-backend/1.0.0/10.0.0.1/3306",
            "/mysql-backend/2.0.0/10.0.0.2/3306"
        ]
    );
    assert_eq!(
        ids(registry.get("/registrations/mysql-backend/2.0.0").await),
        ["/mysql-backend/2.0.0/10.0.0.2/3306"]
    );
    assert_eq!(registry.get("/registrations/unknown").await, json!([]));
    assert_eq!(
        registry.get("/registrations/unknown/1.0.0").await,
        json!([])
    );
    assert_eq!(
        registry.ids().await,
        [
            "/mysql-backend/1.0.0/10.0.0.1/3306",
            "/mysql-backend/2.0.0/10.0.0.2/3306",
            "/webapp/1.0.0/10.0.0.3/80"
        ]
    );
    // An empty body is an empty meta (plus the hostname default).
    assert_eq!(
        registry.get("/registrations/mysql-backend/1.0.0").await[0]["meta"],
        json!({"hostname": "10.0.0.1"})
    );
}

#[tokio::test]
async fn delete_answers_200_even_for_unknown_registrations() {
    let registry = Registry::start(&[]).await;
    registry.post(MYSQL, "{}").await;
    assert_eq!(registry.delete(MYSQL).await, (200, "200".to_owned()));
    assert_eq!(
        registry.get("/registrations/mysql-backend/1.0.0").await,
        json!([])
    );
    assert_eq!(registry.delete(MYSQL).await, (200, "200".to_owned()));
    assert_eq!(
        registry
            .metric("thalassa_registry_deletes_total{outcome=\"deleted\"}")
            .await,
        1.0
    );
    assert_eq!(
        registry
            .metric("thalassa_registry_deletes_total{outcome=\"unknown\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn the_registry_registers_itself() {
    let registry = Registry::start(&[]).await;
    let list = registry.get("/registrations/thalassa").await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    let own = &list[0];
    assert_eq!(own["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(own["host"], "127.0.0.1");
    assert_eq!(own["port"], registry.port);
    assert_eq!(
        own["meta"],
        json!({"eventsPath": "/events", "hostname": "127.0.0.1"})
    );
    // Its lease is renewed internally: one minute from its last refresh.
    let leases = registry.get("/leases").await;
    let lease = leases
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == own["id"])
        .expect("own lease");
    assert_eq!(
        lease["expiresAt"].as_u64().unwrap() - lease["lastKnown"].as_u64().unwrap(),
        60_000
    );
}

#[tokio::test]
async fn status_has_the_originals_shape() {
    let registry = Registry::start(&[]).await;
    for port in 1..=3 {
        registry
            .post(&format!("/registrations/s/1/127.0.0.1/{port}"), "{}")
            .await;
    }
    let status = registry.get("/status").await;
    assert_eq!(
        keys(&status),
        ["name", "version", "uptime", "memoryUsage", "stats"]
    );
    assert_eq!(status["name"], "thalassa");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(status["uptime"].as_f64().unwrap() > 0.0);
    assert!(status["memoryUsage"]["rss"].as_u64().unwrap() > 1_000_000);
    let meter = &status["stats"]["thalassa"]["registrationsPerSecond"];
    assert_eq!(
        keys(meter),
        [
            "mean",
            "count",
            "currentRate",
            "1MinuteRate",
            "5MinuteRate",
            "15MinuteRate"
        ]
    );
    // Three POSTs plus the registry's own registration.
    assert_eq!(meter["count"], 4);
    assert!(meter["mean"].as_f64().unwrap() > 0.0);
    assert!(meter["currentRate"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn metrics_count_posts_by_outcome() {
    let registry = Registry::start(&[]).await;
    registry.post(MYSQL, r#"{"v":1}"#).await; // created
    registry.post(MYSQL, r#"{"v":1}"#).await; // refreshed (a heartbeat)
    registry.post(MYSQL, r#"{"v":1}"#).await; // refreshed
    registry.post(MYSQL, r#"{"v":2}"#).await; // updated
    registry.post(MYSQL, r#"[1]"#).await; // rejected
    let check = |series: &'static str, expected: f64| {
        let registry = &registry;
        async move { assert_eq!(registry.metric(series).await, expected, "{series}") }
    };
    // The registry's own registration is one more `created`.
    check("thalassa_registry_posts_total{outcome=\"created\"}", 2.0).await;
    check("thalassa_registry_posts_total{outcome=\"refreshed\"}", 2.0).await;
    check("thalassa_registry_posts_total{outcome=\"updated\"}", 1.0).await;
    check("thalassa_registry_posts_total{outcome=\"rejected\"}", 1.0).await;
    check("thalassa_registry_registrations", 2.0).await;
    check("thalassa_registry_events_total{kind=\"online\"}", 3.0).await;
    check("thalassa_registry_expired_total", 0.0).await;
    check("thalassa_registry_subscribers", 0.0).await;
    let response = client()
        .get(format!("{}/metrics", registry.url))
        .send()
        .await
        .unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json_errors() {
    let registry = Registry::start(&[]).await;
    for path in ["/nope", "/registrations/a/b/c", "/registrations/", "/"] {
        let (status, body) = send(client().get(format!("{}{path}", registry.url))).await;
        assert_eq!(status, 404, "{path}");
        let body: Value = serde_json::from_str(&body).expect("JSON error body");
        assert!(
            body["error"].as_str().unwrap().contains("no route"),
            "{body}"
        );
    }
    let (status, body) = send(client().put(format!("{}{MYSQL}", registry.url))).await;
    assert_eq!(status, 405);
    let body: Value = serde_json::from_str(&body).expect("JSON error body");
    assert!(body["error"].is_string());
}
