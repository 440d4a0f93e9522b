//! Keeps the OpenAPI documents in step with the routers, both ways: every `.route(...)` in the
//! routers' source is documented with the same methods, and every documented operation answers
//! on a live stack (with real HAProxy) with something other than "no route" / 405.

#![allow(clippy::unwrap_used)] // a panic is a test failure

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use support::{Stack, client, require_haproxy};

const METHODS: [&str; 4] = ["get", "put", "post", "delete"];

/// `(path, method)` of every `.route(...)` in a router's source. Axum's `{*rest}` wildcard
/// is OpenAPI's `{rest}`.
fn routes_in_source(file: &str) -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut routes = BTreeSet::new();
    for chunk in text.split(".route(").skip(1) {
        // The route's own text ends where the next builder call starts.
        let own = chunk
            .split("\n        .")
            .next()
            .unwrap_or(chunk)
            .split(".with_state")
            .next()
            .unwrap_or(chunk);
        let path = own.split('"').nth(1).unwrap().replace("{*", "{");
        for method in METHODS {
            let called = own.contains(&format!("{method}("))
                && own
                    .split(&format!("{method}("))
                    .next()
                    .is_some_and(|before| !before.ends_with('_'));
            if called {
                routes.insert((path.clone(), method.to_owned()));
            }
        }
    }
    routes
}

fn documented(doc: &str) -> BTreeSet<(String, String)> {
    let doc: Value = serde_json::from_str(doc).unwrap();
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_some() {
                ops.insert((path.clone(), method.to_owned()));
            }
        }
    }
    ops
}

fn assert_same(
    what: &str,
    in_source: &BTreeSet<(String, String)>,
    in_doc: &BTreeSet<(String, String)>,
) {
    let undocumented: Vec<_> = in_source.difference(in_doc).collect();
    let stale: Vec<_> = in_doc.difference(in_source).collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "{what}: routes missing from openapi: {undocumented:?}; documented but not routed: {stale:?}"
    );
}

#[test]
fn the_source_scan_finds_the_routes() {
    let registry = routes_in_source("src/registry/routes.rs");
    assert!(registry.contains(&(
        "/registrations/{name}/{version}/{host}/{port}".into(),
        "post".into()
    )));
    assert!(registry.contains(&(
        "/registrations/{name}/{version}/{host}/{port}".into(),
        "delete".into()
    )));
    assert!(!registry.contains(&("/registrations".into(), "post".into())));
    let aqueduct = routes_in_source("src/aqueduct/routes.rs");
    assert!(aqueduct.contains(&("/backends/{key}".into(), "post".into())));
    assert!(aqueduct.len() >= 10, "{aqueduct:?}");
}

#[test]
fn the_registry_document_matches_its_router() {
    assert_same(
        "registry",
        &routes_in_source("src/registry/routes.rs"),
        &documented(thalassa::openapi::REGISTRY),
    );
}

#[test]
fn the_aqueduct_document_matches_its_routers() {
    let mut routes = routes_in_source("src/aqueduct/routes.rs");
    routes.extend(routes_in_source("src/ui/mod.rs"));
    assert_same(
        "aqueduct",
        &routes,
        &documented(thalassa::openapi::AQUEDUCT),
    );
}

/// A documented path with each parameter replaced by its example.
fn concrete(doc: &Value, path: &str) -> String {
    let mut out = path.to_owned();
    let item = &doc["paths"][path];
    let mut params: Vec<Value> = item["parameters"].as_array().cloned().unwrap_or_default();
    for method in METHODS {
        params.extend(
            item[method]["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
    }
    for param in params {
        let param = match param.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let name = reference.rsplit('/').next().unwrap();
                doc["components"]["parameters"][name].clone()
            }
            None => param,
        };
        if param["in"] == "path" {
            let name = param["name"].as_str().unwrap();
            let example = param["example"].as_str().unwrap_or("x");
            out = out.replace(&format!("{{{name}}}"), example);
        }
    }
    out
}

async fn every_operation_answers(base: &str, doc_text: &str) {
    let doc: Value = serde_json::from_str(doc_text).unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    for (path, method) in documented(doc_text) {
        let url = format!("{base}{}", concrete(&doc, &path));
        let streaming = doc["paths"][&path][&method]["x-streaming"] == true;
        let request = match method.as_str() {
            "get" => http.get(&url),
            "put" => http.put(&url).body("{}"),
            "post" => http.post(&url).body("{}"),
            "delete" => http.delete(&url),
            _ => unreachable!(),
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        if streaming {
            assert_eq!(status, 200, "{method} {url}");
            continue; // an endless stream: the status line is the answer
        }
        let body = response.text().await.unwrap();
        assert_ne!(status, 405, "{method} {url}: documented but not allowed");
        assert!(
            !body.contains("no route for"),
            "{method} {url}: documented but not routed: {status} {body}"
        );
        assert!(status < 500, "{method} {url}: {status} {body}");
    }
}

#[tokio::test]
async fn every_documented_operation_answers_on_a_live_stack() {
    if !require_haproxy() {
        return;
    }
    let stack = Stack::start().await;
    for (base, doc) in [
        (&stack.registry, thalassa::openapi::REGISTRY),
        (&stack.aqueduct, thalassa::openapi::AQUEDUCT),
    ] {
        let served: Value = client()
            .get(format!("{base}/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(served, serde_json::from_str::<Value>(doc).unwrap());
        every_operation_answers(base, doc).await;
    }
}
