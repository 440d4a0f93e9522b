//! The user's walkthrough (shared/reference/stack-walkthrough.txt) against `thalassa up` with a
//! real HAProxy: the same bodies, frontends first, loopback addresses and free high ports
//! instead of 10.x and 80/3306. Traffic must really flow through the frontends.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a test failure

mod support;

use std::time::Duration;
use support::{Origin, Stack, eventually, free_port, get_once, require_haproxy, wait_for_body};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough_serves_traffic_and_shows_the_dead_member_down() {
    if !require_haproxy() {
        return;
    }
    let stack = Stack::start().await;
    let (mysql_port, web_port) = (free_port(), free_port());

    // Frontends first, exactly the walkthrough's bodies but for the bind address.
    let (status, body) = stack
        .put(
            "/frontends/mysql-frontend",
            &format!(r#"{{ "bind": "127.0.0.1:{mysql_port}", "backend": "mysql-backend", "mode": "tcp"}}"#),
        )
        .await;
    assert_eq!((status, body.as_str()), (200, "200"));
    let (status, _) = stack
        .put(
            "/frontends/webapp-frontend",
            &format!(r#"{{ "bind": "127.0.0.1:{web_port}", "backend": "webapp-backend", "mode": "http"}}"#),
        )
        .await;
    assert_eq!(status, 200);
    // The web frontend already binds and answers 503 while its backend does not exist.
    let frontend = stack.get_json("/frontends/webapp-frontend").await;
    assert_eq!(frontend["waitingForBackend"], true);
    assert_eq!(get_once(web_port, "/").await.map(|r| r.0), Ok(503));

    let (status, _) = stack
        .put(
            "/backends/mysql-backend",
            r#"{ "type":"dynamic", "name":"mysql-backend", "version":"1.0.0","balance":"source", "mode":"tcp","natives":["option mysql-check"]}"#,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = stack
        .put(
            "/backends/webapp-backend",
            r#"{ "type":"dynamic", "name":"webapp-backend", "version":"1.0.0","balance":"source", "mode":"http","health":{"interval":"5000"}}"#,
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        stack
            .get_json("/frontends/webapp-frontend")
            .await
            .get("waitingForBackend")
            .is_none()
    );
    let backend = stack.get_json("/backends/webapp-backend").await;
    assert_eq!(
        backend["health"],
        serde_json::json!({"method":"GET","uri":"/","httpVersion":"HTTP/1.0","interval":5000})
    );

    // The "MySQL" registration points at a loopback port where nothing listens.
    let dead_port = free_port();
    let dead = format!("mysql-backend/1.0.0/127.0.0.1/{dead_port}");
    let (status, body) = stack
        .register(&dead, r#"{ "secondsToExpire":"10000"}"#)
        .await;
    assert_eq!((status, body.as_str()), (200, "200"));

    let web = Origin::start("web-1").await;
    let web_member = format!("webapp-backend/1.0.0/127.0.0.1/{}", web.port());
    let (status, _) = stack
        .register(&web_member, r#"{ "secondsToExpire":"10000"}"#)
        .await;
    assert_eq!(status, 200);

    // Members reach the aqueduct through the registry's feed (another process: awaited, the
    // "at once" is measured by `cargo bench --bench membership`), DOWN until a check passes.
    let dead_id = format!("/{dead}");
    let members = eventually(
        Duration::from_secs(10),
        "the MySQL member in the aqueduct",
        || async {
            let members = stack.get_json("/backends/mysql-backend/members").await;
            (members[0]["id"] == dead_id.as_str()).then_some(members)
        },
    )
    .await;
    assert_eq!(members[0]["status"], "DOWN", "{members}");
    let server_line = format!(
        "server mysql-backend_127.0.0.1:{dead_port} 127.0.0.1:{dead_port} check inter 2000"
    );
    let config = eventually(
        Duration::from_secs(10),
        "the MySQL member in the rendered config",
        || async {
            let config = stack.get_text("/haproxy/config").await;
            config.contains(&server_line).then_some(config)
        },
    )
    .await;
    assert!(config.contains("option mysql-check"), "{config}");
    assert!(config.contains("option httpchk GET / HTTP/1.0"), "{config}");

    // The web member turns UP after its first passing check and serves traffic.
    let web_hp = format!("127.0.0.1:{}", web.port());
    eventually(
        Duration::from_secs(15),
        "the web member to be UP",
        || async {
            (stack
                .member_status("webapp-backend", &web_hp)
                .await
                .as_deref()
                == Some("UP"))
            .then_some(())
        },
    )
    .await;
    for _ in 0..20 {
        assert_eq!(get_once(web_port, "/").await, Ok((200, "web-1".to_owned())));
    }
    // The dead member stays DOWN.
    assert_eq!(
        stack
            .member_status("mysql-backend", &format!("127.0.0.1:{dead_port}"))
            .await
            .as_deref(),
        Some("DOWN")
    );
    // The UI answers on the same port.
    let page = stack.get_text("/overview").await;
    assert!(
        page.contains("<html") || page.contains("<!doctype") || page.contains("<!DOCTYPE"),
        "{page}"
    );
    // The aqueduct announces itself in the registry, as the original did (its heartbeat task
    // POSTs to the registry after the API listens: awaited).
    let aqueduct_port: u64 = stack.aqueduct.rsplit(':').next().unwrap().parse().unwrap();
    let url = format!("{}/registrations/thalassa-aqueduct", stack.registry);
    let aqueducts = eventually(
        Duration::from_secs(10),
        "the aqueduct's own registration",
        || async {
            let aqueducts: serde_json::Value = support::client()
                .get(&url)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (aqueducts[0]["port"] == aqueduct_port).then_some(aqueducts)
        },
    )
    .await;
    assert_eq!(aqueducts[0]["port"], aqueduct_port, "{aqueducts}");
    // Its meta as the original's: the machine's name first (not the IP), then the rest.
    let meta = aqueducts[0]["meta"].as_object().unwrap();
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(meta["hostname"], machine.trim(), "{aqueducts}");
    assert_eq!(
        meta.keys().collect::<Vec<_>>(),
        ["hostname", "secondsToExpire", "pid", "registered"],
        "{aqueducts}"
    );
    // Reloads: one per structural change (plus startup), none for membership.
    let reloads = stack.metric_total("thalassa_haproxy_reloads_total").await;
    assert!(reloads <= 5, "{reloads} reloads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_survives_a_restart_and_members_come_back_from_the_registry() {
    if !require_haproxy() {
        return;
    }
    let mut stack = Stack::start().await;
    let web_port = free_port();
    let origin = Origin::start("persisted").await;
    stack
        .put(
            "/frontends/web",
            &format!(r#"{{"bind":"127.0.0.1:{web_port}","backend":"app","mode":"http"}}"#),
        )
        .await;
    stack
        .put(
            "/backends/app",
            r#"{"type":"dynamic","name":"app","version":"1","health":{"interval":100}}"#,
        )
        .await;
    stack.register_origin("app", "1", &origin).await;
    wait_for_body(web_port, "persisted").await;

    stack.restart().await;
    assert_eq!(
        stack.get_json("/frontends/web").await["bind"],
        format!("127.0.0.1:{web_port}")
    );
    wait_for_body(web_port, "persisted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_native_keeps_the_old_config_serving() {
    if !require_haproxy() {
        return;
    }
    let stack = Stack::start().await;
    let web_port = free_port();
    let origin = Origin::start("steady").await;
    stack
        .put(
            "/frontends/web",
            &format!(r#"{{"bind":"127.0.0.1:{web_port}","backend":"app","mode":"http"}}"#),
        )
        .await;
    stack
        .put(
            "/backends/app",
            &format!(
                r#"{{"type":"static","members":[{{"host":"127.0.0.1","port":{}}}],"health":{{"interval":100}}}}"#,
                origin.port()
            ),
        )
        .await;
    wait_for_body(web_port, "steady").await;
    // The served text renders the member `disabled` until the manager's word that it serves,
    // which follows its first served request by up to a round: the text is read once it says
    // so, not while it may still flip.
    let server_line = format!(
        "server app_127.0.0.1:{0} 127.0.0.1:{0} check",
        origin.port()
    );
    let stack_ref = &stack;
    let server_line = &server_line;
    let before = eventually(
        Duration::from_secs(15),
        "the config to show the member enabled",
        || async move {
            let text = stack_ref.get_text("/haproxy/config").await;
            text.lines()
                .any(|l| {
                    l.trim_start().starts_with(server_line.as_str()) && !l.ends_with(" disabled")
                })
                .then_some(text)
        },
    )
    .await;
    let (status, body) = stack
        .put(
            "/backends/app",
            r#"{"type":"static","members":[],"natives":["this-is-not-a-keyword 1"]}"#,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("this-is-not-a-keyword"), "{body}");
    assert_eq!(stack.get_text("/haproxy/config").await, before);
    assert_eq!(
        get_once(web_port, "/").await,
        Ok((200, "steady".to_owned()))
    );
}
