//! Unit tests of request validation.

use super::*;
use crate::aqueduct::rows;
use serde_json::json;

/// `Ok(row)` is the expected GET row; `Err((field, message fragment))` the expected 400.
fn check_backend(body: Value, expected: Result<Value, (&str, &str)>) {
    match (backend("be", &body), expected) {
        (Ok(got), Ok(row)) => assert_eq!(rows::backend_row(&got, &[]), row, "{body}"),
        (Err(err), Err((field, fragment))) => {
            assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST);
            assert_eq!(err.field.as_deref(), Some(field), "{body}: {err}");
            assert!(err.message.contains(fragment), "{body}: {err}");
        }
        (got, expected) => panic!("{body}: got {got:?}, expected {expected:?}"),
    }
}

fn check_frontend(body: Value, expected: Result<Value, (&str, &str)>) {
    match (frontend("fe", &body), expected) {
        (Ok(got), Ok(row)) => assert_eq!(rows::frontend_row(&got, false), row, "{body}"),
        (Err(err), Err((field, fragment))) => {
            assert_eq!(err.field.as_deref(), Some(field), "{body}: {err}");
            assert!(err.message.contains(fragment), "{body}: {err}");
        }
        (got, expected) => panic!("{body}: got {got:?}, expected {expected:?}"),
    }
}

#[test]
fn walkthrough_frontends_get_defaults() {
    check_frontend(
        json!({"bind":"*:3306","backend":"mysql-backend","mode":"tcp"}),
        Ok(
            json!({"id":"frontend/fe","_type":"frontend","key":"fe","bind":"*:3306",
            "backend":"mysql-backend","mode":"tcp","keepalive":"default","rules":[],"natives":[]}),
        ),
    );
    check_frontend(
        json!({"bind":"*:80","backend":"webapp-backend"}),
        Ok(
            json!({"id":"frontend/fe","_type":"frontend","key":"fe","bind":"*:80",
            "backend":"webapp-backend","mode":"http","keepalive":"default","rules":[],"natives":[]}),
        ),
    );
}

#[test]
fn walkthrough_backends_get_defaults() {
    check_backend(
        json!({"type":"dynamic","name":"mysql-backend","version":"1.0.0","balance":"source",
            "mode":"tcp","natives":["option mysql-check"]}),
        Ok(
            json!({"id":"backend/be","_type":"backend","key":"be","type":"dynamic",
            "name":"mysql-backend","version":"1.0.0","balance":"source","host":null,"mode":"tcp",
            "members":[],"natives":["option mysql-check"]}),
        ),
    );
    check_backend(
        json!({"type":"dynamic","name":"webapp-backend","version":"1.0.0","balance":"source",
            "mode":"http","health":{"interval":"5000"}}),
        Ok(
            json!({"id":"backend/be","_type":"backend","key":"be","type":"dynamic",
            "name":"webapp-backend","version":"1.0.0","balance":"source","host":null,"mode":"http",
            "members":[],"natives":[],
            "health":{"method":"GET","uri":"/","httpVersion":"HTTP/1.0","interval":5000}}),
        ),
    );
    check_backend(
        json!({"type":"static"}),
        Ok(
            json!({"id":"backend/be","_type":"backend","key":"be","type":"static",
            "balance":"roundrobin","host":null,"mode":"http","members":[],"natives":[]}),
        ),
    );
}

#[test]
fn http11_health_needs_host_in_any_mode() {
    let msg = "host is required with health check with httpVersion=HTTP/1.1";
    check_backend(
        json!({"type":"dynamic","name":"a","version":"1","health":{"httpVersion":"HTTP/1.1"}}),
        Err(("host", msg)),
    );
    check_backend(
        json!({"type":"dynamic","mode":"tcp","health":{"httpVersion":"HTTP/1.1"}}),
        Err(("host", msg)),
    );
    check_backend(
        json!({"type":"dynamic","host":"","health":{"httpVersion":"HTTP/1.1"}}),
        Err(("host", msg)),
    );
    let ok = backend(
        "be",
        &json!({"type":"dynamic","host":"example.com","health":{"httpVersion":"HTTP/1.1"}}),
    )
    .unwrap();
    assert_eq!(ok.host.as_deref(), Some("example.com"));
    assert_eq!(ok.health.unwrap().http_version, HttpVersion::Http11);
}

#[test]
fn tcp_backends_drop_health() {
    let be = backend(
        "be",
        &json!({"type":"static","mode":"tcp","health":{"interval":9}}),
    )
    .unwrap();
    assert_eq!(be.health, None);
    assert_eq!(be.check_interval_ms(), 2000);
}

