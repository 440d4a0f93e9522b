use super::*;
use serde_json::json;

/// The item a row becomes: its outcome's state, and its notes.
fn check(kind: ItemKind, row: Value, expected_notes: &[&str]) -> Item {
    let item = item(kind, "rows[0]", &row);
    assert_eq!(item.conversions.len(), expected_notes.len(), "{item:#?}");
    for (note, expected) in item.conversions.iter().zip(expected_notes) {
        assert!(note.contains(expected), "{note:?} lacks {expected:?}");
    }
    item
}

#[test]
fn an_original_frontend_row_with_nothing_to_convert_is_imported_as_is() {
    let item = check(
        ItemKind::Frontend,
        json!({"id":"frontend/db","_type":"frontend","key":"db","bind":"*:3306",
               "backend":"db","mode":"tcp","keepalive":"close","rules":[],"natives":[]}),
        &[],
    );
    let ItemState::Frontend(frontend) = item.state else {
        panic!("{item:?}")
    };
    assert_eq!(
        (frontend.key.as_str(), frontend.bind.as_str()),
        ("db", "*:3306")
    );
}

#[test]
fn keepalive_settings_name_what_replaces_the_original_lines() {
    let row = |keepalive: &str, rules: Value| json!({"key":"web","bind":":80","backend":"b","keepalive":keepalive,"rules":rules});
    let rule = json!([{"type":"path","operation":"path_beg","value":"/a","backend":"b"}]);
    check(
        ItemKind::Frontend,
        row("close", json!([])),
        &["\"option forceclose\", removed in HAProxy 2.0; rendered as \"option httpclose\""],
    );
    check(
        ItemKind::Frontend,
        row("server-close", json!([])),
        &["http-pretend-keepalive"],
    );
    check(ItemKind::Frontend, row("default", rule), &["with rules"]);
    check(ItemKind::Frontend, row("default", json!([])), &[]);
}

#[test]
fn rules_of_types_the_original_never_rendered_are_dropped() {
    let item = check(
        ItemKind::Frontend,
        json!({"key":"web","bind":":80","backend":"b","rules":[
            {"type":"cookie","operation":"x","value":"y","backend":"c"},
            {"type":"url","operation":"url_reg","value":"^/v[12]/","backend":"c"}]}),
        &[
            "rules[0] (type \"cookie\") dropped",
            "keepalive \"default\" with rules",
        ],
    );
    let ItemState::Frontend(frontend) = item.state else {
        panic!("{item:?}")
    };
    assert_eq!(frontend.rules.len(), 1);
    assert_eq!(frontend.rules[0].operation, "url_reg");
}

#[test]
fn dynamic_members_are_dropped_and_string_numbers_become_numbers() {
    let item = check(
        ItemKind::Backend,
        json!({"id":"backend/web","_type":"backend","key":"web","type":"dynamic","name":"web",
               "version":"1.0.0","balance":"roundrobin","host":"web.example.com","mode":"http",
               "members":[{"name":"web","version":"1.0.0","host":"10.0.0.1","port":8080,
                           "lastKnown":1,"meta":{},"id":"/web/1.0.0/10.0.0.1/8080"}],
               "natives":[],
               "health":{"method":"GET","uri":"/ping","httpVersion":"HTTP/1.1","interval":"5000"}}),
        &[
            "1 stored registration(s) dropped",
            "health.interval \"5000\" stored as the number 5000",
            "http-request set-header Host web.example.com",
            "http-check send meth GET uri /ping ver HTTP/1.1 hdr Host web.example.com",
        ],
    );
    let ItemState::Backend(backend) = item.state else {
        panic!("{item:?}")
    };
    assert!(backend.static_members.is_empty());
    assert_eq!(backend.check_interval_ms(), 5000);

    let item = check(
        ItemKind::Backend,
        json!({"key":"files","type":"static","host":null,"mode":"http",
               "members":[{"host":"127.0.0.1","port":"9001"},{"host":"127.0.0.2","port":9002}]}),
        &["members[0].port \"9001\" stored as the number 9001"],
    );
    let ItemState::Backend(backend) = item.state else {
        panic!("{item:?}")
    };
    assert_eq!(backend.static_members[0].as_sent["port"], json!(9001));
    assert_eq!(backend.host, None);
}

#[test]
fn invalid_rows_are_refused_naming_the_field() {
    for (kind, row, expected) in [
        (
            ItemKind::Backend,
            json!({"key":"b","type":"static","balance":"fastest"}),
            "balance:",
        ),
        (
            ItemKind::Backend,
            json!({"key":"b","type":"static","members":[{"host":"db1.internal","port":5432}]}),
            "members[0].host: host must be an IPv4 or IPv6 address (the original let HAProxy \
             resolve",
        ),
        (
            ItemKind::Frontend,
            json!({"key":"f","backend":"b"}),
            "bind: bind is required",
        ),
        (
            ItemKind::Frontend,
            json!("frontend/f"),
            "rows[0] is not an object",
        ),
        (
            ItemKind::Backend,
            json!({"type":"static"}),
            "rows[0] has no string \"key\"",
        ),
    ] {
        let item = item(kind, "rows[0]", &row);
        match &item.state {
            ItemState::Refused(error) => assert!(error.contains(expected), "{error}"),
            other => panic!("{row}: {other:?}"),
        }
        assert!(item.conversions.is_empty());
    }
}

#[test]
fn garbage_files_are_errors_never_panics() {
    use super::super::parse;
    for (bytes, expected) in [
        (
            &b""[..],
            "not valid JSON: EOF while parsing a value at line 1 column 0",
        ),
        (
            b"{\"version\":1,\n\"frontends\":[",
            "not valid JSON: EOF while parsing a list at line 2 column 13",
        ),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1,2]", "not a JSON object"),
        (b"{\"frontends\":[]}", "no \"version\""),
        (b"{\"version\":\"1\"}", "unsupported version"),
        (
            b"{\"version\":2,\"frontends\":[]}",
            "already in this aqueduct's own format",
        ),
        (
            b"{\"version\":1,\"backends\":{}}",
            "\"backends\" is not an array",
        ),
    ] {
        let err = parse(bytes).unwrap_err();
        assert!(err.contains(expected), "{err}");
    }
    // Rows of any shape are items, refused or not, never a panic.
    let items = parse(
        br#"{"version":1,"frontends":[null,1,[],{"key":7},{"key":"a","bind":{}}],
            "backends":[{"key":"b","type":"static","members":[1,{"port":"x"}]},
                        {"key":"b","type":"static"},{"key":"b","type":"static"}]}"#,
    )
    .unwrap();
    assert_eq!(items.len(), 8);
    let refused: Vec<bool> = items.iter().map(Item::is_refused).collect();
    assert_eq!(refused, [true, true, true, true, true, true, false, true]);
    assert!(matches!(&items[7].state, ItemState::Refused(e) if e.contains("appears twice")));
}
