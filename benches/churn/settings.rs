//! What a churn run does: the preset (quick or full), the runs to compare (membership mode,
//! change rate, duration) and every knob, read from `CHURN_*` environment variables or the
//! equivalent `--name value` arguments (`--members 500` is `CHURN_MEMBERS=500`).

use std::collections::BTreeMap;
use std::time::Duration;

/// How membership changes reach HAProxy in one run (`thalassa up --membership ...`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Membership {
    /// The runtime API, health-gated, never reloading.
    Runtime,
    /// Re-render and reload on every change after `debounce` of quiet (the original's way).
    Reload { debounce: Duration },
}

impl Membership {
    pub fn label(self) -> String {
        match self {
            Membership::Runtime => "runtime".to_owned(),
            Membership::Reload { debounce } => format!("reload-{}", duration_label(debounce)),
        }
    }

    fn parse(text: &str) -> Result<Membership, String> {
        match text {
            "runtime" => Ok(Membership::Runtime),
            "reload" => Ok(Membership::Reload {
                debounce: Duration::from_secs(2),
            }),
            _ => match text.strip_prefix("reload-") {
                Some(debounce) => Ok(Membership::Reload {
                    debounce: thalassa::cli::parse_duration(debounce)?,
                }),
                None => Err(format!(
                    "unknown membership mode {text:?}: runtime, reload, reload-2s, reload-0s, ..."
                )),
            },
        }
    }
}

/// One measured run: a fresh stack, the starting members, then churn at `rate` for `duration`.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub membership: Membership,
    /// Membership changes per second (joins + deletions + expiries).
    pub rate: f64,
    pub duration: Duration,
}

impl Run {
    pub fn label(&self) -> String {
        format!("{}@{}", self.membership.label(), self.rate)
    }

    /// `mode[@rate[/seconds]]`, e.g. `runtime`, `reload-0s`, `runtime@1000/30`.
    fn parse(text: &str, rate: f64, duration: Duration) -> Result<Run, String> {
        let (mode, rest) = text.split_once('@').unwrap_or((text, ""));
        let (rate_text, secs_text) = rest.split_once('/').unwrap_or((rest, ""));
        let rate = if rate_text.is_empty() {
            rate
        } else {
            positive(
                rate_text
                    .parse()
                    .map_err(|_| format!("bad rate in {text:?}"))?,
                text,
            )?
        };
        let duration = if secs_text.is_empty() {
            duration
        } else {
            thalassa::cli::parse_duration(secs_text)?
        };
        Ok(Run {
            membership: Membership::parse(mode.trim())?,
            rate,
            duration,
        })
    }
}

/// Which kinds of client connections the load generator opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadKinds {
    KeepAlive,
    Close,
    /// Half the connections and half the rate each.
    Both,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// `quick` or `full`.
    pub preset: String,
    pub runs: Vec<Run>,
    /// Members registered before the churn starts (the steady-state size).
    pub members: usize,
    pub backends: usize,
    /// HTTP health-check interval of every member, in milliseconds.
    pub check_inter_ms: u32,
    /// Every backend's `balance` algorithm (`roundrobin` unless `CHURN_BALANCE` says).
    pub balance: String,
    /// Share of joins that register with a short lease and are left to expire.
    pub expiry_share: f64,
    /// Lease of those expiring members.
    pub expiry_ttl: Duration,
    /// Heartbeats (re-POSTs of an unchanged registration) per membership change.
    pub refresh_ratio: f64,
    pub load_kinds: LoadKinds,
    /// Requests per second through HAProxy, all connections together.
    pub load_rate: f64,
    pub load_connections: usize,
    /// How often the observer reads `show servers state` of the backends with a change in
    /// flight.
    pub poll_interval: Duration,
    /// How often it reads every backend.
    pub full_poll_interval: Duration,
    /// Load before measuring anything.
    pub warmup: Duration,
    /// Load without churn, to measure the idle CPU of the same setup.
    pub quiet: Duration,
    /// `THALASSA_LOG` for the stack.
    pub thalassa_log: String,
    pub seed: u64,
    /// Keep the stack's data directory (logs, haproxy.cfg) after the run.
    pub keep_dirs: bool,
}

