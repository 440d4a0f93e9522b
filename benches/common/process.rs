//! Child processes of a bench: each stopped when dropped, so a bench leaks nothing.
#![allow(dead_code)] // each bench uses a different subset

use std::process::Child;
use std::time::{Duration, Instant};

/// A child process, stopped (by PID) when dropped: SIGTERM, so an aqueduct started with
/// `--stop-haproxy` takes its HAProxy with it (a SIGKILLed aqueduct leaves HAProxy serving, by
/// design), then SIGKILL after five seconds.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.0.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// Whether HAProxy (`THALASSA_HAPROXY_BIN`, or `haproxy` on the PATH) runs.
pub fn haproxy_runs() -> bool {
    let bin = std::env::var("THALASSA_HAPROXY_BIN").unwrap_or_else(|_| "haproxy".to_owned());
    std::process::Command::new(bin)
        .arg("-v")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
