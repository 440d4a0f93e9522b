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

mod never_panics {
    use super::super::super::parse;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    const FIXTURE: &str =
        include_str!("../../../../tests/fixtures/aqueduct/original-persistence.json");

    /// Fields of the original's rows, nested ones with a dot (the first element of an array).
    const FIELDS: &[&str] = &[
        "id",
        "_type",
        "key",
        "bind",
        "backend",
        "mode",
        "keepalive",
        "rules",
        "natives",
        "type",
        "name",
        "version",
        "balance",
        "host",
        "members",
        "health",
        "rules.type",
        "rules.header",
        "rules.operation",
        "rules.value",
        "rules.backend",
        "members.host",
        "members.port",
        "health.method",
        "health.uri",
        "health.httpVersion",
        "health.interval",
        "natives.0",
    ];

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            "[0-9]{0,12}".prop_map(Value::from),
            any::<String>().prop_map(Value::from),
            "[a-z_]{1,8}( [a-z\\\\:-]{1,8}){0,3}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn set(row: &mut Value, field: &str, value: Value) {
        let (top, nested) = match field.split_once('.') {
            Some((top, nested)) => (top, Some(nested)),
            None => (field, None),
        };
        let Some(object) = row.as_object_mut() else {
            return;
        };
        match nested {
            None => {
                object.insert(top.to_owned(), value);
            }
            Some(nested) => match object.get_mut(top) {
                Some(Value::Array(items)) if !items.is_empty() => match &mut items[0] {
                    Value::Object(inner) => {
                        inner.insert(nested.to_owned(), value);
                    }
                    other => *other = value,
                },
                Some(Value::Object(inner)) => {
                    inner.insert(nested.to_owned(), value);
                }
                _ => {}
            },
        }
    }

    proptest! {
        #[test]
        fn mutated_rows_of_an_original_file_are_items_never_panics(
            mutations in prop::collection::vec(
                (0..8usize, prop::sample::select(FIELDS), json_value()),
                1..5,
            ),
        ) {
            let mut file: Value = serde_json::from_str(FIXTURE).unwrap();
            for (row, field, value) in mutations {
                let (list, index) = if row < 4 { ("frontends", row) } else { ("backends", row - 4) };
                set(&mut file[list][index], field, value);
            }
            let items = parse(file.to_string().as_bytes()).unwrap();
            prop_assert_eq!(items.len(), 8);
        }

        #[test]
        fn arbitrary_bytes_are_an_error_or_items(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse(&bytes);
        }
    }
}
