//! The UI's HTTP surface, served for real on loopback: page routes, embedded assets, the event
//! stream (snapshot then deltas, closed on shutdown), the registry view and activity paging,
//! and that merging with an API router leaves the API's routes and fallback in charge.
#![allow(clippy::unwrap_used)]

mod support;
mod ui_support;

use serde_json::{Value, json};
use thalassa::status::{Activity, ProxySample, StatsSample};
use thalassa::ui::{Hub, NodeLabel, router, router_for_node};
use ui_support::{FakeRegistry, Served, SseReader};

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn ui(registry_url: &str) -> (tempfile::TempDir, Hub, Served) {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(dir.path()).unwrap();
    let registry = registry_url.parse().expect("registry URLs");
    let served = Served::start(router(hub.clone(), registry)).await;
    (dir, hub, served)
}

#[tokio::test]
async fn pages_redirect_and_serve_the_app() {
    let (_dir, _hub, served) = ui("http://127.0.0.1:9").await;
    let client = no_redirects();

    let root = client.get(served.url("/")).send().await.unwrap();
    assert_eq!(root.status(), 303);
    assert_eq!(root.headers()["location"], "/overview");

    for page in ["/overview", "/activity", "/registry", "/nodes"] {
        let response = client.get(served.url(page)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{page}");
        assert_eq!(
            response.headers()["content-type"],
            "text/html; charset=utf-8"
        );
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap();
        assert!(csp.contains("default-src 'self'"), "{csp}");
        let body = response.text().await.unwrap();
        assert!(
            body.contains(r#"<script type="module" src="/ui/app.js">"#),
            "{page}"
        );
        assert!(
            !body.contains("//cdn") && !body.contains("https://"),
            "no CDN"
        );
    }
}

#[tokio::test]
async fn assets_are_embedded_with_types_and_etags() {
    let (_dir, _hub, served) = ui("http://127.0.0.1:9").await;
    let client = no_redirects();
    for (path, content_type) in [
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/overview.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
        ("/ui/favicon.svg", "image/svg+xml"),
    ] {
        let response = client.get(served.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], content_type, "{path}");
        let etag = response.headers()["etag"].clone();
        let on_disk = std::fs::read(format!("{}/ui/{}", env!("CARGO_MANIFEST_DIR"), &path[4..]));
        assert_eq!(response.bytes().await.unwrap(), on_disk.unwrap(), "{path}");

        let again = client
            .get(served.url(path))
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
    }
    let missing = client.get(served.url("/ui/nope.js")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"], "no file /ui/nope.js");
    let escape = client
        .get(served.url("/ui/../Cargo.toml"))
        .send()
        .await
        .unwrap();
    assert_ne!(escape.status(), 200);
}

#[tokio::test]
async fn the_node_label_names_the_aqueduct_the_pages_show() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(dir.path()).unwrap();
    let label = NodeLabel {
        id: "aq-7".into(),
        address: "http://127.0.0.1:10000".into(),
        fleet: true,
    };
    let registry = "http://127.0.0.1:9".parse().unwrap();
    let served = Served::start(router_for_node(hub, registry, None, label)).await;
    let response = no_redirects()
        .get(served.url("/ui/api/node"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"id": "aq-7", "address": "http://127.0.0.1:10000", "fleet": true})
    );
}

#[tokio::test]
async fn api_routes_and_fallback_keep_priority_after_a_merge() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(dir.path()).unwrap();
    let api = axum::Router::new()
        .route(
            "/frontends",
            axum::routing::get(|| async { "api frontends" }),
        )
        .route(
            "/backends/{key}",
            axum::routing::post(|| async { "api switch" }),
        )
        .fallback(thalassa::api_error::route_not_found);
    let app = api.merge(router(hub, "http://127.0.0.1:9".parse().unwrap()));
    let served = Served::start(app).await;
    let client = no_redirects();

    let frontends = client.get(served.url("/frontends")).send().await.unwrap();
    assert_eq!(frontends.text().await.unwrap(), "api frontends");
    let switch = client
        .post(served.url("/backends/web"))
        .send()
        .await
        .unwrap();
    assert_eq!(switch.text().await.unwrap(), "api switch");
    let unknown = client
        .get(served.url("/nope/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error"], "no route for /nope/nothing");
    let overview = client.get(served.url("/overview")).send().await.unwrap();
    assert_eq!(overview.status(), 200);
}

