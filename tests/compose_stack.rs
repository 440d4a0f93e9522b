//! End-to-end test of the compose stack with podman: the image is built from this test's own
//! `thalassa` binary, `compose.yaml` (plus two small web servers from `tests/compose/e2e.yaml`)
//! comes up with podman-compose through `tests/compose/stack.sh`, and the README walkthrough is
//! replayed against the published ports: the same curl bodies, frontends first. Servers are the
//! test's own containers; no other address is ever targeted.
//!
//! Needs podman, runc, debootstrap and podman-compose (`.ci/run` installs them); under `CI` a
//! missing one fails the test. Prints its timings (image build, `up` to healthy).

#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches start the real programs they measure"
)]
#![allow(clippy::unwrap_used)] // a panic here is a test failure

mod support;

use serde_json::Value;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::eventually;

/// The walkthrough's request bodies, byte for byte (README "Compose").
const MYSQL_FRONTEND: &str = r#"{ "bind": "*:3306", "backend": "mysql-backend", "mode": "tcp"}"#;
const WEBAPP_FRONTEND: &str = r#"{ "bind": "*:80", "backend": "webapp-backend", "mode": "http"}"#;
const MYSQL_BACKEND: &str = r#"{ "type":"dynamic", "name":"mysql-backend", "version":"1.0.0","balance":"source", "mode":"tcp","natives":["option mysql-check"]}"#;
const WEBAPP_BACKEND: &str = r#"{ "type":"dynamic", "name":"webapp-backend", "version":"1.0.0","balance":"source", "mode":"http","health":{"interval":"5000"}}"#;
const REGISTRATION: &str = r#"{ "secondsToExpire":"10000"}"#;
/// A registration that is never refreshed, to watch it expire.
const SHORT_REGISTRATION: &str = r#"{ "secondsToExpire":"20"}"#;

const STACK_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/compose/stack.sh");

/// The host side of the stack's published ports (free ports, not the walkthrough's 80/3306/...,
/// so the test never clashes with anything on the machine).
struct Ports {
    registry: u16,
    aqueduct: u16,
    http: u16,
    mysql: u16,
}

/// One compose project, torn down (containers, network, volumes) when dropped, also when the
/// test fails; its containers' logs are printed first in that case.
struct Stack {
    project: String,
    ports: Ports,
}

impl Stack {
    fn new() -> Stack {
        Stack {
            project: format!("thalassa-e2e-{}", std::process::id()),
            ports: Ports {
                registry: support::free_port(),
                aqueduct: support::free_port(),
                http: support::free_port(),
                mysql: support::free_port(),
            },
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(STACK_SCRIPT);
        command
            .args(args)
            .env("COMPOSE_PROJECT_NAME", &self.project)
            .env("COMPOSE_FILE", "compose.yaml:tests/compose/e2e.yaml")
            .env("THALASSA_IMAGE", "localhost/thalassa:e2e")
            .env("THALASSA_BINARY", env!("CARGO_BIN_EXE_thalassa"))
            .env("THALASSA_REGISTRY_PORT", self.ports.registry.to_string())
            .env("THALASSA_AQUEDUCT_PORT", self.ports.aqueduct.to_string())
            .env("THALASSA_HTTP_PORT", self.ports.http.to_string())
            .env("THALASSA_MYSQL_PORT", self.ports.mysql.to_string());
        command
    }

    /// Runs the stack script; panics with its output when it fails. Returns its stdout.
    fn run(&self, args: &[&str]) -> String {
        let output = self.command(args).output().unwrap();
        let Output {
            status,
            stdout,
            stderr,
        } = &output;
        let stdout = String::from_utf8_lossy(stdout).into_owned();
        let stderr = String::from_utf8_lossy(stderr);
        assert!(
            status.success(),
            "stack.sh {args:?} failed ({status}):\n{stdout}{stderr}"
        );
        eprint!("{stderr}");
        stdout
    }

    /// Runs the script and reports how long it took.
    fn timed(&self, what: &str, args: &[&str]) -> Duration {
        let started = Instant::now();
        self.run(args);
        let took = started.elapsed();
        println!("timing: {what}: {:.1} s", took.as_secs_f64());
        took
    }

    fn ip(&self, service: &str) -> String {
        let ip = self.run(&["ip", service]).trim().to_owned();
        assert!(
            ip.parse::<std::net::Ipv4Addr>().is_ok(),
            "no IPv4 for {service}: {ip:?}"
        );
        ip
    }

    fn registry(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.registry)
    }

