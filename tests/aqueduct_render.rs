//! Snapshot tests of whole rendered configs. Every snapshot also goes through the real
//! `haproxy -c`, which must accept it with no ALERT and no WARNING line, and is started for
//! real, which must print none either.

#![allow(clippy::unwrap_used)] // Test code: a panic here is a test failure.

mod aqueduct_support;

use aqueduct_support::{TestDir, assert_snapshot, haproxy_bin, haproxy_check, startup_complaints};
use serde_json::{Value, json};
use thalassa::aqueduct::validate;
use thalassa::config::Config;
use thalassa::haproxy::render::{RenderMember, RenderMembers, render};

fn config(frontends: &[(&str, Value)], backends: &[(&str, Value)]) -> Config {
    let mut config = Config::default();
    for (key, body) in frontends {
        let fe = validate::frontend(key, body).unwrap();
        config.frontends.insert(fe.key.clone(), fe);
    }
    for (key, body) in backends {
        let be = validate::backend(key, body).unwrap();
        config.backends.insert(be.key.clone(), be);
    }
    config
}

fn member(host: &str, port: u16, id: u32) -> RenderMember {
    RenderMember {
        host: host.parse().unwrap(),
        port,
        id: Some(id),
        weight: 1,
    }
}

/// Renders, pins the text (with the temp dir replaced by `$DATA`), and runs `haproxy -c`.
fn check(name: &str, config: &Config, members: &RenderMembers) {
    check_with(name, config, members, |_| {});
}

fn check_with(
    name: &str,
    config: &Config,
    members: &RenderMembers,
    adjust: impl FnOnce(&mut thalassa::haproxy::render::RenderSettings),
) {
    let mut dir = TestDir::new();
    adjust(&mut dir.settings);
    let text = render(config, members, &dir.settings);
    assert_eq!(
        text,
        render(config, members, &dir.settings),
        "rendering is deterministic"
    );
    let data = dir.path().to_string_lossy().into_owned();
    assert_snapshot(name, &text.replace(&data, "$DATA"));
    let Some(bin) = haproxy_bin() else { return };
    let outcome = haproxy_check(&bin, dir.path(), &text);
    assert!(
        outcome.valid,
        "{name}: haproxy -c refused it: {outcome:?}\n{text}"
    );
    assert!(outcome.alerts.is_empty(), "{name}: {:?}", outcome.alerts);
    assert!(
        outcome.warnings.is_empty(),
        "{name}: {:?}",
        outcome.warnings
    );
    let complaints = startup_complaints(&bin, dir.path(), &text);
    assert!(complaints.is_empty(), "{name} at start: {complaints:#?}");
}

fn walkthrough_frontends() -> Vec<(&'static str, Value)> {
    vec![
        (
            "mysql-frontend",
            json!({"bind":"127.0.0.1:13306","backend":"mysql-backend","mode":"tcp"}),
        ),
        (
            "webapp-frontend",
            json!({"bind":"127.0.0.1:18080","backend":"webapp-backend","mode":"http"}),
        ),
    ]
}

fn walkthrough_backends() -> Vec<(&'static str, Value)> {
    vec![
        (
            "mysql-backend",
            json!({"type":"dynamic","name":"mysql-backend","version":"1.0.0",
            "balance":"source","mode":"tcp","natives":["option mysql-check"]}),
        ),
        (
            "webapp-backend",
            json!({"type":"dynamic","name":"webapp-backend","version":"1.0.0",
            "balance":"source","mode":"http","health":{"interval":"5000"}}),
        ),
    ]
}

#[test]
fn walkthrough() {
    let config = config(&walkthrough_frontends(), &walkthrough_backends());
    let mut members = RenderMembers::new();
    members.set("mysql-backend", vec![member("127.0.0.11", 23306, 1)]);
    members.set(
        "webapp-backend",
        vec![member("127.0.1.2", 28080, 2), member("127.0.1.1", 28080, 1)],
    );
    check("walkthrough.cfg", &config, &members);
}

#[test]
fn walkthrough_frontends_wait_for_their_backends() {
    let config = config(&walkthrough_frontends(), &[]);
    check("waiting.cfg", &config, &RenderMembers::new());
}

#[test]
fn rules() {
    let config = config(
        &[(
            "web",
            json!({"bind":"127.0.0.1:18081","backend":"site","rules":[
            {"type":"path","operation":"path_beg","value":"/api","backend":"api"},
            {"type":"url","operation":"url_reg","value":"^/v[0-9]+/","backend":"api"},
            {"type":"header","header":"host","operation":"hdr_dom","value":"static.example.com","backend":"assets"},
            {"type":"path","operation":"path_beg","value":"/api","backend":"api"}]}),
        )],
        &[
            (
                "site",
                json!({"type":"dynamic","name":"site","version":"1"}),
            ),
            (
                "api",
                json!({"type":"dynamic","name":"api","version":"1","balance":"leastconn"}),
            ),
        ],
    );
    check("rules.cfg", &config, &RenderMembers::new());
}

