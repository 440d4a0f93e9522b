//! Runtime API latency through `RuntimeClient` against a real HAProxy (loopback only), plus
//! parser throughput and reload time. Prints medians and tails; asserts nothing.
//!
//! cargo bench --bench runtime   (RUST_LOG=thalassa::haproxy=debug for reload timelines)

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};
use thalassa::haproxy::ConfigTarget;
use thalassa::haproxy::runtime::{AdminState, RuntimeClient, ServerCommand, ServerOptions};
use thalassa::haproxy::stat::{parse_servers_state, parse_show_stat};
use thalassa::haproxy::supervisor::{Supervisor, SupervisorSettings};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn config(settings: &SupervisorSettings, port: u16, generation: u32) -> String {
    format!(
        "global
    stats socket {admin} mode 600 level admin
    stats timeout 2m
    server-state-file {state}
    maxconn 500

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    load-server-state-from-file global

frontend fe
    bind 127.0.0.1:{port}
    http-response set-header x-gen {generation}
    default_backend bench

backend bench
    balance roundrobin
",
        admin = settings.admin_socket_path().display(),
        state = settings.server_state_path().display(),
    )
}

struct Samples(Vec<Duration>);

impl Samples {
    fn report(mut self, what: &str) {
        self.0.sort();
        let n = self.0.len();
        let at = |q: f64| self.0[((n as f64 - 1.0) * q).round() as usize];
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{what:<52} n={n:<5} median {:>8.3} ms  p99 {:>8.3}  min {:>8.3}  max {:>8.3}",
            ms(at(0.5)),
            ms(at(0.99)),
            ms(self.0[0]),
            ms(self.0[n - 1])
        );
    }
}

async fn time<F, Fut>(n: usize, mut op: F) -> Samples
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        op(i).await;
        samples.push(started.elapsed());
    }
    Samples(samples)
}

fn add(server: &str, id: u32) -> ServerCommand {
    ServerCommand::Add {
        backend: "bench".to_owned(),
        server: server.to_owned(),
        addr: LOOPBACK,
        port: 9,
        options: ServerOptions {
            check: false,
            id: Some(id),
            ..ServerOptions::default()
        },
    }
}

fn state(server: &str, state: AdminState) -> ServerCommand {
    ServerCommand::SetState {
        backend: "bench".to_owned(),
        server: server.to_owned(),
        state,
    }
}

fn delete(server: &str) -> ServerCommand {
    ServerCommand::Delete {
        backend: "bench".to_owned(),
        server: server.to_owned(),
    }
}

async fn ok(runtime: &RuntimeClient, commands: &[ServerCommand]) {
    let results = runtime.batch(commands).await.expect("batch");
    for result in results {
        result.expect("command");
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // RUST_LOG=thalassa=debug shows e.g. each reload's timeline.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let Some(bin) = [
        "/usr/sbin/haproxy",
        "/usr/local/sbin/haproxy",
        "/usr/bin/haproxy",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.is_file()) else {
        println!("SKIP: haproxy not installed");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = SupervisorSettings::new(bin, dir.path().join("run"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let supervisor = Supervisor::start(settings.clone(), &config(&settings, port, 0))
        .await
        .expect("haproxy starts");
    let runtime = supervisor.runtime();
    runtime.show_info().await.expect("warm up");
    println!("HAProxy runtime API through RuntimeClient (one persistent prompt-mode connection)");

    time(1000, |i| {
        let runtime = &runtime;
        async move {
            let name = format!("a{i}");
            runtime
                .run(&add(&name, 10_000 + i as u32))
                .await
                .expect("add");
            runtime
                .set_server_state("bench", &name, AdminState::Ready)
                .await
                .expect("ready");
        }
    })
    .await
    .report("add + ready (two round trips)");
    time(1000, |i| {
        let runtime = &runtime;
        async move {
            let name = format!("a{i}");
            ok(runtime, &[state(&name, AdminState::Maint), delete(&name)]).await;
        }
    })
    .await
    .report("maint + del (one batch)");
    time(1000, |i| {
        let runtime = &runtime;
        async move {
            let name = format!("b{i}");
            ok(
                runtime,
                &[
                    add(&name, 20_000 + i as u32),
                    state(&name, AdminState::Ready),
                ],
            )
            .await;
        }
    })
    .await
    .report("add + ready (one batch)");
    time(1000, |i| {
        let runtime = &runtime;
        async move {
            runtime
                .set_weight("bench", &format!("b{i}"), (i % 200) as u16 + 1)
                .await
                .expect("weight");
        }
    })
    .await
    .report("set server weight");
    time(1000, |i| {
        let runtime = &runtime;
        async move {
            let name = format!("b{i}");
            ok(runtime, &[state(&name, AdminState::Maint), delete(&name)]).await;
        }
    })
    .await
    .report("maint + del (one batch)");

    time(10, |round| {
        let runtime = &runtime;
        async move {
            let commands: Vec<_> = (0..100)
                .flat_map(|i| {
                    let name = format!("c{round}_{i}");
                    [
                        add(&name, 30_000 + (round * 100 + i) as u32),
                        state(&name, AdminState::Ready),
                    ]
                })
                .collect();
            ok(runtime, &commands).await;
        }
    })
    .await
    .report("batch of 100 add + ready");
    time(10, |round| {
        let runtime = &runtime;
        async move {
            let commands: Vec<_> = (0..100)
                .flat_map(|i| {
                    let name = format!("c{round}_{i}");
                    [state(&name, AdminState::Maint), delete(&name)]
                })
                .collect();
            ok(runtime, &commands).await;
        }
    })
    .await
    .report("batch of 100 maint + del");

    // Read-outs at 1000 servers in one backend.
    let commands: Vec<_> = (0..1000)
        .flat_map(|i| {
            let name = format!("r{i}");
            [add(&name, 40_000 + i), state(&name, AdminState::Ready)]
        })
        .collect();
    ok(&runtime, &commands).await;
    time(50, |_| {
        let runtime = &runtime;
        async move {
            assert_eq!(
                runtime
                    .show_servers_state(Some("bench"))
                    .await
                    .expect("state")
                    .len(),
                1000
            );
        }
    })
    .await
    .report("show servers state bench, 1000 servers, parsed");
    time(50, |_| {
        let runtime = &runtime;
        async move {
            assert!(runtime.show_stat().await.expect("stat").len() > 1000);
        }
    })
    .await
    .report("show stat, 1000 servers, parsed");
    let stat_text = runtime.command("show stat").await.expect("stat text");
    let state_text = runtime
        .command("show servers state")
        .await
        .expect("state text");
    time(50, |_| {
        let text = &stat_text;
        async move {
            parse_show_stat(text).expect("parse");
        }
    })
    .await
    .report(&format!(
        "parse_show_stat only ({} KB)",
        stat_text.len() / 1024
    ));
    time(50, |_| {
        let text = &state_text;
        async move {
            parse_servers_state(text).expect("parse");
        }
    })
    .await
    .report(&format!(
        "parse_servers_state only ({} KB)",
        state_text.len() / 1024
    ));
    ok(
        &runtime,
        &(0..1000)
            .flat_map(|i| {
                let name = format!("r{i}");
                [state(&name, AdminState::Maint), delete(&name)]
            })
            .collect::<Vec<_>>(),
    )
    .await;

    time(10, |i| {
        let supervisor = &supervisor;
        let settings = &settings;
        async move {
            supervisor
                .reload(&config(settings, port, i as u32 + 1), "bench")
                .await
                .expect("reload");
        }
    })
    .await
    .report("verified reload (check + state save + new worker)");
    supervisor.shutdown().await;
}