impl Settings {
    /// Reads `CHURN_*` variables and `--name value` arguments (arguments win). `default_preset`
    /// applies when neither names one.
    pub fn from_env_and_args(default_preset: &str) -> Result<Settings, String> {
        let mut values = env_values();
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                // `cargo bench` passes `--bench` to every harness-less bench.
                "--bench" => {}
                "--quick" | "--full" => {
                    values.insert("mode".to_owned(), arg[2..].to_owned());
                }
                _ => {
                    let Some(name) = arg.strip_prefix("--") else {
                        return Err(format!("unexpected argument {arg:?}"));
                    };
                    let (name, value) = match name.split_once('=') {
                        Some((name, value)) => (name.to_owned(), value.to_owned()),
                        None => match args.next() {
                            Some(value) => (name.to_owned(), value),
                            None => return Err(format!("--{name} needs a value")),
                        },
                    };
                    values.insert(name.replace('-', "_"), value);
                }
            }
        }
        Settings::from_values(&values, default_preset)
    }

    /// `CHURN_*` variables only (a test binary's arguments are the test harness's).
    pub fn from_env(default_preset: &str) -> Result<Settings, String> {
        Settings::from_values(&env_values(), default_preset)
    }

    pub fn from_values(
        values: &BTreeMap<String, String>,
        default_preset: &str,
    ) -> Result<Settings, String> {
        // `CHURN_MODE` names a preset, or (`runtime`, `reload`, `reload-0s,runtime`, ...) the
        // membership modes to run, as a shorthand for `CHURN_RUNS` with the full preset.
        let mode = values.get("mode").map_or(default_preset, String::as_str);
        let (preset, mode_runs) = match mode {
            "quick" | "full" | "smoke" => (mode.to_owned(), None),
            runs => ("full".to_owned(), Some(runs.to_owned())),
        };
        let mut settings = match preset.as_str() {
            "quick" => Settings::quick(),
            "full" => Settings::full(),
            "smoke" => Settings::smoke(),
            other => return Err(format!("unknown preset {other:?}")),
        };
        let number = |name: &str| -> Result<Option<f64>, String> {
            values
                .get(name)
                .map(|v| {
                    v.trim()
                        .parse::<f64>()
                        .map_err(|_| format!("CHURN_{}: not a number: {v:?}", name.to_uppercase()))
                })
                .transpose()
        };
        let duration = |name: &str| -> Result<Option<Duration>, String> {
            values
                .get(name)
                .map(|v| thalassa::cli::parse_duration(v))
                .transpose()
        };
        if let Some(n) = number("members")? {
            settings.members = positive(n, "members")? as usize;
        }
        if let Some(n) = number("backends")? {
            settings.backends = positive(n, "backends")? as usize;
        }
        if let Some(n) = number("check_inter_ms")? {
            settings.check_inter_ms = positive(n, "check_inter_ms")? as u32;
        }
        if let Some(n) = number("expiry_share")? {
            if !(0.0..=1.0).contains(&n) {
                return Err("CHURN_EXPIRY_SHARE must be between 0 and 1".to_owned());
            }
            settings.expiry_share = n;
        }
        if let Some(d) = duration("expiry_ttl")? {
            settings.expiry_ttl = d;
        }
        if let Some(n) = number("refresh_ratio")? {
            settings.refresh_ratio = n.max(0.0);
        }
        if let Some(kinds) = values.get("load") {
            settings.load_kinds = match kinds.as_str() {
                "keepalive" | "keep-alive" => LoadKinds::KeepAlive,
                "close" => LoadKinds::Close,
                "both" => LoadKinds::Both,
                other => {
                    return Err(format!(
                        "CHURN_LOAD: keepalive, close or both, not {other:?}"
                    ));
                }
            };
        }
        if let Some(n) = number("load_rate")? {
            settings.load_rate = positive(n, "load_rate")?;
        }
        if let Some(n) = number("connections")? {
            settings.load_connections = positive(n, "connections")? as usize;
        }
        if let Some(d) = duration("poll")? {
            settings.poll_interval = d;
        }
        if let Some(d) = duration("full_poll")? {
            settings.full_poll_interval = d;
        }
        if let Some(d) = duration("warmup")? {
            settings.warmup = d;
        }
        if let Some(d) = duration("quiet")? {
            settings.quiet = d;
        }
        if let Some(balance) = values.get("balance") {
            settings.balance = balance.clone();
        }
        if let Some(log) = values.get("thalassa_log") {
            settings.thalassa_log = log.clone();
        }
        if let Some(n) = number("seed")? {
            settings.seed = n as u64;
        }
        settings.keep_dirs = values.get("keep").is_some_and(|v| v != "0");
        let (preset_runs, preset_rate, preset_duration) = preset_runs(&preset);
        let rate = match number("rate")? {
            Some(n) => positive(n, "rate")?,
            None => preset_rate,
        };
        let run_duration = duration("duration")?.unwrap_or(preset_duration);
        let runs_text = values
            .get("runs")
            .or(mode_runs.as_ref())
            .map_or(preset_runs, String::as_str);
        settings.runs = parse_runs(runs_text, rate, run_duration)?;
        if settings.runs.is_empty() {
            return Err("CHURN_RUNS names no run".to_owned());
        }
        Ok(settings)
    }

    /// Under a minute, runtime mode only: the CI smoke run.
    pub fn quick() -> Settings {
        Settings {
            preset: "quick".to_owned(),
            runs: preset_default_runs("quick"),
            members: 120,
            backends: 4,
            check_inter_ms: 100,
            balance: "roundrobin".to_owned(),
            expiry_share: 0.2,
            expiry_ttl: Duration::from_secs(2),
            refresh_ratio: 1.0,
            load_kinds: LoadKinds::Both,
            load_rate: 400.0,
            load_connections: 8,
            poll_interval: Duration::from_millis(5),
            full_poll_interval: Duration::from_millis(100),
            warmup: Duration::from_secs(1),
            quiet: Duration::from_secs(2),
            thalassa_log: "info".to_owned(),
            seed: 7,
            keep_dirs: false,
        }
    }

    /// A few seconds, every membership mode: what `cargo test` runs of the bench binary, to
    /// show it still runs to completion (benches/common/run_mode.rs). Its numbers mean nothing.
    pub fn smoke() -> Settings {
        Settings {
            preset: "smoke".to_owned(),
            runs: preset_default_runs("smoke"),
            members: 24,
            backends: 2,
            load_rate: 100.0,
            load_connections: 4,
            warmup: Duration::from_millis(500),
            quiet: Duration::from_secs(1),
            ..Settings::quick()
        }
    }

    /// The closing-note runs: 2,000 members over 20 backends, each mode at 500 changes/s.
    pub fn full() -> Settings {
        let secs = Duration::from_secs;
        Settings {
            preset: "full".to_owned(),
            runs: preset_default_runs("full"),
            members: 2000,
            backends: 20,
            // 2,000 members at 1 s is 2,000 HTTP checks/s: a fair share of two cores. The
            // check interval only bounds how soon a new member serves (about one interval),
            // not how soon HAProxy knows it.
            check_inter_ms: 1000,
            balance: "roundrobin".to_owned(),
            expiry_share: 0.2,
            expiry_ttl: secs(3),
            refresh_ratio: 1.0,
            load_kinds: LoadKinds::Both,
            load_rate: 2000.0,
            load_connections: 32,
            poll_interval: Duration::from_millis(5),
            full_poll_interval: Duration::from_millis(100),
            warmup: secs(2),
            quiet: secs(5),
            thalassa_log: "info".to_owned(),
            seed: 7,
            keep_dirs: false,
        }
    }
}

