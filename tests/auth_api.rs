//! Bearer tokens on the real binary: `thalassa up` guarding both APIs with one admin and one
//! read token, `thalassa register --token`, and an aqueduct following a guarded registry with
//! `--registry-token`. Refusals are 401/403 JSON with `WWW-Authenticate` and change nothing.

#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches start the real programs they measure"
)]
#![allow(clippy::unwrap_used)] // Test code: a panic here is a test failure.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::{Stack, client, eventually, free_port, require_haproxy, spawn_thalassa, wait_http};

const ADMIN: &str = "admin-secret-1";
const READ: &str = "read-secret-2";

async fn request(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Option<String>, String) {
    let mut request = client().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, challenge, response.text().await.unwrap())
}

fn assert_refused(answer: (u16, Option<String>, String), status: u16, what: &str) {
    let (got, challenge, body) = answer;
    assert_eq!(got, status, "{what}: {body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert!(body["error"].is_string(), "{what}: {body}");
    assert_eq!(body["field"], "authorization", "{what}");
    assert!(
        challenge.unwrap_or_default().starts_with("Bearer"),
        "{what}: no Bearer challenge"
    );
}

#[tokio::test]
async fn up_guards_both_apis_with_the_same_tokens() {
    if !require_haproxy() {
        return;
    }
    let stack = Stack::start_with(&["--admin-token", ADMIN, "--read-token", READ]).await;
    let (aq, reg) = (stack.aqueduct.clone(), stack.registry.clone());
    use reqwest::Method;

    // Reads need a token; the UI shell and the registry's health answer do not.
    assert_refused(
        request(Method::GET, &format!("{aq}/frontends"), None, None).await,
        401,
        "GET /frontends",
    );
    assert_refused(
        request(Method::GET, &format!("{aq}/frontends"), Some("wrong"), None).await,
        401,
        "wrong token",
    );
    assert_refused(
        request(Method::GET, &format!("{aq}/events"), None, None).await,
        401,
        "GET /events",
    );
    assert_refused(
        request(Method::GET, &format!("{aq}/metrics"), None, None).await,
        401,
        "GET /metrics",
    );
    assert_refused(
        request(Method::GET, &format!("{reg}/registrations"), None, None).await,
        401,
        "GET /registrations",
    );
    assert_eq!(
        request(Method::GET, &format!("{aq}/frontends"), Some(READ), None)
            .await
            .0,
        200
    );
    assert_eq!(
        request(Method::GET, &format!("{aq}/frontends"), Some(ADMIN), None)
            .await
            .0,
        200
    );
    assert_eq!(
        request(Method::GET, &format!("{aq}/overview"), None, None)
            .await
            .0,
        200
    );
    assert_eq!(
        request(Method::GET, &format!("{aq}/ui/app.js"), None, None)
            .await
            .0,
        200
    );
    assert_eq!(
        request(Method::GET, &format!("{reg}/status"), None, None)
            .await
            .0,
        200
    );

    // Writes need the admin token; refused ones change nothing.
    let config_before = request(
        Method::GET,
        &format!("{aq}/haproxy/config"),
        Some(READ),
        None,
    )
    .await
    .2;
    let backend = json!({"type": "dynamic", "name": "web", "version": "1"});
    assert_refused(
        request(
            Method::PUT,
            &format!("{aq}/backends/web"),
            None,
            Some(backend.clone()),
        )
        .await,
        401,
        "PUT without token",
    );
    assert_refused(
        request(
            Method::PUT,
            &format!("{aq}/backends/web"),
            Some(READ),
            Some(backend.clone()),
        )
        .await,
        403,
        "PUT with the read token",
    );
    assert_refused(
        request(
            Method::POST,
            &format!("{reg}/registrations/web/1/127.0.0.1/8080"),
            None,
            None,
        )
        .await,
        401,
        "POST registration",
    );
    let config_after = request(
        Method::GET,
        &format!("{aq}/haproxy/config"),
        Some(READ),
        None,
    )
    .await
    .2;
    assert_eq!(config_before, config_after);
    assert_eq!(
        request(Method::GET, &format!("{aq}/backends"), Some(READ), None)
            .await
            .2,
        "[]"
    );
    let (status, _, body) = request(
        Method::PUT,
        &format!("{aq}/backends/web"),
        Some(ADMIN),
        Some(backend),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // `thalassa register --token` keeps a registration alive; the aqueduct sees it, and its
    // registry page (which calls the registry over HTTP) works with the token too.
    let mut register = spawn_thalassa(
        stack.dir.path(),
        "register",
        &[
            "register",
            "web@1:18080",
            "--registry",
            &reg,
            "--host",
            "127.0.0.1",
            "--every",
            "1s",
            "--token",
            ADMIN,
        ],
    );
    eventually(
        Duration::from_secs(15),
        "the registration to reach the aqueduct",
        || async {
            let members: Value = serde_json::from_str(
                &request(
                    Method::GET,
                    &format!("{aq}/backends/web/members"),
                    Some(READ),
                    None,
                )
                .await
                .2,
            )
            .ok()?;
            (members.as_array()?.len() == 1).then_some(())
        },
    )
    .await;
    let (status, _, body) = request(
        Method::GET,
        &format!("{aq}/ui/api/registry"),
        Some(READ),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("/web/1/127.0.0.1/18080"), "{body}");
    register.terminate();
    // A refusal is logged with the status and its reason; "401" alone also matches a log
    // line's timestamp (11:11:23.371401Z failed CI once).
    assert!(
        !register.log_text().contains("401 Unauthorized"),
        "{}",
        register.log_text()
    );
}

#[tokio::test]
async fn register_without_the_token_is_refused_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let data = dir.path().join("registry");
    let mut registry = spawn_thalassa(
        dir.path(),
        "registry",
        &[
            "registry",
            "--listen",
            &listen,
            "--data-dir",
            data.to_str().unwrap(),
            "--admin-token",
            ADMIN,
        ],
    );
    let url = format!("http://{listen}");
    wait_http(&format!("{url}/status"), &mut registry).await;
    let mut register = spawn_thalassa(
        dir.path(),
        "register",
        &[
            "register",
            "web@1:18080",
            "--registry",
            &url,
            "--host",
            "127.0.0.1",
            "--every",
            "200ms",
        ],
    );
    eventually(
        Duration::from_secs(10),
        "the refusal in the register log",
        || async {
            register
                .log_text()
                .contains("401 Unauthorized")
                .then_some(())
        },
    )
    .await;
    register.terminate();
    let list = request(
        reqwest::Method::GET,
        &format!("{url}/registrations/web"),
        None,
        None,
    )
    .await;
    assert_eq!((list.0, list.2.as_str()), (200, "[]"));
    // `register` falls back to the registry's own THALASSA_ADMIN_TOKEN.
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_thalassa"))
        .args([
            "register",
            "web@1:18080",
            "--registry",
            &url,
            "--host",
            "127.0.0.1",
            "--every",
            "200ms",
        ])
        .env("THALASSA_ADMIN_TOKEN", ADMIN)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut with_env = support::Proc {
        child,
        log: dir.path().join("none.log"),
    };
    eventually(
        Duration::from_secs(10),
        "the registration made with THALASSA_ADMIN_TOKEN",
        || async {
            let list = request(
                reqwest::Method::GET,
                &format!("{url}/registrations/web"),
                None,
                None,
            )
            .await;
            (list.2 != "[]").then_some(())
        },
    )
    .await;
    with_env.terminate();
    registry.terminate();
}

#[tokio::test]
async fn an_aqueduct_follows_a_guarded_registry_with_its_token() {
    if !require_haproxy() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, format!("  {ADMIN}\n")).unwrap();
    let registry_listen = format!("127.0.0.1:{}", free_port());
    let registry_data = dir.path().join("registry");
    let mut registry = spawn_thalassa(
        dir.path(),
        "registry",
        &[
            "registry",
            "--listen",
            &registry_listen,
            "--data-dir",
            registry_data.to_str().unwrap(),
            "--admin-token-file",
            token_file.to_str().unwrap(),
            "--read-token",
            READ,
        ],
    );
    let reg = format!("http://{registry_listen}");
    wait_http(&format!("{reg}/status"), &mut registry).await;

    let aqueduct_listen = format!("127.0.0.1:{}", free_port());
    let aqueduct_data = dir.path().join("aqueduct");
    let mut aqueduct = spawn_thalassa(
        dir.path(),
        "aqueduct",
        &[
            "aqueduct",
            "--listen",
            &aqueduct_listen,
            "--data-dir",
            aqueduct_data.to_str().unwrap(),
            "--registry",
            &reg,
            "--registry-token",
            ADMIN,
        ],
    );
    let aq = format!("http://{aqueduct_listen}");
    wait_http(&format!("{aq}/frontends"), &mut aqueduct).await;
    use reqwest::Method;
    let backend = json!({"type": "dynamic", "name": "web", "version": "1"});
    assert_eq!(
        request(
            Method::PUT,
            &format!("{aq}/backends/web"),
            None,
            Some(backend)
        )
        .await
        .0,
        200
    );
    let (status, _, body) = request(
        Method::POST,
        &format!("{reg}/registrations/web/1/127.0.0.1/18081"),
        Some(ADMIN),
        Some(json!({"secondsToExpire": 600})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    eventually(
        Duration::from_secs(15),
        "the member to follow the guarded registry",
        || async {
            let members: Value = serde_json::from_str(
                &request(
                    Method::GET,
                    &format!("{aq}/backends/web/members"),
                    None,
                    None,
                )
                .await
                .2,
            )
            .ok()?;
            (members.as_array()?.len() == 1).then_some(())
        },
    )
    .await;
    // The aqueduct announced itself with the admin token.
    eventually(
        Duration::from_secs(15),
        "the aqueduct's own registration",
        || async {
            let list = request(
                Method::GET,
                &format!("{reg}/registrations/thalassa-aqueduct"),
                Some(READ),
                None,
            )
            .await;
            (list.0 == 200 && list.2.contains(&aqueduct_listen.replace("127.0.0.1:", "")))
                .then_some(())
        },
    )
    .await;
    aqueduct.terminate();
    registry.terminate();
}
