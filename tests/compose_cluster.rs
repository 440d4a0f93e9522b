//! End-to-end test of the cluster compose file with podman: the image is built from this
//! test's own `thalassa` binary, `compose.cluster.yaml` (Redis primary and replica, three
//! Sentinels, two registry nodes on them, one aqueduct following both, HAProxy; plus the two
//! small web servers of `tests/compose/e2e.yaml`) comes up with podman-compose through
//! `tests/compose/stack.sh`, and the test checks what the cluster is for:
//!
//! - both registry nodes are healthy on the shared store, and a registration POSTed on one
//!   is listed by the other;
//! - a frontend and a dynamic backend created on the aqueduct serve a registered web server
//!   through HAProxy's published port;
//! - registry-a killed: HAProxy serves throughout, the aqueduct follows registry-b and picks
//!   up a registration made there;
//! - the Redis primary killed: the Sentinels promote the replica, writes succeed again, the
//!   registrations made before are still there, HAProxy serves throughout; the old primary,
//!   started again, rejoins as a replica, and registry-a, started again, serves the lot.
//!
//! Its own project (`thalassa-cluster-e2e-<pid>`), image tag and free host ports: the default
//! `thalassa` project and a running `thalassa-cluster` are never touched. Servers are the
//! test's own containers; no other address is ever targeted.
//!
//! Needs podman, runc, debootstrap and podman-compose (`.ci/run` installs them); under `CI` a
//! missing one fails the test. Prints its timings.

#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches start the real programs they measure"
)]
#![allow(clippy::unwrap_used)] // a panic here is a test failure

mod support;

use serde_json::Value;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::eventually;

/// The README walkthrough's bodies for the web application (README "Compose").
const WEBAPP_FRONTEND: &str = r#"{ "bind": "*:80", "backend": "webapp-backend", "mode": "http"}"#;
const WEBAPP_BACKEND: &str = r#"{ "type":"dynamic", "name":"webapp-backend", "version":"1.0.0","balance":"source", "mode":"http","health":{"interval":"5000"}}"#;
const REGISTRATION: &str = r#"{ "secondsToExpire":"10000"}"#;

const STACK_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/compose/stack.sh");
const CONTAINERS_CONF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/compose/containers.conf");

/// The Sentinels' name for the store's primary (compose.cluster.yaml, the registries' --store).
const MASTER_NAME: &str = "thalassa";

/// The host side of the cluster's published ports (free ports, not the file's defaults).
struct Ports {
    registry_a: u16,
    registry_b: u16,
    aqueduct: u16,
    aqueduct_b: u16,
    http: u16,
    http_b: u16,
    mysql: u16,
    mysql_b: u16,
}

/// One compose project, torn down (containers, network, volumes) when dropped, also when the
/// test fails; its containers' logs are printed first in that case.
struct Cluster {
    project: String,
    ports: Ports,
}

