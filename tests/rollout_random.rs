//! A seeded random history of rollout commands and registrations against a real HAProxy,
//! checking the rollout promises after every step (`src/lib.rs`, README "Progressive
//! delivery"):
//! - HAProxy holds exactly the members of the versions the backend follows (its own, and the
//!   rollout's while one is running or paused), each ready with the weight the split gives it
//!   (HAProxy's default, 1, outside a rollout);
//! - the API's rollout state is the model's (refused commands change nothing);
//! - nothing reloads HAProxy, whatever the history.
//!
//! Replay a failure with `ROLLOUT_SEED=<seed printed in the failure>`.

#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use support::{Origin, Rng, eventually, require_haproxy, seed_from_env, stack_with_backend};
use thalassa::config::rollout::split_weights;
use thalassa::haproxy::runtime::RuntimeClient;
use thalassa::haproxy::stat::AdminState;

const STEPS: usize = 60;
const WAIT: Duration = Duration::from_secs(20);

/// What the backend should be, as the test keeps it.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    version: &'static str,
    /// The rollout's share while one is running or paused.
    rollout: Option<(u8, bool)>,
    registered: BTreeMap<u16, &'static str>,
}

impl Model {
    fn other(&self) -> &'static str {
        if self.version == "1" { "2" } else { "1" }
    }

    /// Port -> the weight HAProxy should give it.
    fn expected(&self) -> BTreeMap<u16, u16> {
        let target = self.other();
        let count = |v: &str| self.registered.values().filter(|r| **r == v).count();
        self.registered
            .iter()
            .filter_map(|(port, version)| match self.rollout {
                None => (*version == self.version).then_some((*port, 1)),
                Some((share, _)) => {
                    let (old, new) = split_weights(share, count(self.version), count(target));
                    let weight = if *version == target { new } else { old };
                    Some((*port, weight))
                }
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_rollout_histories_keep_the_promises() {
    if !require_haproxy() {
        return;
    }
    let seed = seed_from_env("ROLLOUT_SEED");
    println!("ROLLOUT_SEED={seed}");
    let mut rng = Rng(seed);
    let (stack, _port) = stack_with_backend(
        "app",
        r#"{"type":"dynamic","name":"app","version":"1","mode":"http","stickyCookie":"SRV","health":{"interval":100}}"#,
    )
    .await;
    let mut origins = Vec::new();
    for version in ["1", "1", "1", "2", "2", "2"] {
        origins.push((Origin::start(&format!("v{version}")).await, version));
    }
    let mut model = Model {
        version: "1",
        rollout: None,
        registered: BTreeMap::new(),
    };
    for (origin, version) in [&origins[0], &origins[3]] {
        stack.register_origin("app", version, origin).await;
        model.registered.insert(origin.port(), version);
    }
    settled(&stack, &model, seed, "start").await;
    let reloads = stack.metric_total("thalassa_haproxy_reloads_total").await;

    for step in 0..STEPS {
        let what = match rng.below(8) {
            0 | 1 => {
                let (origin, version) = &origins[rng.below(origins.len() as u64) as usize];
                if model.registered.remove(&origin.port()).is_some() {
                    stack
                        .deregister(&format!("app/{version}/127.0.0.1/{}", origin.port()))
                        .await;
                    format!("deregister {version}:{}", origin.port())
                } else {
                    stack.register_origin("app", version, origin).await;
                    model.registered.insert(origin.port(), version);
                    format!("register {version}:{}", origin.port())
                }
            }
            2..=4 => {
                let share = [0u8, 5, 25, 50, 75, 95, 100][rng.below(7) as usize];
                let target = model.other();
                let body = format!(r#"{{"version":"{target}","weight":{share}}}"#);
                let (status, row) = post(&stack, "/backends/app/rollout", &body).await;
                assert_eq!(status, 200, "seed {seed} step {step}: {body}: {row}");
                if share == 100 {
                    model.version = target;
                    model.rollout = None;
                } else {
                    // A new weight is a new instruction: a paused rollout runs again.
                    model.rollout = Some((share, false));
                }
                format!("rollout {target} {share}%")
            }
            other => {
                let action = ["pause", "resume", "abort", "promote"]
                    [other as usize - 5 + rng.below(2) as usize];
                let (status, row) =
                    post(&stack, &format!("/backends/app/rollout/{action}"), "{}").await;
                let allowed = matches!(
                    (action, model.rollout),
                    ("pause", Some((_, false)))
                        | ("resume", Some((_, true)))
                        | ("abort" | "promote", Some(_))
                );
                assert_eq!(
                    status,
                    if allowed { 200 } else { 409 },
                    "seed {seed} step {step}: {action} with {model:?}: {row}"
                );
                if allowed {
                    match action {
                        "pause" | "resume" => {
                            let (share, paused) = model.rollout.unwrap();
                            model.rollout = Some((share, !paused));
                        }
                        "abort" => model.rollout = None,
                        _ => {
                            model.version = model.other();
                            model.rollout = None;
                        }
                    }
                }
                action.to_owned()
            }
        };
        settled(&stack, &model, seed, &format!("step {step}: {what}")).await;
    }
    assert_eq!(
        stack.metric_total("thalassa_haproxy_reloads_total").await,
        reloads,
        "seed {seed}: rollouts and registrations must not reload HAProxy"
    );
}

/// Waits until HAProxy and the API agree with the model.
async fn settled(stack: &support::Stack, model: &Model, seed: u64, step: &str) {
    let client = RuntimeClient::new(stack.admin_socket());
    let expected = model.expected();
    let what = format!("seed {seed} {step}: HAProxy to hold {expected:?} ({model:?})");
    eventually(WAIT, &what, || async {
        let rows = client.show_servers_state(Some("app")).await.ok()?;
        let held: BTreeMap<u16, u16> = rows
            .iter()
            .filter(|r| r.admin_state() == AdminState::Ready)
            .filter_map(|r| Some((r.port?, u16::try_from(r.weight).ok()?)))
            .collect();
        if held != expected || rows.len() != expected.len() {
            return None;
        }
        let row = stack.get_json("/backends/app").await;
        let state = row["rollout"]["state"].as_str().unwrap_or("none");
        let expected_state = match model.rollout {
            Some((_, true)) => "paused",
            Some((_, false)) => "running",
            None => state_when_ended(state),
        };
        let weight_right = model
            .rollout
            .is_none_or(|(share, _)| row["rollout"]["weight"] == share);
        (row["version"] == model.version && state == expected_state && weight_right).then_some(())
    })
    .await;
}

/// Outside a rollout the API shows the last one ended (or none).
fn state_when_ended(state: &str) -> &'static str {
    match state {
        "aborted" => "aborted",
        "finished" => "finished",
        _ => "none",
    }
}

async fn post(stack: &support::Stack, path: &str, body: &str) -> (u16, Value) {
    let (status, text) = stack.aqueduct_post(path, body).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}