#[test]
fn checklist_27_refusals() {
    check_backend(json!({}), Err(("type", "type is required")));
    check_backend(json!(null), Err(("type", "type is required")));
    check_backend(json!({"type":"foo"}), Err(("type", "type must be one of")));
    check_backend(
        json!({"type":"static","mode":"udp"}),
        Err(("mode", "mode must be one of")),
    );
    check_backend(
        json!({"type":"static","health":{"method":"PUT"}}),
        Err(("health.method", "method must be one of GET, POST")),
    );
    check_backend(
        json!({"type":"static","health":{"interval":0}}),
        Err(("health.interval", "between 1 and")),
    );
    check_backend(
        json!({"type":"static","health":{"interval":"abc"}}),
        Err(("health.interval", "interval must be a number")),
    );
    check_backend(
        json!({"type":"static","health":{"interval":1.5}}),
        Err(("health.interval", "interval must be a number")),
    );
    check_backend(
        json!({"type":"static","health":{"httpVersion":"HTTP/2"}}),
        Err(("health.httpVersion", "must be one of")),
    );
    check_backend(
        json!({"type":"static","role":"x"}),
        Err(("role", "role is not allowed")),
    );
    check_backend(
        json!({"type":"static","health":{"id":"x"}}),
        Err(("health.id", "id is not allowed")),
    );
    check_backend(
        json!({"type":"static","health":"x"}),
        Err(("health", "must be an object")),
    );
    check_backend(json!([1]), Err(("body", "JSON object")));
    check_frontend(json!({"backend":"b"}), Err(("bind", "bind is required")));
    check_frontend(
        json!({"bind":"  ","backend":"b"}),
        Err(("bind", "must not be empty")),
    );
    check_frontend(
        json!({"bind":":80"}),
        Err(("backend", "backend is required")),
    );
    check_frontend(
        json!({"bind":":80","backend":"b","keepalive":"x"}),
        Err(("keepalive", "must be one of")),
    );
    check_frontend(
        json!({"bind":":80","backend":"b","mode":"udp"}),
        Err(("mode", "must be one of")),
    );
    check_frontend(
        json!({"bind":":80","backend":"b","extra":1}),
        Err(("extra", "extra is not allowed")),
    );
    check_frontend(
        json!({"bind":80,"backend":"b"}),
        Err(("bind", "bind must be a string")),
    );
}

#[test]
fn round_trip_fields_are_ignored_and_the_path_key_wins() {
    let body = json!({"id":"frontend/other","_type":"frontend","key":"other",
        "waitingForBackend":true,"bind":":80","backend":"b"});
    let fe = frontend("fe", &body).unwrap();
    assert_eq!(fe.key, "fe");
    let row = rows::frontend_row(&fe, false);
    assert_eq!(frontend("fe", &row).unwrap(), fe);

    let be = backend(
        "be",
        &json!({"type":"static","health":{},"host":null,"members":[{"host":"10.10.10.10","port":"80","status":"UP"}]}),
    )
    .unwrap();
    let row = rows::backend_row(&be, &[]);
    assert_eq!(row["members"], json!([{"host":"10.10.10.10","port":"80"}]));
    assert_eq!(backend("be", &row).unwrap(), be);
}

#[test]
fn string_numbers_and_nulls() {
    let be = backend(
        "be",
        &json!({"type":"static","name":null,"health":{"interval":"5000"}}),
    )
    .unwrap();
    assert_eq!(be.check_interval_ms(), 5000);
    assert_eq!(be.name, None);
    check_backend(
        json!({"type":"static","health":{"interval":"5000ms"}}),
        Err(("health.interval", "must be a number")),
    );
}

#[test]
fn static_members() {
    let be = backend(
        "be",
        &json!({"type":"static","members":[{"host":"10.10.10.10","port":"80"},{"host":"::1","port":8080}]}),
    )
    .unwrap();
    assert_eq!(be.static_members.len(), 2);
    assert_eq!(be.static_members[1].port, 8080);
    check_backend(
        json!({"type":"static","members":[{"host":"example.com","port":80}]}),
        Err(("members[0].host", "IPv4 or IPv6")),
    );
    check_backend(
        json!({"type":"static","members":[{"port":80}]}),
        Err(("members[0].host", "required")),
    );
    check_backend(
        json!({"type":"static","members":[{"host":"10.0.0.1","port":0}]}),
        Err(("members[0].port", "between 1 and 65535")),
    );
    check_backend(
        json!({"type":"static","members":[{"host":"10.0.0.1","port":"65536"}]}),
        Err(("members[0].port", "between 1 and 65535")),
    );
    check_backend(
        json!({"type":"static","members":[{"host":"10.0.0.1","port":1},{"host":"10.0.0.1","port":"1"}]}),
        Err(("members[1]", "listed twice")),
    );
    check_backend(
        json!({"type":"static","members":["x"]}),
        Err(("members[0]", "must be an object")),
    );
    check_backend(
        json!({"type":"static","members":[{"host":"10.0.0.1","port":1,"note":"a\nb"}]}),
        Err(("members[0].note", "control characters")),
    );
    // A dynamic backend ignores members sent in the body (they come from the registry).
    let dynamic = backend("be", &json!({"type":"dynamic","members":[{"anything":1}]})).unwrap();
    assert!(dynamic.static_members.is_empty());
}

