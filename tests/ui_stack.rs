//! The UI end to end: `thalassa up` (registry + aqueduct + a real HAProxy) driven by the
//! walkthrough's curls (loopback binds and members), watched in a real headless Chromium.
//! The walkthrough state renders; a member goes DOWN -> UP on screen when its origin starts
//! answering and back when it stops; the version drop-down switches traffic; each of these
//! leaves an activity entry; the page recovers after the aqueduct restarts.
//!
//! Written against the documented behaviour of the wired `thalassa up` (`app::aqueduct` wires
//! the hub into the control plane).
#![allow(clippy::unwrap_used)]

mod support;
mod ui_support;

use fantoccini::Locator;
use serde_json::json;
use std::time::{Duration, Instant};
use support::{Origin, Proc, client, eventually, free_port, require_haproxy, spawn_thalassa};
use ui_support::{Browser, require_chromium};

struct Up {
    dir: tempfile::TempDir,
    registry: String,
    aqueduct: String,
    args: Vec<String>,
    proc: Proc,
}

impl Up {
    async fn start() -> Up {
        let dir = tempfile::tempdir().unwrap();
        let (registry_port, aqueduct_port) = (free_port(), free_port());
        let args = vec![
            "up".to_owned(),
            format!("--registry-listen=127.0.0.1:{registry_port}"),
            format!("--listen=127.0.0.1:{aqueduct_port}"),
            format!("--data-dir={}", dir.path().join("data").display()),
            "--drain-timeout=1s".to_owned(),
        ];
        let mut up = Up {
            registry: format!("http://127.0.0.1:{registry_port}"),
            aqueduct: format!("http://127.0.0.1:{aqueduct_port}"),
            proc: spawn_thalassa(dir.path(), "up", &arg_refs(&args)),
            args,
            dir,
        };
        support::wait_http(&format!("{}/overview", up.aqueduct), &mut up.proc).await;
        support::wait_http(&format!("{}/registrations", up.registry), &mut up.proc).await;
        up
    }

    async fn restart(&mut self) {
        assert!(
            self.proc.terminate().is_some(),
            "thalassa up did not stop on SIGTERM"
        );
        self.proc = spawn_thalassa(self.dir.path(), "up-again", &arg_refs(&self.args));
        support::wait_http(&format!("{}/overview", self.aqueduct), &mut self.proc).await;
    }

