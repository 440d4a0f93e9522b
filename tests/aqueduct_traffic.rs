//! A rendered config really routes traffic: HAProxy is started on it (plain foreground mode;
//! reloads belong to the supervisor's tests) in front of two in-process origins.

#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches start the real programs they measure"
)]
#![allow(clippy::unwrap_used)] // Test code: a panic here is a test failure.

mod aqueduct_support;

use aqueduct_support::{TestDir, haproxy_bin};
use axum::extract::Request;
use serde_json::json;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use thalassa::aqueduct::validate;
use thalassa::config::Config;
use thalassa::haproxy::render::{RenderMembers, render};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An origin answering `<tag> host=<Host header> path=<path>`.
async fn origin(tag: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move |request: Request| async move {
        let host = request
            .headers()
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        format!("{tag} host={host} path={}", request.uri().path())
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A port the OS had free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// HAProxy killed (by PID) when the test ends.
struct HaproxyProcess(Child);

impl Drop for HaproxyProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn rendered_config_routes_traffic_and_waiting_frontends_answer_503() {
    let Some(bin) = haproxy_bin() else { return };
    let (site, api) = (origin("site").await, origin("api").await);
    let (web_port, waiting_port, tcp_port) = (free_port(), free_port(), free_port());
    let mut config = Config::default();
    for (key, body) in [
        (
            "web",
            json!({"bind": format!("127.0.0.1:{web_port}"), "backend":"site", "rules":[
            {"type":"path","operation":"path_beg","value":"/api","backend":"api"}]}),
        ),
        (
            "early",
            json!({"bind": format!("127.0.0.1:{waiting_port}"), "backend":"not-yet"}),
        ),
        (
            "raw",
            json!({"bind": format!("127.0.0.1:{tcp_port}"), "backend":"site-tcp", "mode":"tcp"}),
        ),
    ] {
        config
            .frontends
            .insert(key.into(), validate::frontend(key, &body).unwrap());
    }
    let member = |addr: SocketAddr| json!([{"host": addr.ip().to_string(), "port": addr.port()}]);
    for (key, body) in [
        (
            "site",
            json!({"type":"static","balance":"source","members": member(site)}),
        ),
        (
            "api",
            json!({"type":"static","host":"api.example","health":{"httpVersion":"HTTP/1.1"},
            "natives":["http-response set-header X-Via \"thalassa\""],"members": member(api)}),
        ),
        (
            "site-tcp",
            json!({"type":"static","mode":"tcp","members": member(site)}),
        ),
    ] {
        config
            .backends
            .insert(key.into(), validate::backend(key, &body).unwrap());
    }
    let dir = TestDir::new();
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg, render(&config, &RenderMembers::new(), &dir.settings)).unwrap();
    let stderr = std::fs::File::create(dir.path().join("haproxy.stderr")).unwrap();
    let _haproxy = HaproxyProcess(
        Command::new(&bin)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::new();
    let web = format!("http://127.0.0.1:{web_port}");
    let mut ready = false;
    for _ in 0..400 {
        if client.get(&web).send().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ready, "haproxy never listened on {web}");

    let body = client
        .get(format!("{web}/index"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, format!("site host=127.0.0.1:{web_port} path=/index"));
    let response = client.get(format!("{web}/api/users")).send().await.unwrap();
    assert_eq!(
        response.headers()["x-via"],
        "thalassa",
        "natives are applied verbatim"
    );
    assert_eq!(
        response.text().await.unwrap(),
        "api host=api.example path=/api/users"
    );

    let waiting = client
        .get(format!("http://127.0.0.1:{waiting_port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(waiting.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);

    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", tcp_port))
        .await
        .unwrap();
    raw.write_all(b"GET /raw HTTP/1.0\r\nHost: tcp\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).await.unwrap();
    assert!(answer.ends_with("site host=tcp path=/raw"), "{answer}");

    // Health-check results are printed as warnings (`option log-health-checks`, for the
    // health-events ring): expected. Nothing else may be.
    let log = std::fs::read_to_string(dir.path().join("haproxy.stderr")).unwrap();
    let surprises: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("[ALERT]") || l.contains("[WARNING]"))
        .filter(|l| !l.contains("Health check for server "))
        .filter(|l| !aqueduct_support::is_root_start_warning(l))
        .collect();
    assert!(surprises.is_empty(), "{log}");
}
