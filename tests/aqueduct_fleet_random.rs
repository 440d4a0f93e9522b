//! A seeded random history against a real fleet (three aqueducts on one real Redis, each with
//! its real HAProxy): writes of backends on random nodes, some of them concurrent on one item,
//! and after every step the fleet's promises (`src/lib.rs`, "Scale-out") are checked:
//!
//! - every acknowledged write is in the fleet's config in the order of the versions it was
//!   given, and nothing else is: a 409 never applies;
//! - every node converges on the store's version (no lag, outcome `applied`) and serves exactly
//!   that config (`GET /backends` on each node equals the model);
//! - versions only grow, one per acknowledged write.
//!
//! `THALASSA_FLEET_SEED=<n>` replays a run (the seed is printed first).
#![allow(clippy::unwrap_used)] // test helpers: a panic is a test failure

mod fleet_support;
mod redis_support;
mod support;

use fleet_support::{Node, fleet_view, put, request, start_fleet};
use redis_support::require_redis;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use support::{Rng, eventually, require_haproxy, seed_from_env};

/// What the fleet must hold: backend key -> its member's port.
type Model = BTreeMap<String, u64>;

fn backend(port: u64) -> Value {
    json!({"type": "static", "mode": "http", "members": [{"host": "127.0.0.1", "port": port}]})
}

/// One write's outcome: the version it was given (200), or none (409).
#[derive(Debug)]
enum Outcome {
    Applied(u64),
    Conflict,
}

async fn write(node: &Node, key: &str, port: Option<u64>) -> Outcome {
    let (status, answer) = match port {
        Some(port) => put(node, &format!("/backends/{key}"), backend(port)).await,
        None => {
            request(
                reqwest::Method::DELETE,
                &format!("{}/backends/{key}", node.api),
                None,
            )
            .await
        }
    };
    match status {
        200 => Outcome::Applied(answer["version"].as_u64().unwrap()),
        409 => {
            assert_eq!(answer["field"], "key", "{answer}");
            Outcome::Conflict
        }
        _ => panic!("{} {key}: {status} {answer}", node.id),
    }
}

/// `GET /backends` of a node as the model's shape.
async fn served(node: &Node) -> Model {
    let (status, rows) = request(
        reqwest::Method::GET,
        &format!("{}/backends", node.api),
        None,
    )
    .await;
    assert_eq!(status, 200, "{rows}");
    rows.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let key = row["key"].as_str().unwrap().to_owned();
            let port = row["members"][0]["port"].as_u64().unwrap();
            (key, port)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_writes_on_random_nodes_keep_the_fleets_promises() {
    if !require_haproxy() || !require_redis() {
        return;
    }
    let seed = seed_from_env("THALASSA_FLEET_SEED");
    println!("THALASSA_FLEET_SEED={seed}");
    let mut rng = Rng(seed);
    let fleet = start_fleet(3).await;
    let nodes = &fleet.nodes;
    let mut model = Model::new();
    let mut last_version = 0;
    let keys = ["alpha", "beta", "gamma", "delta"];
    for step in 0..30 {
        let key = keys[rng.below(keys.len() as u64) as usize];
        let mut applied: Vec<(u64, Option<u64>)> = Vec::new();
        if rng.below(3) == 0 {
            // Two nodes write the same item at once.
            let (a, b) = (rng.below(3) as usize, (1 + rng.below(2)) as usize);
            let b = (a + b) % 3;
            let (port_a, port_b) = (2000 + rng.below(1000), 3000 + rng.below(1000));
            let (first, second) = tokio::join!(
                write(&nodes[a], key, Some(port_a)),
                write(&nodes[b], key, Some(port_b)),
            );
            println!(
                "step {step}: {key} on {} and {} at once: {first:?} {second:?}",
                nodes[a].id, nodes[b].id
            );
            for (outcome, port) in [(first, port_a), (second, port_b)] {
                if let Outcome::Applied(version) = outcome {
                    applied.push((version, Some(port)));
                }
            }
            assert!(
                !applied.is_empty(),
                "step {step}: both concurrent writes were refused"
            );
        } else {
            let node = &nodes[rng.below(3) as usize];
            let delete = model.contains_key(key) && rng.below(4) == 0;
            let port = (!delete).then(|| 1000 + rng.below(9000));
            let outcome = write(node, key, port).await;
            println!("step {step}: {key} -> {port:?} on {}: {outcome:?}", node.id);
            match outcome {
                Outcome::Applied(version) => applied.push((version, port)),
                // Alone, a write conflicts only when its node had not yet applied an earlier
                // change of the same item; the model is unchanged either way.
                Outcome::Conflict => {}
            }
        }
        applied.sort_unstable();
        for (version, port) in applied {
            assert_eq!(
                version,
                last_version + 1,
                "step {step}: versions grow one per write"
            );
            last_version = version;
            match port {
                Some(port) => model.insert(key.to_owned(), port),
                None => model.remove(key),
            };
        }
        // Every node converges on the last version and serves exactly the model.
        for node in nodes {
            let what = format!("step {step}: {} on version {last_version}", node.id);
            eventually(Duration::from_secs(15), &what, || async {
                let view = fleet_view(node).await;
                let rows = view["nodes"].as_array()?;
                (view["version"] == last_version
                    && rows.len() == 3
                    && rows
                        .iter()
                        .all(|n| n["version"] == last_version && n["outcome"] == "applied"))
                .then_some(())
            })
            .await;
            assert_eq!(
                served(node).await,
                model,
                "step {step}: {} (seed {seed})",
                node.id
            );
        }
    }
}
