//! Several aqueducts, each with its own HAProxy, follow one registry over HTTP; a registry
//! outage removes no member, and after the registry comes back they resume.
#![allow(clippy::unwrap_used)] // test helpers: a panic is a test failure

mod support;

use std::time::Duration;
use support::{
    Origin, Proc, client, configure_web_app, eventually, free_port, get_once, require_haproxy,
    spawn_thalassa, wait_for_body, wait_http,
};

struct Aqueduct {
    api: String,
    proxy_port: u16,
    _proc: Proc,
}

async fn start_registry(dir: &std::path::Path, port: u16) -> Proc {
    let data = dir.join("registry");
    let mut proc = spawn_thalassa(
        dir,
        &format!("registry-{port}"),
        &[
            "registry",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    wait_http(&format!("http://127.0.0.1:{port}/status"), &mut proc).await;
    proc
}

async fn start_aqueduct(dir: &std::path::Path, name: &str, registry: &str) -> Aqueduct {
    let (api_port, proxy_port) = (free_port(), free_port());
    let data = dir.join(name);
    let mut proc = spawn_thalassa(
        dir,
        name,
        &[
            "aqueduct",
            "--listen",
            &format!("127.0.0.1:{api_port}"),
            "--registry",
            registry,
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    let api = format!("http://127.0.0.1:{api_port}");
    wait_http(&format!("{api}/frontends"), &mut proc).await;
    configure_web_app(&api, proxy_port).await;
    Aqueduct {
        api,
        proxy_port,
        _proc: proc,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_aqueducts_follow_one_registry_through_an_outage() {
    if !require_haproxy() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let registry_port = free_port();
    let registry = format!("http://127.0.0.1:{registry_port}");
    let mut registry_proc = start_registry(dir.path(), registry_port).await;
    let first = start_aqueduct(dir.path(), "aqueduct-1", &registry).await;
    let second = start_aqueduct(dir.path(), "aqueduct-2", &registry).await;

    let origin = Origin::start("shared").await;
    let member = format!("{registry}/registrations/app/1/127.0.0.1/{}", origin.port());
    let response = client()
        .post(&member)
        .body(r#"{"secondsToExpire":600}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for aqueduct in [&first, &second] {
        wait_for_body(aqueduct.proxy_port, "shared").await;
    }

    // The registry goes away: members stay and keep serving.
    registry_proc.terminate();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for aqueduct in [&first, &second] {
        assert_eq!(
            get_once(aqueduct.proxy_port, "/").await,
            Ok((200, "shared".to_owned()))
        );
        let members: serde_json::Value = client()
            .get(format!("{}/backends/app/members", aqueduct.api))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(members.as_array().map(Vec::len), Some(1), "{members}");
    }

    // It comes back (same data dir): the aqueducts resume and follow new changes.
    let _registry_proc = start_registry(dir.path(), registry_port).await;
    let response = client().delete(&member).send().await.unwrap();
    assert_eq!(response.status(), 200);
    for aqueduct in [&first, &second] {
        let url = format!("{}/backends/app/members", aqueduct.api);
        eventually(Duration::from_secs(15), "the member to leave", || async {
            let members: serde_json::Value =
                client().get(&url).send().await.ok()?.json().await.ok()?;
            (members == serde_json::json!([])).then_some(())
        })
        .await;
        eventually(
            Duration::from_secs(10),
            "the proxy to answer 503",
            || async { (get_once(aqueduct.proxy_port, "/").await.ok()?.0 == 503).then_some(()) },
        )
        .await;
    }
}