    async fn put(&self, path: &str, body: serde_json::Value) {
        let response = client()
            .put(format!("{}{path}", self.aqueduct))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            200,
            "PUT {path}: {}",
            response.text().await.unwrap()
        );
    }

    async fn register(&self, name: &str, version: &str, port: u16) {
        let url = format!(
            "{}/registrations/{name}/{version}/127.0.0.1/{port}",
            self.registry
        );
        let response = client()
            .post(url)
            .json(&json!({"secondsToExpire": "10000"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
}

fn arg_refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// What the frontend on `port` answers (the origin's name), if anything.
async fn through(port: u16) -> Option<String> {
    let response = client()
        .get(format!("http://127.0.0.1:{port}/"))
        .header("connection", "close")
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.text().await.ok()
}

fn status_of(backend: &str, port: u16) -> String {
    format!("[data-backend='{backend}'] [data-member='127.0.0.1:{port}'] .badge")
}

#[tokio::test]
async fn the_walkthrough_lives_on_screen() {
    if !require_haproxy() || !require_chromium() {
        return;
    }
    let mut up = Up::start().await;
    let (web_port, db_port) = (free_port(), free_port());
    // The walkthrough's curls, with loopback binds.
    up.put(
        "/frontends/mysql-frontend",
        json!({"bind": format!("127.0.0.1:{db_port}"), "backend": "mysql-backend", "mode": "tcp"}),
    )
    .await;
    up.put(
        "/frontends/webapp-frontend",
        json!({"bind": format!("127.0.0.1:{web_port}"), "backend": "webapp-backend", "mode": "http"}),
    )
    .await;
    up.put(
        "/backends/mysql-backend",
        json!({"type": "dynamic", "name": "mysql-backend", "version": "1.0.0", "balance": "source",
               "mode": "tcp", "natives": ["option mysql-check"]}),
    )
    .await;
    up.put(
        "/backends/webapp-backend",
        json!({"type": "dynamic", "name": "webapp-backend", "version": "1.0.0", "balance": "source",
               "mode": "http", "health": {"interval": "500"}}),
    )
    .await;
    // A MySQL member nothing answers for (loopback, not the walkthrough's 10.0.0.1), and a web
    // member whose origin is not started yet.
    let (mysql_member, v1_port) = (free_port(), free_port());
    up.register("mysql-backend", "1.0.0", mysql_member).await;
    up.register("webapp-backend", "1.0.0", v1_port).await;

    let browser = Browser::start().await;
    browser.goto(&format!("{}/", up.aqueduct)).await;
    browser
        .wait_text("#connection", "live", |t| t == Some("live"))
        .await;
    // The aqueduct hands its config to the page's hub on a task of its own after each PUT:
    // the frontends may arrive after the snapshot, as a config event.
    let frontends = eventually(
        Duration::from_secs(15),
        "both frontends on screen",
        || async {
            let frontends = browser.texts("[data-frontend] h3").await;
            (frontends == ["mysql-frontend", "webapp-frontend"]).then_some(frontends)
        },
    )
    .await;
    assert_eq!(frontends, ["mysql-frontend", "webapp-frontend"]);
    browser
        .wait_text(
            &status_of("mysql-backend", mysql_member),
            "the mysql member, down",
            |t| t == Some("DOWN"),
        )
        .await;
    browser
        .wait_text(
            &status_of("webapp-backend", v1_port),
            "the web member, down",
            |t| t == Some("DOWN"),
        )
        .await;
    browser.screenshot("stack-overview-down").await;

    // The origin starts answering: UP on screen, and traffic flows.
    let started = Instant::now();
    let v1 = Origin::start_on("v1", v1_port).await;
    browser
        .wait_text(
            &status_of("webapp-backend", v1_port),
            "the web member, up",
            |t| t == Some("UP"),
        )
        .await;
    eprintln!("origin answering -> UP on screen: {:?}", started.elapsed());
    // Registered after its backend was PUT, it is a current member (counted, not "leaving").
    // Its status comes with the stats, its membership with the config the aqueduct publishes
    // (throttled): awaited.
    let leaving_tag =
        format!("[data-backend='webapp-backend'] [data-member='127.0.0.1:{v1_port}'] .leaving");
    let leaving = eventually(
        Duration::from_secs(15),
        "the web member not shown as leaving",
        || async {
            let leaving = browser.texts(&leaving_tag).await;
            leaving.is_empty().then_some(leaving)
        },
    )
    .await;
    assert!(leaving.is_empty(), "a registered member shown as leaving");
    browser
        .wait_text(
            "[data-backend='webapp-backend'] .ring-box",
            "the web backend's ring",
            |t| t.is_some_and(|t| t.contains("1/1")),
        )
        .await;
    let answer = eventually(Duration::from_secs(10), "traffic to v1", || async {
        through(web_port).await.filter(|b| b == "v1")
    })
    .await;
    assert_eq!(answer, "v1");
    browser.screenshot("stack-overview-up").await;

    // It stops answering: DOWN on screen.
    let stopped = Instant::now();
    drop(v1);
    browser
        .wait_text(
            &status_of("webapp-backend", v1_port),
            "the web member, down again",
            |t| t == Some("DOWN"),
        )
        .await;
    eprintln!("origin gone -> DOWN on screen: {:?}", stopped.elapsed());

    // A new version registers; choosing it in the drop-down moves the traffic.
    let _v1_again = Origin::start_on("v1", v1_port).await;
    let v2 = Origin::start("v2").await;
    let v2_port = v2.port();
    up.register("webapp-backend", "2.0.0", v2_port).await;
    let select = "[data-backend='webapp-backend'] select.version";
    browser
        .wait_text(select, "version 2.0.0 offered", |t| {
            t.is_some_and(|t| t.contains("2.0.0"))
        })
        .await;
    browser
        .client
        .find(Locator::Css(select))
        .await
        .unwrap()
        .select_by_value("2.0.0")
        .await
        .unwrap();
    browser
        .wait_text(
            "[data-backend='webapp-backend'] .switch",
            "the switch",
            |t| t == Some("switched to 2.0.0"),
        )
        .await;
    eventually(Duration::from_secs(20), "traffic to v2", || async {
        through(web_port).await.filter(|b| b == "v2")
    })
    .await;
    browser
        .wait_text(
            &status_of("webapp-backend", v2_port),
            "the v2 member, up",
            |t| t == Some("UP"),
        )
        .await;

    // Each of these left an activity entry.
    browser.goto(&format!("{}/activity", up.aqueduct)).await;
    for verb in ["member-up", "member-down", "version-switched", "online"] {
        browser
            .wait_text(&format!(".entry[data-verb='{verb}']"), verb, |t| {
                t.is_some()
            })
            .await;
    }
    browser.full_screenshot("stack-activity", 1366).await;

    // The aqueduct restarts: the page reconnects by itself and is live again.
    browser.goto(&format!("{}/overview", up.aqueduct)).await;
    browser
        .wait_text("#connection", "live", |t| t == Some("live"))
        .await;
    up.restart().await;
    browser
        .wait_text("#connection", "live after the restart", |t| {
            t == Some("live")
        })
        .await;
    up.register("webapp-backend", "2.0.0", v2_port).await;
    browser
        .wait_text(
            &status_of("webapp-backend", v2_port),
            "v2 up after the restart",
            |t| t == Some("UP"),
        )
        .await;
    let version = browser
        .js(
            "return document.querySelector(arguments[0]).value;",
            vec![json!(select)],
        )
        .await;
    assert_eq!(version, "2.0.0");
    browser.screenshot("stack-overview-after-restart").await;
    browser.close().await;
}

/// A member HAProxy refuses (`static-rr` takes no runtime servers) shows on the Overview as
/// REFUSED with HAProxy's reason, and leaves a `member-refused` activity entry.
#[tokio::test]
async fn a_refused_member_shows_why_on_screen() {
    if !require_haproxy() || !require_chromium() {
        return;
    }
    let up = Up::start().await;
    let web_port = free_port();
    up.put(
        "/frontends/web",
        json!({"bind": format!("127.0.0.1:{web_port}"), "backend": "app", "mode": "http"}),
    )
    .await;
    up.put(
        "/backends/app",
        json!({"type": "dynamic", "name": "app", "version": "1", "balance": "static-rr",
               "mode": "http", "health": {"interval": "100"}}),
    )
    .await;
    let member = free_port();
    up.register("app", "1", member).await;

    let browser = Browser::start().await;
    browser.goto(&format!("{}/", up.aqueduct)).await;
    browser
        .wait_text(&status_of("app", member), "the member, refused", |t| {
            t == Some("REFUSED")
        })
        .await;
    browser
        .wait_text(
            &format!("[data-backend='app'] [data-member='127.0.0.1:{member}'] .refused"),
            "HAProxy's reason",
            |t| t.is_some_and(|t| t.starts_with("HAProxy refused it: ") && t.len() > 25),
        )
        .await;
    browser.screenshot("stack-overview-refused").await;
    browser.goto(&format!("{}/activity", up.aqueduct)).await;
    browser
        .wait_text(".entry[data-verb='member-refused']", "the activity", |t| {
            t.is_some()
        })
        .await;
    browser.close().await;
}
