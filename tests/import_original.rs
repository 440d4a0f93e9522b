//! `thalassa import-original`: a persistence file of the original aqueduct, written by hand in
//! its format (tests/fixtures/aqueduct/original-persistence.json), is imported item by item
//! with a real `haproxy -c`, and the imported stack serves traffic through a real HAProxy: a
//! static and a dynamic backend, a tcp frontend, a frontend waiting for its refused backend;
//! the items HAProxy 2.x refuses are absent. Garbage files are clear errors, never panics.

#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches start the real programs they measure"
)]
#![allow(clippy::unwrap_used)] // Test code: a panic here is a test failure.

mod support;

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;
use support::{Origin, Stack, eventually, free_port, get_once, require_haproxy};

const FIXTURE: &str = include_str!("fixtures/aqueduct/original-persistence.json");

/// `thalassa import-original <args>`, with the HAProxy the tests use.
fn import(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_thalassa"));
    command.arg("import-original").args(args);
    if let Some(bin) = support::haproxy_path() {
        command.env("THALASSA_HAPROXY_BIN", bin);
    }
    command.env_remove("THALASSA_DATA_DIR").output().unwrap()
}

fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "{err}: stdout {:?}, stderr {:?}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The fixture with its ports (fixed, as an operator's file has them) moved to free loopback
/// ports: each frontend's bind, and each static member's port to the origin standing for it
/// (a string stays a string).
fn fixture_on(ports: &BTreeMap<u16, u16>) -> String {
    let mut file: Value = serde_json::from_str(FIXTURE).unwrap();
    for frontend in file["frontends"].as_array_mut().unwrap() {
        let bind = frontend["bind"].as_str().unwrap();
        let port: u16 = bind.rsplit_once(':').unwrap().1.parse().unwrap();
        frontend["bind"] = json!(format!("127.0.0.1:{}", ports[&port]));
    }
    for backend in file["backends"].as_array_mut().unwrap() {
        if backend["type"] != "static" {
            continue;
        }
        for member in backend["members"].as_array_mut().unwrap() {
            member["port"] = match &member["port"] {
                Value::String(port) => json!(ports[&port.parse::<u16>().unwrap()].to_string()),
                port => json!(ports[&(port.as_u64().unwrap() as u16)]),
            };
        }
    }
    file.to_string()
}

/// The report's items by `kind/key`.
fn items(report: &Value) -> BTreeMap<String, Value> {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let key = format!(
                "{}/{}",
                item["kind"].as_str().unwrap(),
                item["key"].as_str().unwrap()
            );
            (key, item.clone())
        })
        .collect()
}