impl Cluster {
    fn new() -> Cluster {
        Cluster {
            project: format!("thalassa-cluster-e2e-{}", std::process::id()),
            ports: Ports {
                registry_a: support::free_port(),
                registry_b: support::free_port(),
                aqueduct: support::free_port(),
                aqueduct_b: support::free_port(),
                http: support::free_port(),
                http_b: support::free_port(),
                mysql: support::free_port(),
                mysql_b: support::free_port(),
            },
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(STACK_SCRIPT);
        command
            .args(args)
            .env("CONTAINERS_CONF", containers_conf())
            .env("COMPOSE_PROJECT_NAME", &self.project)
            .env(
                "COMPOSE_FILE",
                "compose.cluster.yaml:tests/compose/e2e.yaml",
            )
            .env("THALASSA_IMAGE", "localhost/thalassa:cluster-e2e")
            .env("THALASSA_BINARY", env!("CARGO_BIN_EXE_thalassa"))
            // On the podman 4.3 machines, name lookups inside the containers sometimes go
            // unanswered for up to a minute after `up`: the registry nodes exit (10 s without
            // reaching a Sentinel) and are restarted until they get through.
            .env("THALASSA_UP_TIMEOUT", "240")
            .env("THALASSA_UP_MAX_RESTARTS", "12")
            .env(
                "THALASSA_CLUSTER_REGISTRY_A_PORT",
                port(self.ports.registry_a),
            )
            .env(
                "THALASSA_CLUSTER_REGISTRY_B_PORT",
                port(self.ports.registry_b),
            )
            .env("THALASSA_CLUSTER_AQUEDUCT_PORT", port(self.ports.aqueduct))
            .env(
                "THALASSA_CLUSTER_AQUEDUCT_B_PORT",
                port(self.ports.aqueduct_b),
            )
            .env("THALASSA_CLUSTER_HTTP_PORT", port(self.ports.http))
            .env("THALASSA_CLUSTER_HTTP_B_PORT", port(self.ports.http_b))
            .env("THALASSA_CLUSTER_MYSQL_PORT", port(self.ports.mysql))
            .env("THALASSA_CLUSTER_MYSQL_B_PORT", port(self.ports.mysql_b));
        command
    }

    /// Runs the stack script: its stdout, or what it said when it failed.
    fn try_run(&self, args: &[&str]) -> Result<String, String> {
        let output = self.command(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            eprint!("{stderr}");
            Ok(stdout)
        } else {
            Err(format!(
                "stack.sh {args:?} failed ({}):\n{stdout}{stderr}",
                output.status
            ))
        }
    }

    /// Runs the stack script; panics with its output when it fails.
    fn run(&self, args: &[&str]) -> String {
        self.try_run(args).unwrap_or_else(|err| panic!("{err}"))
    }

    /// Runs the script and reports how long it took.
    fn timed(&self, what: &str, args: &[&str]) {
        let started = Instant::now();
        self.run(args);
        println!("timing: {what}: {:.1} s", started.elapsed().as_secs_f64());
    }

    fn ip(&self, service: &str) -> String {
        let ip = self.run(&["ip", service]).trim().to_owned();
        assert!(
            ip.parse::<std::net::Ipv4Addr>().is_ok(),
            "no IPv4 for {service}: {ip:?}"
        );
        ip
    }

    /// `redis-cli ARGS` in a service's container (Redis or a Sentinel), its reply lines; `None`
    /// when the container or the server does not answer.
    fn redis_cli(&self, service: &str, port: u16, args: &[&str]) -> Option<Vec<String>> {
        let port = port.to_string();
        let mut command = vec!["exec", service, "redis-cli", "-p", &port];
        command.extend_from_slice(args);
        let reply = self.try_run(&command).ok()?;
        Some(reply.lines().map(str::to_owned).collect())
    }

    /// The primary's host name, as the given Sentinel names it.
    fn primary_by(&self, sentinel: &str) -> Option<String> {
        let reply = self.redis_cli(
            sentinel,
            26379,
            &["sentinel", "get-master-addr-by-name", MASTER_NAME],
        )?;
        reply.first().cloned().filter(|host| !host.is_empty())
    }

    fn registry_a(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.registry_a)
    }

    fn registry_b(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.registry_b)
    }

    fn aqueduct(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.aqueduct)
    }

    fn aqueduct_b(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.aqueduct_b)
    }

    fn webapp(&self) -> String {
        format!("http://127.0.0.1:{}/", self.ports.http)
    }

    /// The webapp frontend through the other aqueduct's HAProxy (`haproxy-b`).
    fn webapp_b(&self) -> String {
        format!("http://127.0.0.1:{}/", self.ports.http_b)
    }

    /// What of the project is still present: containers, volumes, networks.
    fn leftovers(&self) -> Vec<String> {
        let label = format!("label=io.podman.compose.project={}", self.project);
        let mut left = Vec::new();
        for what in [
            &["ps", "--all", "--format", "{{.Names}}", "--filter"][..],
            &["volume", "ls", "--format", "{{.Name}}", "--filter"][..],
            &["network", "ls", "--format", "{{.Name}}", "--filter"][..],
        ] {
            let output = Command::new("podman")
                .env("CONTAINERS_CONF", containers_conf())
                .args(what)
                .arg(&label)
                .output()
                .unwrap();
            left.extend(
                String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .map(str::to_owned),
            );
        }
        left
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Ok(logs) = self.command(&["ps", "logs"]).output()
        {
            eprintln!("{}", String::from_utf8_lossy(&logs.stdout));
        }
        match self.command(&["down"]).output() {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "stack.sh down failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(err) => eprintln!("stack.sh down did not run: {err}"),
        }
    }
}

fn port(port: u16) -> String {
    port.to_string()
}

/// podman's settings: the caller's, else the project's (runc, host-sized ulimits), as
/// `stack.sh` and `.ci/run` choose them.
fn containers_conf() -> String {
    std::env::var("CONTAINERS_CONF").unwrap_or_else(|_| CONTAINERS_CONF.to_owned())
}

