//! The HAProxy master as an OS process: spawning it in master-worker mode with its output
//! captured, signalling PIDs, and finding HAProxy processes left over from an earlier run of
//! the same run directory (identified by their exact `-S` argument, never by name).

use super::SupervisorSettings;
use super::log::{LogRing, capture};
use rustix::process::{Pid, Signal, kill_process};
use std::io;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use tokio::process::{Child, Command};

/// The `-S` argument: the master CLI socket, owner-only. Also the fingerprint that tells our
/// HAProxy processes (master and workers re-use the master's argv) from anyone else's.
pub(super) fn master_socket_arg(settings: &SupervisorSettings) -> String {
    format!("{},mode,600", settings.master_socket_path().display())
}

/// Starts `haproxy -W -S <run_dir>/master.sock,mode,600 -f <run_dir>/haproxy.cfg`, with
/// `-x <admin socket>` when it is to take the listening sockets of a running HAProxy.
#[allow(clippy::disallowed_methods, reason = "the supervisor starts HAProxy")]
pub(super) fn spawn_master(
    settings: &SupervisorSettings,
    logs: &Arc<LogRing>,
    take_listeners: bool,
) -> io::Result<Child> {
    let mut command = Command::new(&settings.bin);
    command
        .arg("-W")
        .arg("-S")
        .arg(master_socket_arg(settings))
        .arg("-f")
        .arg(settings.config_path());
    if take_listeners {
        command.arg("-x").arg(settings.admin_socket_path());
    }
    let mut child = command
        .current_dir(&settings.run_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Not killed when the handle drops: the supervisor stops it (`shutdown`, or its Drop,
        // by PID), or leaves it serving for the next start (`leave_serving`).
        .spawn()?;
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(capture(stdout, logs.clone()));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(capture(stderr, logs.clone()));
    }
    Ok(child)
}

/// Sends `signal` to `pid`. A PID that is 0 or out of range is refused, never "everyone".
pub(super) fn signal(pid: u32, signal: Signal) -> io::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "invalid pid"))?;
    kill_process(pid, signal).map_err(io::Error::from)
}

/// Whether `pid` is alive and one of ours (its argv carries our exact `-S` argument). Guards
/// every kill of a PID we did not spawn directly against PID reuse.
pub(super) fn is_our_haproxy(pid: u32, fingerprint: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let mut args = cmdline.split(|byte| *byte == 0);
    while let Some(arg) = args.next() {
        if arg == b"-S" {
            return args.next() == Some(fingerprint.as_bytes());
        }
    }
    false
}

/// Every live process whose argv carries our `-S` argument (a master or worker left by an
/// earlier run that was killed without cleaning up, or a worker that outlived its master).
pub(super) fn find_our_haproxies(fingerprint: &str) -> Vec<u32> {
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != own && is_our_haproxy(*pid, fingerprint))
        .collect()
}

/// SIGKILLs every leftover HAProxy of this run directory and waits (briefly) until they are
/// gone, so a new master never shares ports with an old worker.
pub(super) async fn reap_leftovers(fingerprint: &str) -> Vec<u32> {
    let leftovers = find_our_haproxies(fingerprint);
    for pid in &leftovers {
        if let Err(err) = signal(*pid, Signal::KILL) {
            tracing::warn!(pid, error = %err, "could not kill a leftover haproxy");
        }
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while leftovers.iter().any(|pid| is_alive(*pid)) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    leftovers
}

/// The parent of `pid`, from /proc.
pub(super) fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // State, then the parent PID, follow the parenthesised command name.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Alive and not a zombie.
pub(super) fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The config file path as HAProxy will print it in messages about the check copy.
pub(super) fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_pids_that_would_mean_everyone() {
        assert!(signal(0, Signal::KILL).is_err());
        assert!(signal(u32::MAX, Signal::KILL).is_err());
    }

    #[test]
    fn only_processes_with_our_fingerprint_match() {
        let own = std::process::id();
        assert!(is_alive(own));
        assert_eq!(parent_pid(own), Some(std::os::unix::process::parent_id()));
        assert!(!is_our_haproxy(own, "/nonexistent/master.sock,mode,600"));
        assert!(find_our_haproxies("/nonexistent/master.sock,mode,600").is_empty());
    }
}
