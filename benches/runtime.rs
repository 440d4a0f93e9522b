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

#[path = "common/run_mode.rs"]
mod run_mode;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// How many times each operation runs: the full run's counts, or a smoke run's handful.
struct Sizes {
    single_ops: usize,
    batches: usize,
    batch_len: usize,
    readout_servers: u32,
    readouts: usize,
    reloads: usize,
}

impl Sizes {
    fn of(mode: run_mode::RunMode) -> Sizes {
        Sizes {
            single_ops: mode.pick(1000, 20),
            batches: mode.pick(10, 2),
            batch_len: mode.pick(100, 10),
            readout_servers: mode.pick(1000, 50),
            readouts: mode.pick(50, 2),
            reloads: mode.pick(10, 2),
        }
    }
}

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
    let Some(mode) = run_mode::run_mode("runtime") else {
        return;
    };
    let sizes = Sizes::of(mode);
    let (batch_len, readout_servers) = (sizes.batch_len, sizes.readout_servers);
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
        // Under CI a missing HAProxy is a failure (`.ci/run` installs it), never a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "haproxy is required under CI: apt-get install -y haproxy"
        );
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

    time(sizes.single_ops, |i| {
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
    time(sizes.single_ops, |i| {
        let runtime = &runtime;
        async move {
            let name = format!("a{i}");
            ok(runtime, &[state(&name, AdminState::Maint), delete(&name)]).await;
        }
    })
    .await
    .report("maint + del (one batch)");
    time(sizes.single_ops, |i| {
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
    time(sizes.single_ops, |i| {
        let runtime = &runtime;
        async move {
            runtime
                .run(&ServerCommand::SetWeight {
                    backend: "bench".to_owned(),
                    server: format!("b{i}"),
                    weight: (i % 200) as u16 + 1,
                })
                .await
                .expect("weight");
        }
    })
    .await
    .report("set server weight");
    time(sizes.single_ops, |i| {
        let runtime = &runtime;
        async move {
            let name = format!("b{i}");
            ok(runtime, &[state(&name, AdminState::Maint), delete(&name)]).await;
        }
    })
    .await
    .report("maint + del (one batch)");

    time(sizes.batches, |round| {
        let runtime = &runtime;
        async move {
            let commands: Vec<_> = (0..batch_len)
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
    .report(&format!("batch of {batch_len} add + ready"));
    time(sizes.batches, |round| {
        let runtime = &runtime;
        async move {
            let commands: Vec<_> = (0..batch_len)
                .flat_map(|i| {
                    let name = format!("c{round}_{i}");
                    [state(&name, AdminState::Maint), delete(&name)]
                })
                .collect();
            ok(runtime, &commands).await;
        }
    })
    .await
    .report(&format!("batch of {batch_len} maint + del"));

    // Read-outs at many servers in one backend.
    let commands: Vec<_> = (0..sizes.readout_servers)
        .flat_map(|i| {
            let name = format!("r{i}");
            [add(&name, 40_000 + i), state(&name, AdminState::Ready)]
        })
        .collect();
    ok(&runtime, &commands).await;
    time(sizes.readouts, |_| {
        let runtime = &runtime;
        async move {
            assert_eq!(
                runtime
                    .show_servers_state(Some("bench"))
                    .await
                    .expect("state")
                    .len(),
                readout_servers as usize
            );
        }
    })
    .await
    .report(&format!(
        "show servers state bench, {readout_servers} servers, parsed"
    ));
    time(sizes.readouts, |_| {
        let runtime = &runtime;
        async move {
            assert!(runtime.show_stat().await.expect("stat").len() > readout_servers as usize);
        }
    })
    .await
    .report(&format!("show stat, {readout_servers} servers, parsed"));
    let stat_text = runtime.command("show stat").await.expect("stat text");
    let state_text = runtime
        .command("show servers state")
        .await
        .expect("state text");
    time(sizes.readouts, |_| {
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
    time(sizes.readouts, |_| {
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
        &(0..sizes.readout_servers)
            .flat_map(|i| {
                let name = format!("r{i}");
                [state(&name, AdminState::Maint), delete(&name)]
            })
            .collect::<Vec<_>>(),
    )
    .await;

    time(sizes.reloads, |i| {
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
