//! `haproxy -c`: validates a candidate config from a scratch copy in the run directory (or
//! the temp dir when the run directory cannot be written),
//! without touching the running process. It does not bind ports, so a port already in use
//! only shows at reload.

use super::SupervisorSettings;
use super::log::{LogLevel, LogLine};
use crate::haproxy::ConfigRejected;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::process::Command;

/// `haproxy -c` takes ~20 ms plus ~4 µs per server; this only catches a wedged binary.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

static SCRATCH_COUNTER: AtomicU64 = AtomicU64::new(0);

#[allow(
    clippy::disallowed_methods,
    reason = "the supervisor runs `haproxy -c`"
)]
pub(super) async fn check_config(
    settings: &SupervisorSettings,
    config_text: &str,
) -> Result<(), ConfigRejected> {
    let name = format!(
        ".check-{}-{}.cfg",
        std::process::id(),
        SCRATCH_COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    // A full or read-only data dir must not make every change look like a bad config: the
    // check then runs from the system's temp dir, and the reload's own write reports the
    // data dir problem.
    let mut scratch = settings.run_dir.join(&name);
    if let Err(err) = write_private(&scratch, config_text).await {
        let fallback = std::env::temp_dir().join(&name);
        if let Err(fallback_err) = write_private(&fallback, config_text).await {
            return Err(rejected(format!(
                "cannot write {} for checking: {err}; nor {}: {fallback_err}",
                scratch.display(),
                fallback.display()
            )));
        }
        tracing::debug!(error = %err, "checking the config from the temp dir");
        scratch = fallback;
    }
    let output = Command::new(&settings.bin)
        .arg("-c")
        .arg("-f")
        .arg(&scratch)
        .current_dir(&settings.run_dir)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(CHECK_TIMEOUT, output).await;
    let _ = tokio::fs::remove_file(&scratch).await;
    let output = match output {
        Err(_) => {
            return Err(rejected(format!(
                "haproxy -c did not finish within {CHECK_TIMEOUT:?}"
            )));
        }
        Ok(Err(err)) => {
            return Err(rejected(format!(
                "cannot run {}: {err}",
                settings.bin.display()
            )));
        }
        Ok(Ok(output)) => output,
    };
    if output.status.success() {
        return Ok(());
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    // Messages name the scratch copy; callers know it as haproxy.cfg.
    let text = text.replace(
        &scratch.display().to_string(),
        &super::process::display_name(&settings.config_path()),
    );
    Err(ConfigRejected {
        lines: error_lines(&text),
    })
}

/// Writes a new owner-only file (a config may carry credentials in natives).
async fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await?;
    // tokio hands writes to a background thread: only the flush reports ENOSPC.
    let written = match file.write_all(text.as_bytes()).await {
        Ok(()) => file.flush().await,
        Err(err) => Err(err),
    };
    if written.is_err() {
        let _ = tokio::fs::remove_file(path).await;
    }
    written
}

/// HAProxy's ALERT messages (without the `[ALERT] (pid) :` prefix), or every non-empty line
/// when there is no ALERT (so the caller always gets a reason).
pub(super) fn error_lines(text: &str) -> Vec<String> {
    let lines: Vec<LogLine> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| LogLine::parse(0, line, None))
        .collect();
    let alerts: Vec<String> = lines
        .iter()
        .filter(|line| line.level == LogLevel::Alert)
        .map(|line| line.message.clone())
        .collect();
    if !alerts.is_empty() {
        return alerts;
    }
    let all: Vec<String> = lines.into_iter().map(|line| line.message).collect();
    if all.is_empty() {
        vec!["haproxy -c failed without a message".to_owned()]
    } else {
        all
    }
}

fn rejected(reason: String) -> ConfigRejected {
    ConfigRejected {
        lines: vec![reason],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: &[&str]) {
        assert_eq!(error_lines(text), expected, "{text}");
    }

    #[test]
    fn keeps_alerts_only_when_there_are_some() {
        check(
            "[NOTICE]   (1) : haproxy version is 2.6.12\n[ALERT]    (1) : config : parsing [haproxy.cfg:25] : unknown keyword 'bogus'.\n[WARNING]  (1) : config : missing timeouts\n[ALERT]    (1) : config : Fatal errors found in configuration.\n",
            &[
                "config : parsing [haproxy.cfg:25] : unknown keyword 'bogus'.",
                "config : Fatal errors found in configuration.",
            ],
        );
        check("something odd\n\n", &["something odd"]);
        check("", &["haproxy -c failed without a message"]);
    }
}