#[test]
fn keepalive_modes() {
    let config = config(
        &[
            (
                "ka-default",
                json!({"bind":"127.0.0.1:18082","backend":"be"}),
            ),
            (
                "ka-close",
                json!({"bind":"127.0.0.1:18083","backend":"be","keepalive":"close"}),
            ),
            (
                "ka-server-close",
                json!({"bind":"127.0.0.1:18084","backend":"be","keepalive":"server-close"}),
            ),
        ],
        &[(
            "be",
            json!({"type":"static","members":[{"host":"127.0.0.2","port":9001}]}),
        )],
    );
    check("keepalive.cfg", &config, &RenderMembers::new());
}

#[test]
fn http11_health_with_host() {
    let config = config(
        &[],
        &[
            (
                "http11",
                json!({"type":"dynamic","name":"a","version":"1","host":"example.com",
                "health":{"httpVersion":"HTTP/1.1","uri":"/health?full=1","interval":1000}}),
            ),
            (
                "http10-post",
                json!({"type":"dynamic","name":"b","version":"1","host":"example.org",
                "health":{"method":"POST","uri":"/check"}}),
            ),
            (
                "tcp-host",
                json!({"type":"dynamic","name":"c","version":"1","mode":"tcp",
                "host":"ignored.example","health":{"httpVersion":"HTTP/1.1"}}),
            ),
        ],
    );
    let mut members = RenderMembers::new();
    members.set("http11", vec![member("127.0.0.3", 8080, 1)]);
    check("health.cfg", &config, &members);
}

#[test]
fn static_members() {
    let config = config(
        &[],
        &[
            (
                "be1",
                json!({"type":"static","members":[
                {"host":"10.10.10.10","port":"80"},{"host":"::1","port":8080,"note":"kept in the API only"}]}),
            ),
            (
                "be2",
                json!({"type":"static","balance":"random","health":{"interval":250},
                "members":[{"host":"127.0.0.4","port":9000}]}),
            ),
        ],
    );
    check("static-members.cfg", &config, &RenderMembers::new());
}

#[test]
fn natives_are_verbatim() {
    let config = config(
        &[(
            "fe",
            json!({"bind":"127.0.0.1:18085","backend":"be","natives":[
            "http-request set-header X-Foo \"bar\"",
            "http-response set-header X-Escapes '<&>'"]}),
        )],
        &[
            (
                "be",
                json!({"type":"static","natives":["http-check expect status 200","option forwardfor"],
                "health":{},"members":[{"host":"127.0.0.5","port":9000}]}),
            ),
            (
                "db",
                json!({"type":"dynamic","name":"db","version":"1","mode":"tcp","natives":["option mysql-check"]}),
            ),
        ],
    );
    let text = render(&config, &RenderMembers::new(), &TestDir::new().settings);
    assert!(
        text.contains("    http-request set-header X-Foo \"bar\"\n"),
        "{text}"
    );
    assert!(!text.contains("&quot;"), "{text}");
    check("natives.cfg", &config, &RenderMembers::new());
}

#[test]
fn balance_algorithms_and_stats_listener() {
    let backends: Vec<(String, Value)> = [
        ("roundrobin", "http"),
        ("leastconn", "http"),
        ("source", "tcp"),
        ("uri", "http"),
        ("url_param userid", "http"),
        ("hdr(host)", "http"),
        ("random(2)", "http"),
        ("rdp-cookie", "tcp"),
        ("hash req.hdr(host),lower", "http"),
        ("static-rr", "http"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (balance, mode))| {
        (
            format!("be{i}"),
            json!({"type":"dynamic","name":"svc","version":"1","balance":balance,"mode":mode}),
        )
    })
    .collect();
    let backends: Vec<(&str, Value)> = backends
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let config = config(&[], &backends);
    let mut members = RenderMembers::new();
    for (key, _) in &backends {
        members.set(
            key,
            vec![member("127.0.0.6", 9000, 1), member("127.0.0.7", 9000, 2)],
        );
    }
    check_with("balance.cfg", &config, &members, |settings| {
        settings.stats_bind = Some("127.0.0.1:11988".to_owned());
    });
}

#[test]
fn member_order_does_not_change_the_text() {
    let config = config(&walkthrough_frontends(), &walkthrough_backends());
    let settings = TestDir::new().settings;
    let (a, b) = (member("127.0.1.1", 1, 1), member("127.0.1.2", 1, 2));
    let mut one = RenderMembers::new();
    one.set("webapp-backend", vec![a, b]);
    let mut two = RenderMembers::new();
    two.set("webapp-backend", vec![b, a]);
    assert_eq!(
        render(&config, &one, &settings),
        render(&config, &two, &settings)
    );
}