fn assert_notes(item: &Value, expected: &[&str]) {
    let notes: Vec<&str> = item["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(notes.len(), expected.len(), "{item:#}");
    for (note, fragment) in notes.iter().zip(expected) {
        assert!(note.contains(fragment), "{note:?} lacks {fragment:?}");
    }
}

fn check_report(report: &Value) {
    let items = items(report);
    let outcome = |key: &str| items[key]["outcome"].as_str().unwrap().to_owned();
    let error = |key: &str| items[key]["error"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        (
            &report["imported"],
            &report["converted"],
            &report["refused"]
        ),
        (&json!(3), &json!(3), &json!(2)),
        "{report:#}"
    );

    assert_eq!(outcome("frontend/webapp-frontend"), "converted");
    assert_notes(
        &items["frontend/webapp-frontend"],
        &[
            "rules[2] (type \"cookie\") dropped",
            "\"option forceclose\"",
        ],
    );
    assert_eq!(outcome("frontend/mysql-frontend"), "imported");
    assert_notes(&items["frontend/mysql-frontend"], &[]);
    // Its backend is refused: the frontend is imported and waits for it.
    assert_eq!(outcome("frontend/api-frontend"), "imported");
    assert_notes(
        &items["frontend/api-frontend"],
        &["backend legacy-backend was refused: the frontend is imported, binds and answers 503"],
    );
    assert_eq!(outcome("frontend/legacy-frontend"), "refused");
    let legacy_frontend = error("frontend/legacy-frontend");
    assert!(
        legacy_frontend
            .starts_with("natives[1] \"reqadd X-Forwarded-Proto:\\ https\": haproxy -c:")
            && legacy_frontend.contains("The 'reqadd' directive is not supported anymore")
            && legacy_frontend.contains(
                "; natives[2] \"option forceclose\": haproxy -c: option 'forceclose' is not \
                 supported any more since HAProxy 2.0"
            ),
        "{legacy_frontend}"
    );

    assert_eq!(outcome("backend/static-backend"), "imported");
    assert_eq!(outcome("backend/mysql-backend"), "converted");
    assert_notes(&items["backend/mysql-backend"], &["stored as the number"]);
    assert_eq!(outcome("backend/webapp-backend"), "converted");
    assert_notes(
        &items["backend/webapp-backend"],
        &[
            "members: 2 stored registration(s) dropped",
            "health.interval \"5000\" stored as the number 5000",
            "rendered as \"http-request set-header Host webapp.example.com\"",
            "\"http-check send meth GET uri / ver HTTP/1.1 hdr Host webapp.example.com\"",
        ],
    );
    assert_eq!(outcome("backend/legacy-backend"), "refused");
    let legacy_backend = error("backend/legacy-backend");
    assert!(
        legacy_backend.starts_with("natives[0] \"reqirep ")
            && legacy_backend.contains("The 'reqirep' directive is not supported anymore"),
        "{legacy_backend}"
    );
    for item in items.values().filter(|item| item["outcome"] != "refused") {
        assert_eq!(item["error"], Value::Null, "{item:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_original_persistence_file_is_imported_and_the_stack_serves_it() {
    if !require_haproxy() {
        return;
    }
    let (webapp, files, mysql) = (
        Origin::start("webapp").await,
        Origin::start("files").await,
        Origin::start("mysql").await,
    );
    let ports: BTreeMap<u16, u16> = [
        (8080, free_port()),
        (8081, free_port()),
        (8082, free_port()),
        (13306, free_port()),
        (9001, files.port()),
        // The refused backend's member: nothing listens there.
        (9003, free_port()),
        (13307, mysql.port()),
    ]
    .into();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("original-persistence.json");
    std::fs::write(&file, fixture_on(&ports)).unwrap();
    // The data dir of the stack started below.
    let data = tempfile::TempDir::new_in(dir.path()).unwrap();
    let (file_arg, data_arg) = (file.to_str().unwrap(), data.path().to_str().unwrap());
    let state_path = data.path().join("aqueduct.json");

    // A dry run reports and writes nothing.
    let dry = import(&[file_arg, "--data-dir", data_arg, "--dry-run", "--json"]);
    assert_eq!(dry.status.code(), Some(3), "{dry:?}");
    check_report(&stdout_json(&dry));
    assert!(
        !state_path.exists(),
        "a dry run wrote {}",
        state_path.display()
    );

    let run = import(&[file_arg, "--data-dir", data_arg, "--json"]);
    assert_eq!(run.status.code(), Some(3), "{run:?}");
    let report = stdout_json(&run);
    check_report(&report);
    assert_eq!(report["written"], json!(state_path.display().to_string()));
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    assert_eq!(written["version"], 2);

    // An existing configuration is only replaced with --force; the table is the default.
    let again = import(&[file_arg, "--data-dir", data_arg]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("already exists") && stderr.contains("--force"),
        "{stderr}"
    );
    let forced = import(&[file_arg, "--data-dir", data_arg, "--force"]);
    assert_eq!(forced.status.code(), Some(3), "{forced:?}");
    let table = String::from_utf8_lossy(&forced.stdout);
    assert!(table.starts_with("OUTCOME    KIND      KEY"), "{table}");
    assert!(
        table.contains("\nrefused    backend   legacy-backend\n"),
        "{table}"
    );
    assert!(
        table.contains("3 imported, 3 converted, 2 refused\nwrote "),
        "{table}"
    );

    // The imported stack: `thalassa up` on that data dir, the dynamic backend's member
    // registered again (the file's registrations were dropped).
    let stack = Stack::start_in(data, &[], true).await;
    stack.register_origin("webapp", "1.0.0", &webapp).await;

    let serves = |port: u16, path: &'static str, expected: (u16, &'static str)| async move {
        let what = format!("port {port}{path} to answer {expected:?}");
        eventually(Duration::from_secs(20), &what, || async {
            let got = get_once(port, path).await.ok()?;
            (got == (expected.0, expected.1.to_owned())).then_some(())
        })
        .await;
    };
    serves(ports[&8080], "/", (200, "webapp")).await; // dynamic backend
    serves(ports[&8080], "/static/logo.png", (200, "files")).await; // rule to a static one
    serves(ports[&13306], "/", (200, "mysql")).await; // tcp frontend, static backend
    // The frontend whose backend was refused binds and answers 503.
    let waiting = get_once(ports[&8081], "/").await.unwrap();
    assert_eq!(waiting.0, 503, "{waiting:?}");
    // The refused frontend is absent: nothing listens on its port.
    assert!(get_once(ports[&8082], "/").await.is_err());

    let keys = |rows: Value| -> Vec<String> {
        rows.as_array()
            .unwrap()
            .iter()
            .map(|row| row["key"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        keys(stack.get_json("/frontends").await),
        ["api-frontend", "mysql-frontend", "webapp-frontend"]
    );
    assert_eq!(
        keys(stack.get_json("/backends").await),
        ["mysql-backend", "static-backend", "webapp-backend"]
    );
    let api = stack.get_json("/frontends/api-frontend").await;
    assert_eq!(api["waitingForBackend"], true, "{api}");
    let config = stack.get_text("/haproxy/config").await;
    // The refused backend is only the placeholder its waiting frontend binds to.
    assert!(config.contains("# waiting for backend legacy-backend: used by frontend api-frontend"));
    for absent in [
        "forceclose",
        "reqirep",
        "reqadd",
        "legacy-frontend",
        "legacy.example.com",
    ] {
        assert!(!config.contains(absent), "{absent} in\n{config}");
    }
    assert!(config.contains("option httpclose"), "{config}");
}

#[test]
fn garbage_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let data_arg = data_dir.to_str().unwrap();
    for (name, contents, expected) in [
        (
            "empty.json",
            &b""[..],
            "not valid JSON: EOF while parsing a value at line 1 column 0",
        ),
        (
            "torn.json",
            b"{\"version\":1,\n\"frontends\":[{\"key\":",
            "not valid JSON: EOF while parsing a value at line 2 column 20",
        ),
        ("binary.json", b"\x00\xff\xfe garbage", "not valid JSON"),
        (
            "array.json",
            b"[{\"version\":1}]",
            "the top level is not a JSON object",
        ),
        (
            "v3.json",
            b"{\"version\":3}",
            "unsupported version 3, expected 1",
        ),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, contents).unwrap();
        let output = import(&[file.to_str().unwrap(), "--data-dir", data_arg]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "{} is not an original aqueduct persistence file: {expected}",
                file.display()
            )),
            "{name}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let missing = dir.path().join("missing.json");
    let output = import(&[missing.to_str().unwrap(), "--data-dir", data_arg]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot read the original aqueduct's file {}",
            missing.display()
        )),
        "{stderr}"
    );
    assert!(!Path::new(&data_dir).exists(), "nothing written");
}

#[tokio::test]
async fn the_aqueduct_imports_at_startup_into_an_empty_data_dir() {
    if !require_haproxy() {
        return;
    }
    let ports: BTreeMap<u16, u16> = [8080, 8081, 8082, 13306, 9001, 9003, 13307]
        .into_iter()
        .map(|port| (port, free_port()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("original-persistence.json");
    std::fs::write(&file, fixture_on(&ports)).unwrap();
    let data_dir = dir.path().join("data");
    let api_port = free_port();
    let mut aqueduct = support::spawn_thalassa(
        dir.path(),
        "aqueduct",
        &[
            "aqueduct",
            "--listen",
            &format!("127.0.0.1:{api_port}"),
            // No registry runs there: the aqueduct keeps trying, which changes nothing here.
            "--registry",
            &format!("http://127.0.0.1:{}", free_port()),
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--import-original",
            file.to_str().unwrap(),
        ],
    );
    let api = format!("http://127.0.0.1:{api_port}");
    support::wait_http(&format!("{api}/frontends"), &mut aqueduct).await;
    let frontends = support::get_json_at(&format!("{api}/frontends")).await;
    let keys: Vec<&str> = frontends
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["api-frontend", "mysql-frontend", "webapp-frontend"]);
    let saved = std::fs::read_to_string(data_dir.join("aqueduct.json")).unwrap();
    assert!(saved.starts_with("{\"version\":2,"), "{saved}");
    let log = aqueduct.log_text();
    assert!(
        log.contains("imported the original aqueduct's configuration") && log.contains("refused=2"),
        "{log}"
    );

    // A file with nothing HAProxy 2.x refuses imports with exit code 0.
    let clean = dir.path().join("clean.json");
    std::fs::write(
        &clean,
        r#"{"version":1,"frontends":[],"backends":[{"id":"backend/b","_type":"backend","key":"b","type":"static","balance":"roundrobin","host":null,"mode":"http","members":[],"natives":[]}]}"#,
    )
    .unwrap();
    let output = import(&[clean.to_str().unwrap(), "--dry-run"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains(
            "imported   backend   b\n1 imported, 0 converted, 0 refused\ndry run: nothing written\n"
        ),
        "{table}"
    );
}
