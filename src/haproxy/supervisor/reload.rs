//! One verified reload: check, save runtime server state, write the config, `reload` on the
//! master CLI, then read `show proc` until the master reports the outcome. A failed reload
//! puts the previous config back on disk; the old worker never stopped serving.

use super::log::{LogLevel, LogLine};
use super::{Shared, master_cli};
use crate::atomic_file::write_atomic;
use crate::haproxy::master_cli::{MasterCliError, ReloadAnswer};
use crate::haproxy::stat::ProcList;
use crate::haproxy::{ReloadError, ReloadReport};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Pause between polls of a master that is re-executing (its CLI refuses connections).
const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Extra time a reload may take per byte of config: loading is linear in the servers (3.0
/// answered a reload with 20,000 servers, about 2 MB of config, after 7.3 s here).
const LOAD_TIME_PER_MB: Duration = Duration::from_secs(10);

/// How long a reload of `config_text` may take: the configured readiness bound, plus the
/// time a config this large takes to load.
fn reload_patience(ready_timeout: Duration, config_text: &str) -> Duration {
    ready_timeout + LOAD_TIME_PER_MB.mul_f64(config_text.len() as f64 / 1_000_000.0)
}

pub(super) async fn reload(
    shared: &Shared,
    config_text: &str,
    reason: &str,
) -> Result<ReloadReport, ReloadError> {
    let started = Instant::now();
    // One reload (or restart) at a time.
    let mut last_good = shared.last_good_config.lock().await;
    let result = reload_locked(shared, &last_good, config_text, reason, started).await;
    let outcome = match &result {
        Ok(report) => {
            *last_good = config_text.to_owned();
            shared
                .metrics
                .reload_seconds
                .observe(report.duration.as_secs_f64());
            shared.reloads.send_modify(|generation| *generation += 1);
            tracing::info!(
                reason,
                duration_ms = report.duration.as_millis() as u64,
                worker_pid = report.worker_pid,
                "haproxy reloaded"
            );
            "ok"
        }
        Err(ReloadError::Rejected(rejected)) => {
            tracing::info!(reason, error = %rejected, "config rejected, haproxy not reloaded");
            "rejected"
        }
        Err(err @ ReloadError::Failed(_)) => {
            tracing::warn!(reason, error = %err, "haproxy reload failed; previous config kept");
            "failed"
        }
        Err(err @ ReloadError::Unavailable(_)) => {
            tracing::warn!(reason, error = %err, "haproxy reload not possible");
            "unavailable"
        }
    };
    shared.metrics.reloads.inc(&[outcome]);
    result
}

async fn reload_locked(
    shared: &Shared,
    previous_config: &str,
    config_text: &str,
    reason: &str,
    started: Instant,
) -> Result<ReloadReport, ReloadError> {
    shared.check(config_text).await?;
    let checked = started.elapsed();
    if shared.master_pid.load(Ordering::SeqCst) == 0 {
        return Err(ReloadError::Unavailable(
            "haproxy is not running (it is being restarted)".to_owned(),
        ));
    }
    let settings = &shared.settings;
    let patience = reload_patience(settings.ready_timeout, config_text);
    let deadline = started + patience;
    let master_socket = shared.master_socket();
    let before = show_proc_until(&master_socket, deadline, patience, |_| true)
        .await
        .map_err(|err| ReloadError::Unavailable(format!("master CLI: {err}")))?;

    // From here until the new worker answers, no runtime command may reach the old worker:
    // its state is being saved, and it is about to exit.
    let mut runtime = shared.runtime.lock_for_reload().await;
    match runtime.show_servers_state_text().await {
        Ok(state) => {
            if let Err(err) = write_atomic(&settings.server_state_path(), state.as_bytes()) {
                tracing::warn!(error = %err, "cannot save server state; servers restart from the config");
                shared.write_empty_server_state();
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot read server state; servers restart from the config");
            shared.write_empty_server_state();
        }
    }
    write_atomic(&settings.config_path(), config_text.as_bytes()).map_err(|err| {
        ReloadError::Unavailable(format!(
            "cannot write {}: {err}",
            settings.config_path().display()
        ))
    })?;

    let mark = shared.logs.mark();
    let state_saved = started.elapsed();
    tracing::debug!(reason, "sending reload to the haproxy master");
    let restore = |why: String| {
        if let Err(err) = write_atomic(&settings.config_path(), previous_config.as_bytes()) {
            tracing::error!(error = %err, "cannot restore the previous haproxy config on disk");
        }
        shared.write_empty_server_state();
        why
    };
    let answer = match send_reload(&master_socket, deadline).await {
        Ok(answer) => answer,
        Err(err) => {
            return Err(ReloadError::Unavailable(restore(format!(
                "cannot send reload: {err}"
            ))));
        }
    };
    // 2.7+ said how it went; 2.6 said nothing, and `show proc` tells.
    let finished_ok = match &answer {
        ReloadAnswer::Finished {
            success: false,
            startup_logs,
        } => {
            restore(String::new());
            let alerts = alerts_in(startup_logs);
            return Err(ReloadError::Failed(if alerts.is_empty() {
                "haproxy reported the reload as failed".to_owned()
            } else {
                alerts.join(" | ")
            }));
        }
        ReloadAnswer::Finished { success: true, .. } => true,
        ReloadAnswer::Sent | ReloadAnswer::Busy => false,
    };
    let old_worker = before.current_worker().map(|worker| worker.pid);
    let new_worker_of = |procs: &ProcList| {
        procs
            .current_worker()
            .map(|worker| worker.pid)
            .filter(|pid| Some(*pid) != old_worker)
    };
    // Done when the master counted this reload and either gave up or forked a new worker.
    let after = show_proc_until(&master_socket, deadline, patience, |procs| {
        procs.master.reloads > before.master.reloads
            && (new_worker_of(procs).is_some() || (!finished_ok && procs.master.failed_reloads > 0))
    })
    .await
    .map_err(|err| {
        ReloadError::Unavailable(restore(format!(
            "no answer from the master after reload: {err}"
        )))
    })?;
    let new_worker = new_worker_of(&after);
    let new_worker = match (finished_ok || after.master.failed_reloads == 0, new_worker) {
        (true, Some(pid)) => pid,
        _ => {
            restore(String::new());
            // The reason is only on stderr; give the pipe a moment to deliver it.
            shared
                .logs
                .wait_for(mark, Duration::from_secs(1), |line| {
                    line.message.contains("Loading failure")
                })
                .await;
            let alerts = shared.alerts_since(mark);
            return Err(ReloadError::Failed(if alerts.is_empty() {
                format!(
                    "haproxy reported the reload as failed ({} failed reloads)",
                    after.master.failed_reloads
                )
            } else {
                alerts.join(" | ")
            }));
        }
    };

    // The master is done; wait until the new worker owns the admin socket.
    let master_done = started.elapsed();
    runtime.disconnect();
    loop {
        match runtime.show_info().await {
            Ok(info) if info.pid() == Some(new_worker) => break,
            _ => runtime.disconnect(),
        }
        if Instant::now() >= deadline {
            return Err(ReloadError::Unavailable(format!(
                "new worker {new_worker} did not answer on the admin socket within {patience:?}"
            )));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    tracing::debug!(
        check_ms = checked.as_millis() as u64,
        state_saved_ms = state_saved.as_millis() as u64,
        master_done_ms = master_done.as_millis() as u64,
        worker_ready_ms = started.elapsed().as_millis() as u64,
        "reload timeline"
    );
    // The state was consumed; a later restart must not apply it again.
    shared.write_empty_server_state();
    Ok(ReloadReport {
        duration: started.elapsed(),
        worker_pid: Some(new_worker),
    })
}

/// Sends `reload`, retrying while the master refuses connections (it may still be
/// re-executing from a previous reload or a restart) or, from 2.7, says an earlier reload's
/// worker is still starting.
async fn send_reload(
    master_socket: &std::path::Path,
    deadline: Instant,
) -> Result<ReloadAnswer, MasterCliError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match master_cli::reload(master_socket, left.max(POLL_INTERVAL)).await {
            Err(MasterCliError::Connect { .. }) | Ok(ReloadAnswer::Busy)
                if Instant::now() < deadline =>
            {
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            result => return result,
        }
    }
}

/// The alert messages among the startup logs of a 2.7+ reload answer.
fn alerts_in(startup_logs: &str) -> Vec<String> {
    let mut previous = None;
    let mut alerts = Vec::new();
    for raw in startup_logs.lines().filter(|line| !line.trim().is_empty()) {
        let line = LogLine::parse(0, raw, previous);
        previous = Some(line.level);
        if line.level == LogLevel::Alert {
            alerts.push(line.message);
        }
    }
    alerts
}

/// Polls `show proc` until `done` holds, retrying any failure, until `deadline`.
async fn show_proc_until(
    master_socket: &std::path::Path,
    deadline: Instant,
    patience: Duration,
    done: impl Fn(&ProcList) -> bool,
) -> Result<ProcList, MasterCliError> {
    loop {
        let result = master_cli::show_proc(master_socket).await;
        match result {
            Ok(procs) if done(&procs) => return Ok(procs),
            // Refused or reset connections and half answers are expected while the master
            // re-executes; only the deadline ends the wait.
            _ if Instant::now() < deadline => {}
            Ok(_) => return Err(MasterCliError::Timeout(patience)),
            Err(err) => return Err(err),
        }
        // A refused connect costs microseconds; polling fast keeps reloads short.
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patience_grows_with_the_config() {
        let small = reload_patience(Duration::from_secs(15), "global\n");
        assert!(small >= Duration::from_secs(15) && small < Duration::from_millis(15_001));
        let large = reload_patience(Duration::from_secs(15), &"x".repeat(2_000_000));
        assert_eq!(large, Duration::from_secs(35));
    }

    #[test]
    fn alerts_are_read_from_startup_logs() {
        let logs = "[NOTICE]   (9) : haproxy version is 3.4.0\n[ALERT]    (9) : config : Proxy 'f': unable to find required default_backend: 'nope'.\n[ALERT]    (9) : config : Fatal errors found in configuration.\n";
        assert_eq!(
            alerts_in(logs),
            vec![
                "config : Proxy 'f': unable to find required default_backend: 'nope'.",
                "config : Fatal errors found in configuration."
            ]
        );
    }
}