    fn aqueduct(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.aqueduct)
    }

    fn webapp(&self) -> String {
        format!("http://127.0.0.1:{}/", self.ports.http)
    }

    /// Names of the project's containers still present.
    fn containers(&self) -> Vec<String> {
        let output = Command::new("podman")
            .args(["ps", "--all", "--format", "{{.Names}}", "--filter"])
            .arg(format!("label=io.podman.compose.project={}", self.project))
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Stack {
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

/// Sends the walkthrough's kind of request (`curl -H "Content-type: application/json" -X METHOD
/// -d BODY URL`) and expects the original's `200` answer.
async fn send_200(client: &reqwest::Client, method: reqwest::Method, url: &str, body: &str) {
    let response = client
        .request(method.clone(), url)
        .header("Content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap_or_else(|err| panic!("{method} {url}: {err}"));
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(
        (status.as_u16(), text.trim()),
        (200, "200"),
        "{method} {url} {body}"
    );
}

async fn get_json(client: &reqwest::Client, url: &str) -> Option<Value> {
    let response = client.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

/// The members of an aqueduct backend as (registration id, status) pairs.
async fn members(client: &reqwest::Client, stack: &Stack, backend: &str) -> Vec<(String, String)> {
    let url = stack.aqueduct(&format!("/backends/{backend}/members"));
    let Some(Value::Array(members)) = get_json(client, &url).await else {
        return Vec::new();
    };
    members
        .iter()
        .map(|member| {
            let field = |name: &str| member[name].as_str().unwrap_or_default().to_owned();
            (field("id"), field("status").to_ascii_uppercase())
        })
        .collect()
}

/// The member's status when it is a member of `backend`.
async fn member_status(
    client: &reqwest::Client,
    stack: &Stack,
    backend: &str,
    id: &str,
) -> Option<String> {
    members(client, stack, backend)
        .await
        .into_iter()
        .find(|(member, _)| member == id)
        .map(|(_, status)| status)
}

/// Which web server answered a request through the webapp frontend's published port.
async fn served_by(client: &reqwest::Client, stack: &Stack) -> Option<String> {
    let response = client.get(stack.webapp()).send().await.ok()?;
    if response.status() != reqwest::StatusCode::OK {
        return None;
    }
    let body = response.text().await.ok()?;
    body.trim().strip_prefix("served by ").map(str::to_owned)
}

fn registration_path(name: &str, host: &str, port: u16) -> String {
    format!("/registrations/{name}/1.0.0/{host}/{port}")
}

fn registration_id(name: &str, host: &str, port: u16) -> String {
    format!("/{name}/1.0.0/{host}/{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_stack_serves_the_walkthrough() {
    let hint = "run .ci/run, or: apt-get install -y podman runc debootstrap \
                && pip install podman-compose";
    if !["podman", "runc", "debootstrap", "podman-compose"]
        .iter()
        .all(|binary| support::require(binary, hint))
    {
        return;
    }
    let stack = Stack::new();
    let client = client();

    // The stack, as a machine without an image registry makes it.
    stack.timed(
        "base image (debootstrap, skipped when present)",
        &["base-image"],
    );
    stack.timed(
        "image build (thalassa + test web server)",
        &["build", "build-web"],
    );
    stack.timed("up -> healthy", &["up"]);

    // The UI and the API answer on the aqueduct's port, the registry on its own.
    let ui = client.get(stack.aqueduct("/")).send().await.unwrap();
    assert_eq!(ui.status(), reqwest::StatusCode::OK, "UI at /");
    let content_type = ui.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap();
    assert!(
        content_type.starts_with("text/html"),
        "UI content type {content_type}"
    );
    assert_eq!(
        get_json(&client, &stack.aqueduct("/frontends")).await,
        Some(Value::Array(Vec::new()))
    );
    assert!(
        get_json(&client, &stack.registry("/status"))
            .await
            .is_some()
    );

    // The walkthrough: frontends first, then backends.
    let put = reqwest::Method::PUT;
    let frontends = [
        ("mysql-frontend", MYSQL_FRONTEND),
        ("webapp-frontend", WEBAPP_FRONTEND),
    ];
    for (key, body) in frontends {
        send_200(
            &client,
            put.clone(),
            &stack.aqueduct(&format!("/frontends/{key}")),
            body,
        )
        .await;
    }
    let backends = [
        ("mysql-backend", MYSQL_BACKEND),
        ("webapp-backend", WEBAPP_BACKEND),
    ];
    for (key, body) in backends {
        send_200(
            &client,
            put.clone(),
            &stack.aqueduct(&format!("/backends/{key}")),
            body,
        )
        .await;
    }
    let config = client
        .get(stack.aqueduct("/haproxy/config"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in ["bind *:80", "bind *:3306", "option mysql-check"] {
        assert!(config.contains(line), "{line:?} missing from:\n{config}");
    }

    // Registrations, with the walkthrough's body: the two web servers, and a "MySQL server"
    // where nothing listens (web1's address on 3306). Plus one that is never refreshed. web2
    // registers by its compose service name, as services in a compose network do: the
    // aqueduct resolves it.
    let (web1, web2) = (stack.ip("web1"), "web2".to_owned());
    let post = reqwest::Method::POST;
    for (name, host, port, body) in [
        ("webapp-backend", &web1, 8080, REGISTRATION),
        ("webapp-backend", &web2, 8080, REGISTRATION),
        ("mysql-backend", &web1, 3306, REGISTRATION),
        ("mysql-backend", &web2, 3306, SHORT_REGISTRATION),
    ] {
        let url = stack.registry(&registration_path(name, host, port));
        send_200(&client, post.clone(), &url, body).await;
    }
    let short_lived = registration_id("mysql-backend", &web2, 3306);
    eventually(
        Duration::from_secs(15),
        &format!("{short_lived} joins"),
        || async { member_status(&client, &stack, "mysql-backend", &short_lived).await },
    )
    .await;

    // Both web servers become UP members, the dead one is shown DOWN.
    for web in [&web1, &web2] {
        let id = registration_id("webapp-backend", web, 8080);
        eventually(Duration::from_secs(60), &format!("{id} UP"), || async {
            let status = member_status(&client, &stack, "webapp-backend", &id).await?;
            status.starts_with("UP").then_some(())
        })
        .await;
    }
    // The member registered by name lists the name as its host and the address beside it.
    let web2_ip = stack.ip("web2");
    let url = stack.aqueduct("/backends/webapp-backend/members");
    let listed = get_json(&client, &url).await.unwrap_or_default();
    let by_name = listed
        .as_array()
        .and_then(|members| members.iter().find(|m| m["host"] == "web2"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(by_name["address"], web2_ip.as_str(), "{listed}");
    println!("walkthrough: web2 registered by name, resolved to {web2_ip}");
    let dead = registration_id("mysql-backend", &web1, 3306);
    let status = eventually(Duration::from_secs(30), &format!("{dead} DOWN"), || async {
        let status = member_status(&client, &stack, "mysql-backend", &dead).await?;
        status.starts_with("DOWN").then_some(status)
    })
    .await;
    println!("walkthrough: web1 and web2 UP, {dead} {status}");

    // Requests through the published HTTP port reach a web server; with `balance source` one
    // client always reaches the same one, so the other is reached once the first leaves.
    let first = eventually(Duration::from_secs(30), "a web server through :80", || {
        served_by(&client, &stack)
    })
    .await;
    let (first_ip, other) = match first.as_str() {
        "web1" => (&web1, "web2"),
        "web2" => (&web2, "web1"),
        name => panic!("unexpected server {name}"),
    };
    // `balance source`: the same client keeps reaching the same server.
    for _ in 0..10 {
        assert_eq!(
            served_by(&client, &stack).await.as_deref(),
            Some(first.as_str())
        );
    }
    println!("walkthrough: {first} answers through :80 (balance source); deregistering it");
    let first_path = registration_path("webapp-backend", first_ip, 8080);
    send_200(
        &client,
        reqwest::Method::DELETE,
        &stack.registry(&first_path),
        "",
    )
    .await;
    let deregistered = Instant::now();
    eventually(
        Duration::from_secs(30),
        &format!("{other} through :80"),
        || async { (served_by(&client, &stack).await? == other).then_some(()) },
    )
    .await;
    println!(
        "walkthrough: {other} answers {} ms after {first} left",
        deregistered.elapsed().as_millis()
    );
    // Registered again, it is back in the pool.
    send_200(
        &client,
        post.clone(),
        &stack.registry(&first_path),
        REGISTRATION,
    )
    .await;
    let first_id = registration_id("webapp-backend", first_ip, 8080);
    eventually(
        Duration::from_secs(60),
        &format!("{first_id} UP again"),
        || async {
            let status = member_status(&client, &stack, "webapp-backend", &first_id).await?;
            status.starts_with("UP").then_some(())
        },
    )
    .await;

    // The MySQL frontend's published port accepts connections.
    let mysql = format!("127.0.0.1:{}", stack.ports.mysql);
    tokio::net::TcpStream::connect(&mysql)
        .await
        .unwrap_or_else(|err| panic!("connect to the mysql frontend at {mysql}: {err}"));

    // The never-refreshed registration expires and leaves the backend; the others stay.
    eventually(
        Duration::from_secs(45),
        &format!("{short_lived} expired"),
        || async {
            let members = members(&client, &stack, "mysql-backend").await;
            let gone = !members.iter().any(|(id, _)| *id == short_lived);
            (gone && members.iter().any(|(id, _)| *id == dead)).then_some(())
        },
    )
    .await;
    println!("walkthrough: {short_lived} expired and left mysql-backend");
    let registrations = get_json(
        &client,
        &stack.registry("/registrations/mysql-backend/1.0.0"),
    )
    .await
    .unwrap();
    let ids: Vec<&str> = registrations
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|registration| registration["id"].as_str())
        .collect();
    assert_eq!(ids, [dead.as_str()], "registry after expiry");

    // The aqueduct keeps its frontends and backends in its volume across a restart, and
    // HAProxy (its own container) serves throughout: a restart of the aqueduct's container and
    // its replacement by a new one (what an image upgrade does) drop no request.
    let load = WebLoad::start(stack.webapp());
    load.wait_ok(50).await;
    let started = Instant::now();
    stack.run(&["restart", "aqueduct", "wait-healthy"]);
    println!(
        "timing: aqueduct restart -> healthy: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    load.wait_ok(50).await;
    let started = Instant::now();
    stack.run(&["recreate", "aqueduct", "wait-healthy"]);
    println!(
        "timing: aqueduct recreate -> healthy: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    load.wait_ok(50).await;
    let (ok, failed) = load.stop().await;
    println!(
        "walkthrough: aqueduct restarted and recreated under load: {ok} ok, {failed:?} failed"
    );
    assert!(
        failed.is_empty(),
        "requests failed while the aqueduct was replaced: {failed:?}"
    );
    let keys = |rows: Option<Value>| -> Vec<String> {
        rows.and_then(|rows| rows.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|row| row["key"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(
        keys(get_json(&client, &stack.aqueduct("/frontends")).await),
        ["mysql-frontend", "webapp-frontend"]
    );
    assert_eq!(
        keys(get_json(&client, &stack.aqueduct("/backends")).await),
        ["mysql-backend", "webapp-backend"]
    );
    eventually(Duration::from_secs(60), "traffic after the restart", || {
        served_by(&client, &stack)
    })
    .await;

    // Down removes everything of the project.
    stack.run(&["down"]);
    assert_eq!(stack.containers(), Vec::<String>::new());
}

/// Requests through the webapp frontend back to back (a new connection each, as a browser
/// hitting a reload would), counting what failed and why.
struct WebLoad {
    ok: std::sync::Arc<std::sync::atomic::AtomicU64>,
    failed: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl WebLoad {
    fn start(url: String) -> WebLoad {
        use std::sync::atomic::Ordering;
        let ok = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let failed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ok_count, failures, stopping) = (ok.clone(), failed.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
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
        use std::sync::atomic::Ordering;
        let start = self.ok.load(Ordering::SeqCst);
        eventually(Duration::from_secs(30), "requests to succeed", || async {
            (self.ok.load(Ordering::SeqCst) >= start + n).then_some(())
        })
        .await;
    }

    async fn stop(self) -> (u64, Vec<String>) {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        let failed = self.failed.lock().unwrap().clone();
        (self.ok.load(Ordering::SeqCst), failed)
    }
}
