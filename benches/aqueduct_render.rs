//! How long rendering and validation take at sizes beyond any walkthrough: prints numbers,
//! asserts nothing. `cargo bench --bench aqueduct_render`.

use serde_json::json;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use thalassa::aqueduct::validate;
use thalassa::config::Config;
use thalassa::haproxy::render::{RenderMember, RenderMembers, RenderSettings, render};

#[path = "common/run_mode.rs"]
mod run_mode;

fn config(
    frontends: usize,
    backends: usize,
    members_per_backend: usize,
) -> (Config, RenderMembers) {
    let mut config = Config::default();
    let mut members = RenderMembers::new();
    for b in 0..backends {
        let key = format!("backend-{b}");
        let body = json!({"type":"dynamic","name":key,"version":"1.0.0","balance":"source",
            "health":{"interval":"5000"},"natives":["option forwardfor"]});
        config.backends.insert(
            key.clone(),
            validate::backend(&key, &body).expect("valid backend"),
        );
        let list = (0..members_per_backend)
            .map(|m| RenderMember {
                host: std::net::Ipv4Addr::new(
                    10,
                    (b % 250) as u8,
                    (m / 250) as u8,
                    (m % 250) as u8,
                )
                .into(),
                port: 8080,
                id: Some(m as u32 + 1),
                weight: 1,
            })
            .collect();
        members.set(&key, list);
    }
    for f in 0..frontends {
        let key = format!("frontend-{f}");
        let body = json!({"bind": format!("127.0.0.1:{}", 20000 + f), "backend": format!("backend-{}", f % backends.max(1)),
            "rules":[{"type":"path","operation":"path_beg","value":"/api","backend":"backend-0"}]});
        config.frontends.insert(
            key.clone(),
            validate::frontend(&key, &body).expect("valid frontend"),
        );
    }
    (config, members)
}

fn time<T>(iterations: u32, mut f: impl FnMut() -> T) -> Duration {
    let started = Instant::now();
    for _ in 0..iterations {
        black_box(f());
    }
    started.elapsed() / iterations
}

fn main() {
    let Some(mode) = run_mode::run_mode("aqueduct_render") else {
        return;
    };
    // A smoke run renders each size once or twice: it checks the bench runs, not its speed.
    let scale = |iterations: u32| mode.pick(iterations, iterations.div_ceil(100));
    let settings = RenderSettings::new(
        PathBuf::from("/run/admin.sock"),
        PathBuf::from("/run/state"),
    );
    for (frontends, backends, members, iterations) in [
        (2, 2, 1, 2000),
        (10, 10, 10, 500),
        (100, 100, 10, 100),
        (100, 100, 100, 20),
    ] {
        let (config, render_members) = config(frontends, backends, members);
        let text = render(&config, &render_members, &settings);
        let per_render = time(scale(iterations), || {
            render(&config, &render_members, &settings)
        });
        println!(
            "render {frontends} frontends, {backends} backends x {members} members: {:>9.1} us, {} bytes",
            per_render.as_secs_f64() * 1e6,
            text.len()
        );
    }
    let body = json!({"type":"dynamic","name":"webapp-backend","version":"1.0.0","balance":"source",
        "mode":"http","health":{"interval":"5000"}});
    let per_validate = time(scale(20_000), || validate::backend("webapp-backend", &body));
    println!(
        "validate a walkthrough backend body: {:.2} us",
        per_validate.as_secs_f64() * 1e6
    );
}