/// A client that never goes through a proxy: every request goes to 127.0.0.1. Like curl, it
/// opens a new connection per request, so each request through HAProxy is balanced afresh.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The walkthrough's kind of request (`curl -H "Content-type: application/json" -X METHOD -d
/// BODY URL`): `Ok` on the original's `200` answer, else what came instead.
async fn try_send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: &str,
) -> Result<(), String> {
    let started = Instant::now();
    let outcome = async {
        let response = client
            .request(method, url)
            .header("Content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .map_err(|err| format!("{err:?}"))?;
        let status = response.status();
        let text = response.text().await.map_err(|err| format!("{err:?}"))?;
        // A registry (and a lone aqueduct) answers the original's `200`; an aqueduct of a
        // fleet answers the version and each node's state for it.
        let fleet_answer = serde_json::from_str::<Value>(&text)
            .is_ok_and(|answer| answer["version"].is_u64() && answer["nodes"].is_array());
        if status == reqwest::StatusCode::OK && (text.trim() == "200" || fleet_answer) {
            Ok(())
        } else {
            Err(format!("{status} {}", text.trim()))
        }
    }
    .await;
    outcome.map_err(|err| format!("{err} (after {} ms)", started.elapsed().as_millis()))
}

/// Sends the request until it is answered `200` (a registry node answers 503 while its store
/// fails over); says what the failed attempts got, if any.
async fn send_200(client: &reqwest::Client, method: reqwest::Method, url: &str, body: &str) {
    let started = Instant::now();
    let failed = std::sync::Mutex::new(Vec::new());
    let what = format!("{method} {url} {body} -> 200");
    eventually(Duration::from_secs(60), &what, || async {
        let outcome = try_send(client, method.clone(), url, body).await;
        outcome.map_err(|err| failed.lock().unwrap().push(err)).ok()
    })
    .await;
    let failed = failed.into_inner().unwrap();
    if let (Some(first), Some(last)) = (failed.first(), failed.last()) {
        println!(
            "{method} {url}: 200 after {:.1} s and {} failed attempts (first: {first}; last: {last})",
            started.elapsed().as_secs_f64(),
            failed.len()
        );
    }
}

async fn get_json(client: &reqwest::Client, url: &str) -> Option<Value> {
    let response = client.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

async fn get_text(client: &reqwest::Client, url: &str) -> Option<String> {
    let response = client.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.text().await.ok()
}

/// The ids a registry node lists for `webapp-backend@1.0.0`.
async fn listed(client: &reqwest::Client, url: &str) -> Option<Vec<String>> {
    let registrations = get_json(client, url).await?;
    Some(
        registrations
            .as_array()?
            .iter()
            .filter_map(|registration| registration["id"].as_str().map(str::to_owned))
            .collect(),
    )
}

/// Waits until a registry node lists (or no longer lists) `id` among webapp-backend@1.0.0.
async fn await_listed(client: &reqwest::Client, node: &str, base: &str, id: &str, present: bool) {
    let url = format!("{base}/registrations/webapp-backend/1.0.0");
    let what = if present {
        format!("{node} lists {id}")
    } else {
        format!("{node} no longer lists {id}")
    };
    eventually(Duration::from_secs(20), &what, || async {
        let ids = listed(client, &url).await?;
        (ids.iter().any(|listed| listed == id) == present).then_some(())
    })
    .await;
}

/// A node's `/status`: answered 200 (in touch with the store) and on the Sentinel store.
async fn on_sentinel_store(client: &reqwest::Client, status_url: &str) -> Option<()> {
    let status = get_json(client, status_url).await?;
    (status["store"]["kind"] == "redis+sentinel").then_some(())
}

/// The status of webapp-backend's member `id` on the aqueduct.
async fn member_status(client: &reqwest::Client, cluster: &Cluster, id: &str) -> Option<String> {
    let url = cluster.aqueduct("/backends/webapp-backend/members");
    let members = get_json(client, &url).await?;
    let member = members.as_array()?.iter().find(|m| m["id"] == id)?;
    Some(member["status"].as_str()?.to_ascii_uppercase())
}

async fn await_up(client: &reqwest::Client, cluster: &Cluster, id: &str) {
    eventually(Duration::from_secs(60), &format!("{id} UP"), || async {
        let status = member_status(client, cluster, id).await?;
        status.starts_with("UP").then_some(())
    })
    .await;
}

/// Which web server answered a request through the webapp frontend's published port.
async fn served_by(client: &reqwest::Client, cluster: &Cluster) -> Option<String> {
    let body = get_text(client, &cluster.webapp()).await?;
    body.trim().strip_prefix("served by ").map(str::to_owned)
}

/// The value of one sample (`name{labels}`) in a Prometheus text page.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// The registry node the aqueduct's feed follows with an open stream.
async fn feed_follows(client: &reqwest::Client, cluster: &Cluster) -> Option<String> {
    let metrics = get_text(client, &cluster.aqueduct("/metrics")).await?;
    if sample(&metrics, "thalassa_feed_connected") != Some(1.0) {
        return None;
    }
    ["registry-a", "registry-b"].into_iter().find_map(|node| {
        let series = format!("thalassa_feed_node{{url=\"http://{node}:9000\"}}");
        (sample(&metrics, &series) == Some(1.0)).then(|| node.to_owned())
    })
}

/// Waits until a failover of redis-primary can happen at once: every Sentinel names it the
/// primary, sees the two others (`ckquorum`) and is out of TILT mode (a Sentinel whose event
/// loop stalled, e.g. on a name lookup while containers came up, acts on nothing for 30 s),
/// and redis-replica follows it.
async fn await_failover_ready(cluster: &Cluster) {
    let started = Instant::now();
    for sentinel in ["sentinel-1", "sentinel-2", "sentinel-3"] {
        eventually(
            Duration::from_secs(90),
            &format!("{sentinel}: primary redis-primary, 3 usable Sentinels, not in TILT"),
            || async {
                let primary = cluster.primary_by(sentinel)?;
                let quorum =
                    cluster.redis_cli(sentinel, 26379, &["sentinel", "ckquorum", MASTER_NAME])?;
                let usable = quorum.first()?.starts_with("OK 3 usable Sentinels");
                let info = cluster.redis_cli(sentinel, 26379, &["info", "sentinel"])?;
                let tilt = !info.iter().any(|line| line.trim() == "sentinel_tilt:0");
                (primary == "redis-primary" && usable && !tilt).then_some(())
            },
        )
        .await;
    }
    eventually(
        Duration::from_secs(30),
        "redis-replica in sync with redis-primary",
        || async {
            let info = cluster.redis_cli("redis-replica", 6379, &["info", "replication"])?;
            info.iter()
                .any(|line| line.trim() == "master_link_status:up")
                .then_some(())
        },
    )
    .await;
    println!(
        "timing: Sentinels ready for a failover after {:.1} s of waiting",
        started.elapsed().as_secs_f64()
    );
}

fn registration_path(host: &str) -> String {
    format!("/registrations/webapp-backend/1.0.0/{host}/8080")
}

fn registration_id(host: &str) -> String {
    format!("/webapp-backend/1.0.0/{host}/8080")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_cluster_survives_a_registry_node_and_the_redis_primary() {
    let hint = "run .ci/run, or: apt-get install -y podman runc debootstrap \
                && pip install podman-compose";
    if !["podman", "runc", "debootstrap", "podman-compose"]
        .iter()
        .all(|binary| support::require(binary, hint))
    {
        return;
    }
    let cluster = Cluster::new();
    let client = client();
    let test_started = Instant::now();

    // The cluster, as a machine without an image registry makes it.
    cluster.timed(
        "base image (debootstrap, skipped when present)",
        &["base-image"],
    );
    cluster.timed(
        "image build (thalassa with Redis + test web server)",
        &["build", "build-web"],
    );
    cluster.timed("up -> healthy (11 containers)", &["up"]);

    // Both registry nodes serve on the Sentinel-found primary; the Sentinels see each other
    // and the replica, and the replica follows the primary.
    for (node, url) in [
        ("registry-a", cluster.registry_a("/status")),
        ("registry-b", cluster.registry_b("/status")),
    ] {
        eventually(
            Duration::from_secs(30),
            &format!("{node} healthy on redis+sentinel"),
            || on_sentinel_store(&client, &url),
        )
        .await;
    }
    await_failover_ready(&cluster).await;

    // A frontend and a dynamic backend on the aqueduct (the walkthrough's bodies), and web1
    // registered on registry-a: registry-b lists it, the aqueduct (following registry-a)
    // makes it a member, and HAProxy serves it on the published port.
    let put = reqwest::Method::PUT;
    let post = reqwest::Method::POST;
    let frontend = cluster.aqueduct("/frontends/webapp-frontend");
    send_200(&client, put.clone(), &frontend, WEBAPP_FRONTEND).await;
    let backend = cluster.aqueduct("/backends/webapp-backend");
    send_200(&client, put.clone(), &backend, WEBAPP_BACKEND).await;
    let (web1, web2) = (cluster.ip("web1"), cluster.ip("web2"));
    let (web1_id, web2_id) = (registration_id(&web1), registration_id(&web2));
    let web1_on_a = cluster.registry_a(&registration_path(&web1));
    send_200(&client, post.clone(), &web1_on_a, REGISTRATION).await;
    let base_b = cluster.registry_b("");
    await_listed(&client, "registry-b", &base_b, &web1_id, true).await;
    println!("cluster: web1 registered on registry-a, listed by registry-b");
    await_up(&client, &cluster, &web1_id).await;
    let first = eventually(Duration::from_secs(30), "web1 through :80", || {
        served_by(&client, &cluster)
    })
    .await;
    assert_eq!(first, "web1");
    let followed = eventually(Duration::from_secs(30), "the aqueduct's feed", || {
        feed_follows(&client, &cluster)
    })
    .await;
    assert_eq!(
        followed, "registry-a",
        "the aqueduct follows the first node"
    );
    println!("cluster: web1 serves through HAProxy; the aqueduct follows registry-a");
    // The frontend and backend PUT on `aqueduct` serve through `aqueduct-b`'s HAProxy too:
    // both nodes of the fleet run the same version.
    let through_b = eventually(
        Duration::from_secs(60),
        "web1 through haproxy-b",
        || async {
            let body = get_text(&client, &cluster.webapp_b()).await?;
            body.trim().strip_prefix("served by ").map(str::to_owned)
        },
    )
    .await;
    assert_eq!(through_b, "web1");
    let fleet = eventually(
        Duration::from_secs(30),
        "both aqueducts on one version",
        || async {
            let view = get_json(&client, &cluster.aqueduct_b("/fleet")).await?;
            let nodes = view["nodes"].as_array()?;
            let same = nodes.len() == 2
                && nodes
                    .iter()
                    .all(|n| n["version"] == view["version"] && n["outcome"] == "applied");
            same.then_some(view)
        },
    )
    .await;
    println!(
        "cluster: the fleet runs version {} on both aqueducts",
        fleet["version"]
    );

    // registry-a dies. HAProxy keeps serving; the aqueduct moves to registry-b and takes a
    // registration made there.
    let load = WebLoad::start(cluster.webapp());
    load.wait_ok(20).await;
    let killed = Instant::now();
    cluster.run(&["kill", "registry-a"]);
    eventually(
        Duration::from_secs(30),
        "the aqueduct follows registry-b",
        || async { (feed_follows(&client, &cluster).await? == "registry-b").then_some(()) },
    )
    .await;
    println!(
        "timing: registry-a killed -> aqueduct follows registry-b: {:.1} s",
        killed.elapsed().as_secs_f64()
    );
    eventually(
        Duration::from_secs(30),
        "registry-a stops answering",
        || async {
            // A request to the dead container's port gets no answer at all: give up soon.
            let request = client.get(cluster.registry_a("/status"));
            let answer = request.timeout(Duration::from_secs(1)).send().await;
            answer.is_err().then_some(())
        },
    )
    .await;
    let web2_on_b = cluster.registry_b(&registration_path(&web2));
    send_200(&client, post.clone(), &web2_on_b, REGISTRATION).await;
    println!(
        "timing: registry-a killed -> web2 registered on registry-b: {:.1} s",
        killed.elapsed().as_secs_f64()
    );
    await_up(&client, &cluster, &web2_id).await;
    println!(
        "timing: registry-a killed -> web2 (registered on registry-b) UP: {:.1} s",
        killed.elapsed().as_secs_f64()
    );
    load.wait_ok(20).await;
    let (ok, failed) = load.stop().await;
    println!("cluster: registry-a down: {ok} requests through HAProxy, {failed:?} failed");
    assert!(
        failed.is_empty(),
        "requests failed without registry-a: {failed:?}"
    );
    // web1 leaves (deleted on registry-b): web2 takes the traffic.
    let web1_on_b = cluster.registry_b(&registration_path(&web1));
    send_200(&client, reqwest::Method::DELETE, &web1_on_b, "").await;
    eventually(Duration::from_secs(30), "web2 through :80", || async {
        (served_by(&client, &cluster).await? == "web2").then_some(())
    })
    .await;
    println!("cluster: web1 deleted on registry-b, web2 serves");

    // The Redis primary dies. The Sentinels promote the replica; registry-b finds it, takes
    // writes again and still has what it had; HAProxy serves throughout.
    await_failover_ready(&cluster).await;
    let load = WebLoad::start(cluster.webapp());
    load.wait_ok(20).await;
    let killed = Instant::now();
    cluster.run(&["kill", "redis-primary"]);
    for sentinel in ["sentinel-1", "sentinel-2", "sentinel-3"] {
        eventually(
            Duration::from_secs(60),
            &format!("{sentinel} names redis-replica the primary"),
            || async { (cluster.primary_by(sentinel)? == "redis-replica").then_some(()) },
        )
        .await;
    }
    println!(
        "timing: redis-primary killed -> Sentinels name redis-replica: {:.1} s",
        killed.elapsed().as_secs_f64()
    );
    let web1_on_b_again = cluster.registry_b(&registration_path(&web1));
    send_200(&client, post.clone(), &web1_on_b_again, REGISTRATION).await;
    println!(
        "timing: redis-primary killed -> a write on registry-b succeeds: {:.1} s",
        killed.elapsed().as_secs_f64()
    );
    await_listed(&client, "registry-b", &base_b, &web2_id, true).await;
    await_up(&client, &cluster, &web1_id).await;
    println!(
        "timing: redis-primary killed -> web1 (registered after the failover) UP: {:.1} s",
        killed.elapsed().as_secs_f64()
    );
    let (ok, failed) = load.stop().await;
    println!("cluster: Redis failover: {ok} requests through HAProxy, {failed:?} failed");
    assert!(
        failed.is_empty(),
        "requests failed during the Redis failover: {failed:?}"
    );

    // The old primary, started again, becomes a replica of the new one (Sentinel rewrites
    // its config in its volume); registry-a, started again, finds the new primary and serves
    // every registration.
    cluster.run(&["start", "redis-primary", "start", "registry-a"]);
    eventually(
        Duration::from_secs(60),
        "redis-primary rejoins as a replica of redis-replica",
        || async {
            let role = cluster.redis_cli("redis-primary", 6379, &["role"])?;
            let following = role.first()? == "slave" && role.get(1)? == "redis-replica";
            let info = cluster.redis_cli("redis-primary", 6379, &["info", "replication"])?;
            let synced = info
                .iter()
                .any(|line| line.trim() == "master_link_status:up");
            (following && synced).then_some(())
        },
    )
    .await;
    let status_a = cluster.registry_a("/status");
    eventually(Duration::from_secs(60), "registry-a back", || {
        on_sentinel_store(&client, &status_a)
    })
    .await;
    let base_a = cluster.registry_a("");
    for id in [&web1_id, &web2_id] {
        await_listed(&client, "registry-a", &base_a, id, true).await;
    }
    println!(
        "cluster: redis-primary rejoined as a replica; registry-a back with every registration"
    );

    // Down removes everything of the project.
    cluster.run(&["down"]);
    assert_eq!(cluster.leftovers(), Vec::<String>::new());
    println!(
        "timing: whole test: {:.1} s",
        test_started.elapsed().as_secs_f64()
    );
}

/// Requests through the webapp frontend back to back (a new connection each), counting what
/// failed and why.
struct WebLoad {
    ok: Arc<AtomicU64>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl WebLoad {
    fn start(url: String) -> WebLoad {
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ok_count, failures, stopping) = (ok.clone(), failed.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let client = client();
            while !stopping.load(Ordering::SeqCst) {
                match client.get(&url).send().await {
                    Ok(response) if response.status().is_success() => {
                        ok_count.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(response) => failures.lock().unwrap().push(response.status().to_string()),
                    Err(err) => failures.lock().unwrap().push(err.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        WebLoad {
            ok,
            failed,
            stop,
            task,
        }
    }

    async fn wait_ok(&self, n: u64) {
        let start = self.ok.load(Ordering::SeqCst);
        eventually(Duration::from_secs(30), "requests to succeed", || async {
            (self.ok.load(Ordering::SeqCst) >= start + n).then_some(())
        })
        .await;
    }

    async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        let failed = self.failed.lock().unwrap().clone();
        (self.ok.load(Ordering::SeqCst), failed)
    }
}
