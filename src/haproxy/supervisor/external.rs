//! An HAProxy that something else runs and keeps running (`--haproxy-external`): in compose,
//! its own container, which shares the run directory with the aqueduct and starts
//! `haproxy -W -S <run dir>/master.sock -f <run dir>/haproxy.cfg` once the aqueduct has written
//! the config. The aqueduct attaches to its master CLI and admin socket: it reloads it and
//! applies members exactly as when it runs HAProxy itself, but never starts, stops or signals
//! it. Recreating the aqueduct's container (a restart, an image upgrade) leaves HAProxy serving;
//! HAProxy's own container restarts it if it dies, and the watch here notices the new master
//! and has every member re-applied (the `restarts` generation).

use super::{Shared, master_cli};
use crate::haproxy::ReloadError;
use crate::haproxy::runtime::RuntimeClient;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often the master is looked at for a restart.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// Waits until the external HAProxy's master answers and its current worker answers on the
/// admin socket; returns the master's pid.
pub(super) async fn attach(shared: &Shared, patience: Duration) -> Result<u32, ReloadError> {
    let deadline = Instant::now() + patience;
    let probe = RuntimeClient::new(shared.settings.admin_socket_path())
        .with_timeout(Duration::from_secs(2));
    loop {
        if let Ok(procs) = master_cli::show_proc(&shared.master_socket()).await
            && let Some(worker) = procs.current_worker()
            && let Ok(info) = probe.show_info().await
            && info.pid() == Some(worker.pid)
        {
            probe.disconnect().await;
            shared.master_pid.store(procs.master.pid, Ordering::SeqCst);
            return Ok(procs.master.pid);
        }
        probe.disconnect().await;
        if Instant::now() >= deadline {
            return Err(ReloadError::Unavailable(format!(
                "the external haproxy did not answer on {} within {patience:?}",
                shared.master_socket().display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Follows the external HAProxy until shutdown: while its master does not answer, reloads
/// are refused as unavailable; a master that answers with another pid is a restarted HAProxy
/// (started from the config on disk), whose members are applied again.
pub(super) async fn watch(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut known = shared.master_pid.load(Ordering::SeqCst);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(WATCH_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
        let answer = master_cli::show_proc(&shared.master_socket()).await;
        // A reload in progress re-executes the master (same pid, refusing connections for a
        // moment): only a steady answer counts.
        let reloading = shared.last_good_config.try_lock().is_err();
        match answer {
            Ok(procs) if procs.master.pid == known => {}
            Ok(procs) if procs.current_worker().is_some() => {
                let pid = procs.master.pid;
                if attach(&shared, Duration::from_secs(10)).await.is_ok() {
                    tracing::warn!(
                        old = known,
                        new = pid,
                        "the external haproxy was restarted; applying every member again"
                    );
                    known = pid;
                    shared.metrics.restarts.inc();
                    shared.runtime.disconnect_all().await;
                    shared.restarts.send_modify(|generation| *generation += 1);
                }
            }
            Ok(_) => {}
            Err(_) if reloading => {}
            Err(err) => {
                if shared.master_pid.swap(0, Ordering::SeqCst) != 0 {
                    tracing::error!(error = %err, "the external haproxy does not answer");
                }
                // Whichever master answers next (the same one, or a restarted one) is new.
                known = 0;
            }
        }
    }
}
