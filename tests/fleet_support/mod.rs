//! A fleet of aqueducts for tests: one real `redis-server`, one registry, and aqueduct
//! binaries (`--store`) each with its own real HAProxy on its own loopback address
//! (`--bind-address 127.0.0.N`), so one shared configuration binds the same ports on every node.
#![allow(dead_code)] // each test file uses a part

use crate::redis_support::RedisCluster;
use crate::support::{
    KillHaproxiesOnDrop, Origin, Proc, client, eventually, free_port, spawn_thalassa,
    start_registry, wait_http,
};
use serde_json::{Value, json};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

/// One aqueduct of the fleet.
pub struct Node {
    pub id: String,
    pub api: String,
    pub address: Ipv4Addr,
    pub proc: Proc,
    /// Dropped after `proc`: an aqueduct that did not stop in time (SIGKILLed) leaves its
    /// HAProxy serving by design; the test's HAProxy must not outlive it.
    _haproxies: KillHaproxiesOnDrop,
}

pub async fn start_node(
    dir: &Path,
    id: &str,
    address: Ipv4Addr,
    store: &str,
    registry: &str,
) -> Node {
    let api_port = free_port();
    let data = dir.join(id);
    let mut proc = spawn_thalassa(
        dir,
        id,
        &[
            "aqueduct",
            "--listen",
            &format!("127.0.0.1:{api_port}"),
            "--registry",
            registry,
            "--data-dir",
            data.to_str().unwrap(),
            "--store",
            store,
            "--node-id",
            id,
            "--bind-address",
            &address.to_string(),
        ],
    );
    let api = format!("http://127.0.0.1:{api_port}");
    wait_http(&format!("{api}/fleet"), &mut proc).await;
    Node {
        id: id.to_owned(),
        api,
        address,
        proc,
        _haproxies: KillHaproxiesOnDrop(data.join("haproxy")),
    }
}

pub async fn request(method: reqwest::Method, url: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = client().request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub async fn put(node: &Node, path: &str, body: Value) -> (u16, Value) {
    request(
        reqwest::Method::PUT,
        &format!("{}{path}", node.api),
        Some(body),
    )
    .await
}

/// One GET through `address:port` on a fresh connection: the body of a `200`, or `None`.
pub async fn body_at(address: Ipv4Addr, port: u16) -> Option<String> {
    match crate::support::get_once_at(address, port, "/").await {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

pub async fn wait_serving(node: &Node, port: u16, body: &str) {
    let what = format!("{} ({}:{port}) to serve {body:?}", node.id, node.address);
    eventually(Duration::from_secs(15), &what, || async {
        (body_at(node.address, port).await.as_deref() == Some(body)).then_some(())
    })
    .await;
}

pub async fn wait_not_serving(node: &Node, port: u16) {
    let what = format!("{} ({}:{port}) to stop serving", node.id, node.address);
    eventually(Duration::from_secs(15), &what, || async {
        body_at(node.address, port).await.is_none().then_some(())
    })
    .await;
}

pub async fn fleet_view(node: &Node) -> Value {
    let (status, view) = request(reqwest::Method::GET, &format!("{}/fleet", node.api), None).await;
    assert_eq!(status, 200, "{view}");
    view
}

pub fn static_backend(origin: &Origin) -> Value {
    json!({"type": "static", "mode": "http",
           "members": [{"host": "127.0.0.1", "port": origin.port()}]})
}

pub fn frontend(port: u16, backend: &str) -> Value {
    json!({"bind": format!("*:{port}"), "backend": backend, "mode": "http"})
}

pub fn address(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

pub struct Fleet {
    pub redis: RedisCluster,
    pub registry: Proc,
    pub registry_url: String,
    pub nodes: Vec<Node>,
    pub dir: tempfile::TempDir,
}

pub async fn start_fleet(count: u8) -> Fleet {
    let redis = RedisCluster::single().await;
    let dir = tempfile::tempdir().unwrap();
    let registry_port = free_port();
    let registry = start_registry(dir.path(), registry_port).await;
    let registry_url = format!("http://127.0.0.1:{registry_port}");
    let mut nodes = Vec::new();
    for n in 0..count {
        let id = format!("aq-{}", n + 1);
        let node = start_node(
            dir.path(),
            &id,
            address(2 + n),
            &redis.primary.url(),
            &registry_url,
        )
        .await;
        nodes.push(node);
    }
    Fleet {
        redis,
        registry,
        registry_url,
        nodes,
        dir,
    }
}

/// `thalassa_haproxy_reloads_total{outcome="ok"}` of a node.
pub async fn reloads(node: &Node) -> u64 {
    let text = client()
        .get(format!("{}/metrics", node.api))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|line| line.starts_with("thalassa_haproxy_reloads_total{outcome=\"ok\"}"))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