#[test]
fn rules() {
    let fe = frontend(
        "fe",
        &json!({"bind":":80","backend":"b","rules":[
            {"type":"path","operation":"path_beg","value":"/api","backend":"api"},
            {"type":"header","header":"host","operation":"hdr_dom","value":"example.com","backend":"web"}]}),
    )
    .unwrap();
    assert_eq!(
        rows::frontend_row(&fe, false)["rules"],
        json!([{"type":"path","operation":"path_beg","value":"/api","backend":"api"},
            {"type":"header","header":"host","operation":"hdr_dom","value":"example.com","backend":"web"}])
    );
    let rule = |r: Value| json!({"bind":":80","backend":"b","rules":[r]});
    check_frontend(
        rule(json!({"operation":"path","value":"/","backend":"x"})),
        Err(("rules[0].type", "required")),
    );
    check_frontend(
        rule(json!({"type":"cookie","operation":"path","value":"/","backend":"x"})),
        Err(("rules[0].type", "must be one of")),
    );
    check_frontend(
        rule(json!({"type":"path","operation":"hdr_dom","value":"/","backend":"x"})),
        Err(("rules[0].operation", "must be one of")),
    );
    check_frontend(
        rule(json!({"type":"path","operation":"path","value":"","backend":"x"})),
        Err(("rules[0].value", "must not be empty")),
    );
    check_frontend(
        rule(json!({"type":"path","operation":"path","value":"/"})),
        Err(("rules[0].backend", "required")),
    );
    check_frontend(
        rule(json!({"type":"path","operation":"path","value":"/","backend":"x y"})),
        Err(("rules[0].backend", "backend may only contain")),
    );
    check_frontend(
        rule(json!({"type":"header","operation":"hdr","value":"/","backend":"x"})),
        Err(("rules[0].header", "required")),
    );
    check_frontend(
        rule(json!({"type":"header","header":"a b","operation":"hdr","value":"/","backend":"x"})),
        Err(("rules[0].header", "header name")),
    );
    check_frontend(
        rule(json!({"type":"path","header":"h","operation":"path","value":"/","backend":"x"})),
        Err(("rules[0].header", "only allowed")),
    );
    check_frontend(
        rule(json!({"type":"path","operation":"path","value":"/","backend":"x","weight":1})),
        Err(("rules[0].weight", "not allowed")),
    );
    check_frontend(rule(json!("x")), Err(("rules[0]", "must be an object")));
    check_frontend(
        json!({"bind":":80","backend":"b","mode":"tcp","rules":[{"type":"path","operation":"path","value":"/","backend":"x"}]}),
        Err(("rules", "need mode http")),
    );
}

#[test]
fn keys_are_proxy_names() {
    assert!(key("mysql-backend_1.0:a").is_ok());
    for bad in ["", "a b", "a\nb", "a/b", "a#b", "é", &"k".repeat(129)] {
        assert_eq!(
            key(bad).unwrap_err().field.as_deref(),
            Some("key"),
            "{bad:?}"
        );
    }
}

#[test]
fn newlines_are_refused_in_every_string_field() {
    let frontend_base = json!({"bind":":80","backend":"b","mode":"http","keepalive":"default",
        "natives":["option forwardfor"],
        "rules":[{"type":"header","header":"host","operation":"hdr_dom","value":"v","backend":"r"}]});
    for field in [
        "bind",
        "backend",
        "mode",
        "keepalive",
        "natives[0]",
        "rules[0].type",
        "rules[0].header",
        "rules[0].operation",
        "rules[0].value",
        "rules[0].backend",
    ] {
        for smuggled in ["\n", "\r", "\u{0}", "\t", "\u{85}"] {
            let body = poison(&frontend_base, field, smuggled);
            let err = frontend("fe", &body).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(field), "{body}");
        }
    }
    let backend_base = json!({"type":"static","name":"n","version":"1","balance":"roundrobin",
        "host":"h","mode":"http","natives":["option forwardfor"],
        "members":[{"host":"10.0.0.1","port":"80"}],
        "health":{"method":"GET","uri":"/","httpVersion":"HTTP/1.0","interval":"5"}});
    for field in [
        "type",
        "name",
        "version",
        "balance",
        "host",
        "mode",
        "natives[0]",
        "members[0].host",
        "members[0].port",
        "health.method",
        "health.uri",
        "health.httpVersion",
        "health.interval",
    ] {
        let body = poison(&backend_base, field, "\nbackend evil");
        let err = backend("be", &body).unwrap_err();
        assert_eq!(err.field.as_deref(), Some(field), "{body}");
    }
    let err = version_switch(&json!({"version":"1\n"})).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("version"));
}

