//! `thalassa register` against a real registry: keeps registrations alive, retries while the
//! registry is down (logging the outage once), deletes its registrations on SIGTERM/SIGINT, and
//! given several registry nodes moves to the next one at once when a node fails.

mod registry_support;
mod support;

use registry_support::{Process, Registry, eventually, free_port};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn start_register(
    registry_url: &str,
    services: &str,
    extra: &[&str],
    log: std::path::PathBuf,
) -> Process {
    let mut args = vec![
        "register",
        services,
        "--registry",
        registry_url,
        "--host",
        "127.0.0.1",
    ];
    args.extend_from_slice(extra);
    Process::spawn(&args, log)
}

async fn last_known(registry: &Registry, id: &str) -> Option<u64> {
    registry
        .get("/registrations")
        .await
        .as_array()?
        .iter()
        .find(|r| r["id"] == id)?["lastKnown"]
        .as_u64()
}

async fn check_deregisters_on(signal: &str) {
    let registry = Registry::start(&[]).await;
    let temp = tempfile::tempdir().expect("temp dir");
    let mut register = start_register(
        &registry.url,
        "web@1.0.0:8080,api@2.0.0:9090",
        &["--every", "200ms", "--secs-to-expire", "30"],
        temp.path().join("register.log"),
    );
    eventually(WAIT, "both registrations", || async {
        (registry.ids().await.len() == 2).then_some(())
    })
    .await;
    assert_eq!(
        registry.ids().await,
        ["/api/2.0.0/127.0.0.1/9090", "/web/1.0.0/127.0.0.1/8080"]
    );
    let web = &registry.get("/registrations/web/1.0.0").await[0];
    assert_eq!(web["meta"]["secondsToExpire"], 30);
    assert_eq!(web["meta"]["pid"], register.pid());
    assert!(web["meta"]["registered"].is_u64());
    assert!(web["meta"]["hostname"].is_string());

    // Heartbeats keep refreshing lastKnown, without events (the meta does not change).
    let first = last_known(&registry, "/web/1.0.0/127.0.0.1/8080")
        .await
        .expect("registered");
    eventually(WAIT, "a heartbeat", || async {
        let now = last_known(&registry, "/web/1.0.0/127.0.0.1/8080").await?;
        (now > first).then_some(())
    })
    .await;
    assert_eq!(
        registry
            .metric("thalassa_registry_posts_total{outcome=\"updated\"}")
            .await,
        0.0
    );

    let status = match signal {
        "TERM" => register.terminate().await,
        _ => register.interrupt().await,
    };
    assert!(status.success(), "{status:?}\n{}", register.log());
    // Deleted at once, long before the 30 s lease would have run out.
    assert_eq!(registry.ids().await, Vec::<String>::new());
    assert_eq!(
        registry
            .metric("thalassa_registry_deletes_total{outcome=\"deleted\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn keeps_registrations_alive_and_deletes_them_on_sigterm() {
    check_deregisters_on("TERM").await;
}

#[tokio::test]
async fn deletes_them_on_sigint_too() {
    check_deregisters_on("INT").await;
}

#[tokio::test]
async fn retries_while_the_registry_is_down_and_logs_the_outage_once() {
    let port = free_port();
    let temp = tempfile::tempdir().unwrap();
    let log = temp.path().join("register.log");
    let url = format!("http://127.0.0.1:{port}");
    let mut register = start_register(
        &url,
        "late@1:7000",
        &["--every", "300ms", "--secs-to-expire", "30"],
        log,
    );
    eventually(WAIT, "the first failure to be logged", || async {
        register.log().contains("heartbeat failed").then_some(())
    })
    .await;
    // Let several retries fail (100 ms, 200 ms, 300 ms, ...).
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let registry = Registry::start_in(&temp.path().join("data"), port, &[]).await;
    eventually(WAIT, "the registration once the registry is up", || async {
        (registry.ids().await == ["/late/1/127.0.0.1/7000"]).then_some(())
    })
    .await;
    let log = register.log();
    assert_eq!(log.matches("heartbeat failed").count(), 1, "{log}");
    eventually(WAIT, "the recovery to be logged", || async {
        register.log().contains("reachable again").then_some(())
    })
    .await;
    assert!(register.terminate().await.success());
    assert_eq!(registry.ids().await, Vec::<String>::new());
}

#[tokio::test]
async fn keeps_the_registration_alive_on_a_live_node_when_the_first_is_dead() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let live = Registry::start(&[]).await;
    let temp = tempfile::tempdir().unwrap();
    let mut register = start_register(
        &format!("{dead},{}", live.url),
        "svc@1:7000",
        &["--every", "200ms", "--secs-to-expire", "2"],
        temp.path().join("register.log"),
    );
    let id = "/svc/1/127.0.0.1/7000";
    let first = eventually(WAIT, "the registration on the live node", || async {
        last_known(&live, id).await
    })
    .await;
    // Over more than two leases it is refreshed and never expires.
    eventually(WAIT, "refreshes for more than two leases", || async {
        (last_known(&live, id).await? >= first + 5_000).then_some(())
    })
    .await;
    assert_eq!(live.metric("thalassa_registry_expired_total").await, 0.0);
    let log = register.log();
    assert!(
        log.contains("registry node failed; trying the next one"),
        "{log}"
    );
    // The dead node never cost a heartbeat.
    assert!(!log.contains("heartbeat failed"), "{log}");
    assert!(register.terminate().await.success());
    assert_eq!(live.ids().await, Vec::<String>::new());
}

#[tokio::test]
async fn moves_to_the_next_node_when_the_one_in_use_is_killed() {
    let mut first = Registry::start(&[]).await;
    let second = Registry::start(&[]).await;
    let temp = tempfile::tempdir().unwrap();
    let mut register = start_register(
        &format!("{},{}", first.url, second.url),
        "svc@1:7000",
        &["--every", "200ms", "--secs-to-expire", "30"],
        temp.path().join("register.log"),
    );
    eventually(WAIT, "the registration on the first node", || async {
        (first.ids().await == ["/svc/1/127.0.0.1/7000"]).then_some(())
    })
    .await;
    // Heartbeats stay on the node that answers.
    assert_eq!(second.ids().await, Vec::<String>::new());
    first.process.kill();
    // The next heartbeat lands on the second node, long before the lease could run out.
    eventually(
        Duration::from_secs(5),
        "the registration on the second node",
        || async { (second.ids().await == ["/svc/1/127.0.0.1/7000"]).then_some(()) },
    )
    .await;
    assert!(register.terminate().await.success());
    assert_eq!(second.ids().await, Vec::<String>::new());
}

#[tokio::test]
async fn deregisters_on_the_next_node_when_the_one_in_use_is_gone() {
    let mut first = Registry::start(&[]).await;
    let second = Registry::start(&[]).await;
    let temp = tempfile::tempdir().unwrap();
    // One heartbeat, then none before the stop: the node in use is still the first one.
    let mut register = start_register(
        &format!("{},{}", first.url, second.url),
        "svc@1:7000",
        &["--every", "10m", "--secs-to-expire", "30"],
        temp.path().join("register.log"),
    );
    eventually(WAIT, "the registration on the first node", || async {
        (first.ids().await == ["/svc/1/127.0.0.1/7000"]).then_some(())
    })
    .await;
    first.process.kill();
    assert!(register.terminate().await.success());
    // The DELETE went on to the second node, which answered (it never had the registration).
    assert_eq!(
        second
            .metric("thalassa_registry_deletes_total{outcome=\"unknown\"}")
            .await,
        1.0
    );
    let log = register.log();
    assert!(log.contains("deregistered"), "{log}");
}

#[tokio::test]
async fn a_bad_registry_list_fails_fast_naming_the_flag() {
    let temp = tempfile::tempdir().unwrap();
    for (i, registry) in [
        "http://127.0.0.1:9,",
        "127.0.0.1:9",
        "http://a:1,,http://b:1",
    ]
    .iter()
    .enumerate()
    {
        for command in ["register", "aqueduct"] {
            let mut args = vec![command, "--registry", registry];
            if command == "register" {
                args.push("web@1:80");
            }
            let mut process = Process::spawn(&args, temp.path().join(format!("{command}-{i}.log")));
            let status = process.wait(WAIT).await;
            assert!(!status.success(), "{command} --registry {registry}");
            assert!(
                process.log().contains("--registry"),
                "{command} --registry {registry}: {}",
                process.log()
            );
        }
    }
}

#[tokio::test]
async fn invalid_registrations_fail_fast() {
    let temp = tempfile::tempdir().unwrap();
    for (i, services) in ["nonsense", "web@1.0.0:http", "web@1.0.0:0", "a b@1:80"]
        .iter()
        .enumerate()
    {
        let mut register = start_register(
            "http://127.0.0.1:9",
            services,
            &[],
            temp.path().join(format!("register-{i}.log")),
        );
        let status = register.wait(WAIT).await;
        assert!(!status.success(), "{services}");
        assert!(
            register.log().contains("invalid registration"),
            "{services}: {}",
            register.log()
        );
    }
}

#[tokio::test]
async fn everything_can_be_configured_from_the_environment() {
    // The registry: listen address, data dir and default lease from THALASSA_* variables.
    let temp = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let data_dir = temp.path().join("env-data");
    let data = data_dir.to_string_lossy().into_owned();
    let _registry_process = Process::spawn_with_env(
        &["registry"],
        &[
            ("THALASSA_LISTEN", listen.as_str()),
            ("THALASSA_DATA_DIR", data.as_str()),
            ("THALASSA_DEFAULT_SECS_TO_EXPIRE", "42"),
        ],
        temp.path().join("registry.log"),
    );
    let url = format!("http://127.0.0.1:{port}");
    let status_url = format!("{url}/status");
    eventually(WAIT, "the registry from the environment", || {
        let status_url = status_url.clone();
        async move {
            let response = registry_support::client()
                .get(&status_url)
                .send()
                .await
                .ok()?;
            response.status().is_success().then_some(())
        }
    })
    .await;
    registry_support::send(
        registry_support::client().post(format!("{url}/registrations/d/1/127.0.0.1/1")),
    )
    .await;
    let leases = registry_support::get_json(&format!("{url}/leases")).await;
    let lease = leases
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == "/d/1/127.0.0.1/1")
        .cloned()
        .unwrap();
    assert_eq!(
        lease["expiresAt"].as_u64().unwrap() - lease["lastKnown"].as_u64().unwrap(),
        42_000
    );
    eventually(WAIT, "the snapshot in THALASSA_DATA_DIR", || {
        let file = data_dir.join("registrations.json");
        async move { file.exists().then_some(()) }
    })
    .await;

    // The register command: services, registry, host, lease and period.
    let mut register = Process::spawn_with_env(
        &["register"],
        &[
            ("THALASSA_REGISTER", "envsvc@3.0.0:3000,other@1:3001"),
            ("THALASSA_REGISTRY", url.as_str()),
            ("THALASSA_HOST", "127.0.0.2"),
            ("THALASSA_SECS_TO_EXPIRE", "7"),
            ("THALASSA_EVERY", "100ms"),
        ],
        temp.path().join("register.log"),
    );
    let registrations_url = format!("{url}/registrations/envsvc/3.0.0");
    let registration = eventually(WAIT, "the registration from the environment", || {
        let registrations_url = registrations_url.clone();
        async move {
            let list = registry_support::get_json(&registrations_url).await;
            list.as_array()?.first().cloned()
        }
    })
    .await;
    assert_eq!(registration["id"], "/envsvc/3.0.0/127.0.0.2/3000");
    assert_eq!(registration["meta"]["secondsToExpire"], 7);
    assert!(register.terminate().await.success());
}
