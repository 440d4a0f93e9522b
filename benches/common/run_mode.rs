//! Full run or smoke run of a bench binary. `cargo bench` passes `--bench` and gets the full
//! measurement; `cargo test` runs every bench binary too (`test = true` in Cargo.toml) without
//! it, and then each bench runs a tiny preset of a few seconds, so a bench that breaks fails CI
//! on the machine where it broke. A smoke run's numbers mean nothing.
#![allow(dead_code)] // each bench uses a different subset

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunMode {
    Full,
    Smoke,
}

impl RunMode {
    pub fn is_smoke(self) -> bool {
        self == RunMode::Smoke
    }

    /// Picks one of two values: the full run's or the smoke run's.
    pub fn pick<T>(self, full: T, smoke: T) -> T {
        match self {
            RunMode::Full => full,
            RunMode::Smoke => smoke,
        }
    }
}

/// The mode this process was started in, or `None` when it was asked to filter on a name that
/// is not `bench_name` (`cargo test some_test` passes the filter to every binary, and a bench
/// has no tests of its own to filter: it then does nothing).
pub fn run_mode(bench_name: &str) -> Option<RunMode> {
    mode_of(std::env::args().skip(1), bench_name)
}

fn mode_of(args: impl Iterator<Item = String>, bench_name: &str) -> Option<RunMode> {
    // Flags that take no value (cargo's `--bench`, libtest's switches); any other `--name` may
    // be followed by its value (`--test-threads 1`, the churn bench's `--mode reload`), which
    // is not a filter.
    const SWITCHES: [&str; 8] = [
        "--bench",
        "--nocapture",
        "--ignored",
        "--include-ignored",
        "--exact",
        "--quiet",
        "--show-output",
        "--list",
    ];
    let mut mode = RunMode::Smoke;
    let mut value_may_follow = false;
    for arg in args {
        if arg == "--bench" {
            mode = RunMode::Full;
        }
        if arg.starts_with('-') {
            value_may_follow = !SWITCHES.contains(&arg.as_str()) && !arg.contains('=');
            continue;
        }
        if !std::mem::take(&mut value_may_follow) && arg != bench_name {
            return None;
        }
    }
    Some(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(args: &[&str]) -> Option<RunMode> {
        mode_of(args.iter().map(|a| a.to_string()), "registry")
    }

    #[test]
    fn bench_flag_means_full_and_a_foreign_filter_means_nothing() {
        assert_eq!(mode(&["--bench"]), Some(RunMode::Full));
        assert_eq!(mode(&["--bench", "registry"]), Some(RunMode::Full));
        assert_eq!(mode(&[]), Some(RunMode::Smoke));
        assert_eq!(mode(&["--nocapture"]), Some(RunMode::Smoke));
        assert_eq!(mode(&["--test-threads", "1"]), Some(RunMode::Smoke));
        assert_eq!(mode(&["--mode", "reload", "--bench"]), Some(RunMode::Full));
        assert_eq!(mode(&["--nocapture", "membership_live"]), None);
        assert_eq!(mode(&["membership_live"]), None);
        assert_eq!(mode(&["--bench", "churn"]), None);
    }
}