#[tokio::test]
async fn events_send_a_snapshot_then_deltas_in_order() {
    let (_dir, hub, served) = ui("http://127.0.0.1:9").await;
    hub.config(json!({"frontends": [{"key": "web", "bind": "*:80"}], "backends": []}));
    hub.activity(Activity::now("started", "aqueduct", json!({})));
    for t in 1..=3 {
        let mut sample = StatsSample {
            time_ms: t,
            ..StatsSample::default()
        };
        let row = ProxySample {
            status: "OPEN".into(),
            scur: t * 2,
            ..ProxySample::default()
        };
        sample.frontends.insert("web".into(), row);
        hub.stats(sample);
    }

    let mut events = SseReader::open(&served.url("/events")).await;
    let (name, snapshot) = events.next().await.unwrap();
    assert_eq!(name, "snapshot");
    assert_eq!(snapshot["config"]["frontends"][0]["bind"], "*:80");
    assert_eq!(snapshot["history"]["times"], json!([1, 2, 3]));
    assert_eq!(
        snapshot["history"]["frontends"]["web"]["scur"],
        json!([2, 4, 6])
    );
    assert_eq!(snapshot["stats"]["frontends"]["web"]["scur"], 6);
    assert_eq!(snapshot["activity"][0]["verb"], "started");
    assert_eq!(snapshot["historyCapacity"], 150);

    hub.config(json!({"frontends": [], "backends": []}));
    hub.stats(StatsSample {
        time_ms: 4,
        ..StatsSample::default()
    });
    hub.activity(Activity::now(
        "member-up",
        "backend/web/web_127.0.0.1:8080",
        json!({"check_status": "L7OK", "check_duration_ms": 1}),
    ));
    let (name, config) = events.next().await.unwrap();
    assert_eq!(
        (name.as_str(), &config["frontends"]),
        ("config", &json!([]))
    );
    let (name, stats) = events.next().await.unwrap();
    assert_eq!((name.as_str(), &stats["time"]), ("stats", &json!(4)));
    let (name, activity) = events.next().await.unwrap();
    assert_eq!(name, "activity");
    assert_eq!(activity["detail"]["check_status"], "L7OK");
    assert_eq!(activity["id"], 2);

    // Closing the hub ends open streams, so a graceful shutdown does not wait on pages.
    hub.close();
    assert_eq!(events.next().await, None);
}

#[tokio::test]
async fn the_registry_view_merges_expiries_and_reports_outages() {
    let registry = FakeRegistry::default();
    registry.register("web", "1.0.0", "127.0.0.1", 8080, 4_000_000_000_000);
    registry.register("web", "1.0.0", "127.0.0.1", 8081, 4_000_000_000_001);
    registry.register("web", "2.0.0", "127.0.0.1", 8082, 4_000_000_000_002);
    let registry_server = Served::start(registry.router()).await;
    let (_dir, _hub, served) = ui(&registry_server.url("")).await;

    let view: Value = reqwest::get(served.url("/ui/api/registry"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["versions"], json!({"web": {"1.0.0": 2, "2.0.0": 1}}));
    assert_eq!(view["registrations"][1]["id"], "/web/1.0.0/127.0.0.1/8081");
    assert_eq!(view["registrations"][1]["expiresAt"], 4_000_000_000_001u64);
    assert_eq!(view["registrations"][1]["meta"]["secondsToExpire"], 10000);
    assert!(view["now"].as_u64().unwrap() > 0);
    assert!(view.get("warning").is_none());

    registry_server.stop().await;
    let down = reqwest::get(served.url("/ui/api/registry")).await.unwrap();
    assert_eq!(down.status(), 502);
    let body: Value = down.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("registry unavailable: GET http://127.0.0.1:"),
        "{body}"
    );
}

#[tokio::test]
async fn the_registry_view_comes_from_the_next_node_when_one_is_down() {
    let registry = FakeRegistry::default();
    registry.register("web", "1.0.0", "127.0.0.1", 8080, 4_000_000_000_000);
    let registry_server = Served::start(registry.router()).await;
    let dead = format!("http://127.0.0.1:{}", support::free_port());
    let (_dir, _hub, served) = ui(&format!("{dead},{}", registry_server.url(""))).await;
    for _ in 0..2 {
        let view: Value = reqwest::get(served.url("/ui/api/registry"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(view["registrations"][0]["id"], "/web/1.0.0/127.0.0.1/8080");
    }
}

#[tokio::test]
async fn missing_leases_become_a_warning_not_an_outage() {
    let registrations = axum::Router::new().route(
        "/registrations",
        axum::routing::get(|| async {
            axum::Json(
                json!([{"name": "db", "version": "1", "host": "127.0.0.1", "port": 3306,
                "lastKnown": 1, "meta": {}, "id": "/db/1/127.0.0.1/3306"}]),
            )
        }),
    );
    let registry_server = Served::start(registrations).await;
    let (_dir, _hub, served) = ui(&format!("{}/", registry_server.url(""))).await;
    let view: Value = reqwest::get(served.url("/ui/api/registry"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["registrations"][0]["expiresAt"], Value::Null);
    assert!(
        view["warning"].as_str().unwrap().contains("HTTP 404"),
        "{view}"
    );
}

#[tokio::test]
async fn older_activity_pages_backwards() {
    let (_dir, hub, served) = ui("http://127.0.0.1:9").await;
    for n in 0..5 {
        hub.activity(Activity::now(
            "online",
            format!("/web/1/127.0.0.1/{n}"),
            json!({}),
        ));
    }
    let ids = |page: Value| -> Vec<u64> {
        page.as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_u64().unwrap())
            .collect()
    };
    let get = |query: &str| {
        let url = served.url(&format!("/ui/api/activity{query}"));
        async move { reqwest::get(url).await.unwrap() }
    };
    assert_eq!(
        ids(get("?before=4&limit=2").await.json().await.unwrap()),
        [2, 3]
    );
    assert_eq!(ids(get("?limit=1").await.json().await.unwrap()), [5]);
    let bad = get("?before=soon").await;
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("before"), "{body}");
}