/// Appends `suffix` to the string at a dotted path such as `rules[0].value`.
fn poison(base: &Value, path: &str, suffix: &str) -> Value {
    let mut body = base.clone();
    let mut target = &mut body;
    for part in path.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        target = &mut target[name];
        if let Some(i) = index {
            target = &mut target[i];
        }
    }
    let text = target.as_str().unwrap().to_owned();
    *target = Value::String(format!("{text}{suffix}"));
    body
}

#[test]
fn natives_are_single_lines_that_open_no_section() {
    let fe =
        |natives: Value| frontend("fe", &json!({"bind":":80","backend":"b","natives":natives}));
    assert_eq!(
        fe(json!(["http-request set-header X-Foo \"bar\" # & < >"]))
            .unwrap()
            .natives,
        vec!["http-request set-header X-Foo \"bar\" # & < >"]
    );
    assert_eq!(
        fe(json!(["  backend evil"])).unwrap_err().field.as_deref(),
        Some("natives[0]")
    );
    assert_eq!(
        fe(json!(["ok", "listen x"])).unwrap_err().field.as_deref(),
        Some("natives[1]")
    );
    assert_eq!(
        fe(json!([1])).unwrap_err().field.as_deref(),
        Some("natives[0]")
    );
    assert_eq!(
        fe(json!("x")).unwrap_err().field.as_deref(),
        Some("natives")
    );
}

#[test]
fn balance_and_host() {
    check_backend(
        json!({"type":"static","balance":"fastest"}),
        Err(("balance", "not one of")),
    );
    check_backend(
        json!({"type":"static","balance":"uri","mode":"tcp"}),
        Err(("balance", "needs mode http")),
    );
    check_backend(
        json!({"type":"static","host":"a b"}),
        Err(("host", "host name")),
    );
    check_backend(
        json!({"type":"static","host":"a\"b"}),
        Err(("host", "host name")),
    );
    check_backend(
        json!({"type":"static","health":{"uri":"/a b"}}),
        Err(("health.uri", "uri must be")),
    );
    check_backend(
        json!({"type":"static","health":{"uri":"/#x"}}),
        Err(("health.uri", "uri must be")),
    );
    check_backend(
        json!({"type":"dynamic","name":"a/b"}),
        Err(("name", "name must not contain '/'")),
    );
}

#[test]
fn version_switches() {
    assert_eq!(
        version_switch(&json!({"version":"2.0.0","key":"ignored"})).unwrap(),
        VersionSwitch {
            name: None,
            version: "2.0.0".into()
        }
    );
    assert_eq!(
        version_switch(&json!({"name":"other","version":"1.0.0"}))
            .unwrap()
            .name
            .as_deref(),
        Some("other")
    );
    assert_eq!(
        version_switch(&json!({})).unwrap_err().field.as_deref(),
        Some("version")
    );
    assert_eq!(
        version_switch(&json!({"version":"1","x":1}))
            .unwrap_err()
            .field
            .as_deref(),
        Some("x")
    );
}

fn arbitrary_json() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[ -~\n\t\u{0}é]{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("dynamic"),
            Just("static"),
            Just("http"),
            Just("tcp"),
            Just("HTTP/1.1"),
            Just("5000"),
            Just("10.0.0.1"),
            Just("source"),
            Just("path"),
            Just("header"),
            Just("hdr_dom"),
            Just("path_beg")
        ]
        .prop_map(Value::from),
    ];
    let names = prop_oneof![
        Just("type"),
        Just("bind"),
        Just("backend"),
        Just("mode"),
        Just("keepalive"),
        Just("rules"),
        Just("natives"),
        Just("name"),
        Just("version"),
        Just("balance"),
        Just("host"),
        Just("members"),
        Just("health"),
        Just("method"),
        Just("uri"),
        Just("httpVersion"),
        Just("interval"),
        Just("port"),
        Just("operation"),
        Just("value"),
        Just("header"),
        Just("key"),
        Just("id"),
        Just("zz")
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((names.clone(), inner), 0..7).prop_map(|pairs| {
                Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

proptest::proptest! {
    #[test]
    fn arbitrary_bodies_never_panic(body in arbitrary_json()) {
        // Whatever the outcome, an accepted value renders without control characters.
        if let Ok(fe) = frontend("fe", &body) {
            let row = rows::frontend_row(&fe, false).to_string();
            proptest::prop_assert!(!row.contains('\n'));
        }
        if let Ok(be) = backend("be", &body) {
            proptest::prop_assert!(be.natives.iter().all(|n| !n.contains('\n')));
        }
        let _ = version_switch(&body);
    }
}
