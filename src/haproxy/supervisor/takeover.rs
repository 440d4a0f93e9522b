//! Taking over from an HAProxy that an earlier run left serving (the aqueduct was killed with
//! `kill -9`, so nothing stopped its child). Killing it and starting afresh would drop every
//! connection and refuse new ones until the new worker listens; instead the new master is
//! started with `-x <admin socket>`, which hands it the old worker's listening sockets (the
//! stats socket has `expose-fd listeners`), the old worker's server states are carried over
//! through the server-state file, and only then is the old master soft-stopped (SIGUSR1: its
//! worker stops accepting and finishes its connections). Connections queued on the shared
//! sockets are served by whichever worker accepts them, so clients see no gap.

use super::process;
use super::{Shared, SupervisorSettings};
use crate::haproxy::runtime::RuntimeClient;
use crate::haproxy::stat::ServerStateRow;
use rustix::process::Signal;
use std::time::Duration;

/// How long an old HAProxy may finish its connections after a takeover before it is killed:
/// a little more than the `hard-stop-after` the rendered config sets (30 s).
const OLD_HAPROXY_GRACE: Duration = Duration::from_secs(35);

/// The HAProxy processes of this run directory left running by an earlier run, and what
/// its worker reported.
pub(super) struct Leftover {
    /// Every process of it (masters and workers).
    pub pids: Vec<u32>,
    /// `show servers state` of its worker: what the new worker starts from.
    pub servers_state: String,
}

/// An earlier run's HAProxy that still answers on the admin socket, if there is one.
pub(super) async fn find_leftover(
    settings: &SupervisorSettings,
    fingerprint: &str,
) -> Option<Leftover> {
    // An external HAProxy runs elsewhere (another container): its processes are not seen here,
    // its admin socket is.
    let pids = process::find_our_haproxies(fingerprint);
    if pids.is_empty() && !settings.external {
        return None;
    }
    let client =
        RuntimeClient::new(settings.admin_socket_path()).with_timeout(Duration::from_secs(2));
    let state = client.show_servers_state_text().await;
    client.disconnect().await;
    match state {
        Ok(servers_state) => Some(Leftover {
            pids,
            servers_state,
        }),
        Err(err) => {
            tracing::warn!(pids = ?pids, error = %err,
                "a leftover haproxy does not answer on its admin socket; it will be replaced");
            None
        }
    }
}

/// The servers of an HAProxy of this run directory that an earlier run left serving; empty
/// when there is none (or it does not answer).
pub async fn leftover_servers(settings: &SupervisorSettings) -> Vec<ServerStateRow> {
    let fingerprint = process::master_socket_arg(settings);
    let Some(leftover) = find_leftover(settings, &fingerprint).await else {
        return Vec::new();
    };
    match crate::haproxy::stat::parse_servers_state(&leftover.servers_state) {
        Ok(rows) => rows,
        Err(err) => {
            tracing::warn!(error = %err, "cannot parse the leftover haproxy's server states");
            Vec::new()
        }
    }
}

/// The masters among `pids` (processes whose parent is not one of them).
pub(super) fn masters_of(pids: &[u32]) -> Vec<u32> {
    pids.iter()
        .copied()
        .filter(|pid| process::parent_pid(*pid).is_none_or(|parent| !pids.contains(&parent)))
        .collect()
}

/// Soft-stops the old masters (their workers finish their connections), and kills whatever
/// of them is left after [`OLD_HAPROXY_GRACE`], in the background.
pub(super) fn retire(shared: &Shared, old: Vec<u32>) {
    for master in masters_of(&old) {
        if process::is_our_haproxy(master, &shared.fingerprint)
            && let Err(err) = process::signal(master, Signal::USR1)
        {
            tracing::warn!(pid = master, error = %err, "cannot soft-stop the old haproxy");
        }
    }
    let fingerprint = shared.fingerprint.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + OLD_HAPROXY_GRACE;
        while tokio::time::Instant::now() < deadline {
            if !old.iter().any(|pid| process::is_alive(*pid)) {
                tracing::info!(pids = ?old, "the old haproxy finished and exited");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for pid in old {
            if process::is_alive(pid) && process::is_our_haproxy(pid, &fingerprint) {
                tracing::warn!(pid, "the old haproxy did not finish in time; killing it");
                let _ = process::signal(pid, Signal::KILL);
            }
        }
    });
}