fn env_values() -> BTreeMap<String, String> {
    std::env::vars()
        .filter_map(|(k, v)| k.strip_prefix("CHURN_").map(|k| (k.to_lowercase(), v)))
        .collect()
}

/// The runs of a preset: a spec list, and the rate and duration of runs that name none.
fn preset_runs(preset: &str) -> (&'static str, f64, Duration) {
    match preset {
        // The closing-note runs: each mode at 500 changes/s for 60 s, then the runtime mode
        // at 1,000 and 2,000 changes/s.
        "full" => (
            "runtime,reload-2s,reload-0s,runtime@1000/30,runtime@2000/30",
            500.0,
            Duration::from_secs(60),
        ),
        "smoke" => ("runtime,reload-2s,reload-0s", 20.0, Duration::from_secs(2)),
        _ => ("runtime", 100.0, Duration::from_secs(10)),
    }
}

fn preset_default_runs(preset: &str) -> Vec<Run> {
    let (spec, rate, duration) = preset_runs(preset);
    parse_runs(spec, rate, duration).expect("preset run specs parse")
}

fn parse_runs(text: &str, rate: f64, duration: Duration) -> Result<Vec<Run>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|spec| !spec.is_empty())
        .map(|spec| Run::parse(spec, rate, duration))
        .collect()
}

/// `2s`, `0s`, `250ms`.
pub fn duration_label(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

fn positive(n: f64, what: &str) -> Result<f64, String> {
    if n.is_finite() && n > 0.0 {
        Ok(n)
    } else {
        Err(format!("{what}: must be a positive number"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pairs: &[(&str, &str)], expected_runs: &[&str]) {
        let values = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let settings = Settings::from_values(&values, "quick").unwrap();
        let labels: Vec<String> = settings
            .runs
            .iter()
            .map(|r| format!("{}/{}", r.label(), duration_label(r.duration)))
            .collect();
        assert_eq!(labels, expected_runs);
    }

    #[test]
    fn runs() {
        check(&[], &["runtime@100/10s"]);
        check(
            &[("mode", "full")],
            &[
                "runtime@500/60s",
                "reload-2s@500/60s",
                "reload-0s@500/60s",
                "runtime@1000/30s",
                "runtime@2000/30s",
            ],
        );
        check(
            &[
                ("runs", "runtime,reload"),
                ("rate", "50"),
                ("duration", "5s"),
            ],
            &["runtime@50/5s", "reload-2s@50/5s"],
        );
        check(&[("runs", "reload-500ms@20/3")], &["reload-500ms@20/3s"]);
        check(&[("mode", "reload")], &["reload-2s@500/60s"]);
        check(
            &[("mode", "smoke")],
            &["runtime@20/2s", "reload-2s@20/2s", "reload-0s@20/2s"],
        );
        check(
            &[("mode", "runtime,reload-0s"), ("duration", "20s")],
            &["runtime@500/20s", "reload-0s@500/20s"],
        );
    }
}
