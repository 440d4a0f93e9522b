//! A minimal master-worker HAProxy for tests of the apply pipeline under traffic: start with
//! `-W -S`, reload through the master CLI, verify with `show proc`. The product's supervisor
//! (`haproxy::supervisor`) does this properly, with restarts and rollback; this stand-in only
//! lets the pipeline's tests measure reloads against a real process.

use super::haproxy_check;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use thalassa::haproxy::{BoxFuture, ConfigRejected, ConfigTarget, ReloadError, ReloadReport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct MasterWorker {
    bin: PathBuf,
    dir: PathBuf,
    cfg: PathBuf,
    master_socket: PathBuf,
    child: std::sync::Mutex<Option<Child>>,
    reload_lock: tokio::sync::Mutex<()>,
}

impl MasterWorker {
    /// Starts HAProxy on `initial` and waits until a worker serves it.
    pub async fn start(bin: &Path, dir: &Path, initial: &str) -> MasterWorker {
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(&cfg, initial).unwrap();
        let master_socket = dir.join("master.sock");
        let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
        let child = Command::new(bin)
            .arg("-W")
            .arg("-S")
            .arg(format!("{},mode,600", master_socket.display()))
            .arg("-f")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let haproxy = MasterWorker {
            bin: bin.to_owned(),
            dir: dir.to_owned(),
            cfg,
            master_socket,
            child: std::sync::Mutex::new(Some(child)),
            reload_lock: tokio::sync::Mutex::new(()),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(proc) = haproxy.master("show proc").await
                && !workers(&proc).is_empty()
            {
                break;
            }
            assert!(Instant::now() < deadline, "haproxy did not start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        haproxy
    }

    /// One master CLI command: write it, half-close (the master waits for that), read to EOF.
    async fn master(&self, command: &str) -> std::io::Result<String> {
        let mut stream = tokio::net::UnixStream::connect(&self.master_socket).await?;
        stream.write_all(format!("{command}\n").as_bytes()).await?;
        stream.shutdown().await?;
        let mut out = String::new();
        stream.read_to_string(&mut out).await?;
        Ok(out)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default()
    }

    /// ALERT and WARNING lines other than the ones every reload prints on 2.6 (the old
    /// worker's `Proxy x stopped (cumulated conns ...)` and the master's `Former worker (pid)
    /// exited with code 0`), which are lifecycle notices, not problems.
    pub fn unexpected_log_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("[ALERT]") || l.contains("[WARNING]"))
            .filter(|l| {
                let lifecycle = (l.contains(": Proxy ")
                    && l.contains(" stopped (cumulated conns: "))
                    || (l.contains(": Former worker (")
                        && l.ends_with("exited with code 0 (Exit)"));
                !(l.contains("[WARNING]") && lifecycle)
            })
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for MasterWorker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Worker PIDs and the master's failed-reload count from `show proc`.
pub fn workers(show_proc: &str) -> BTreeSet<u32> {
    let mut in_workers = false;
    let mut pids = BTreeSet::new();
    for line in show_proc.lines() {
        if line.starts_with('#') {
            in_workers = line.trim() == "# workers";
            continue;
        }
        if in_workers && let Some(pid) = line.split_whitespace().next().and_then(|p| p.parse().ok())
        {
            pids.insert(pid);
        }
    }
    pids
}

pub fn failed_reloads(show_proc: &str) -> Option<u32> {
    let start = show_proc.find("[failed: ")? + "[failed: ".len();
    show_proc[start..].split(']').next()?.trim().parse().ok()
}

impl ConfigTarget for MasterWorker {
    fn check<'a>(&'a self, config_text: &'a str) -> BoxFuture<'a, Result<(), ConfigRejected>> {
        Box::pin(async move {
            let (bin, dir, text) = (self.bin.clone(), self.dir.clone(), config_text.to_owned());
            let outcome = tokio::task::spawn_blocking(move || haproxy_check(&bin, &dir, &text))
                .await
                .unwrap();
            if outcome.valid {
                Ok(())
            } else {
                Err(ConfigRejected {
                    lines: outcome.alerts,
                })
            }
        })
    }

    fn reload<'a>(
        &'a self,
        config_text: &'a str,
        _reason: &'a str,
    ) -> BoxFuture<'a, Result<ReloadReport, ReloadError>> {
        Box::pin(async move {
            let _serial = self.reload_lock.lock().await;
            let started = Instant::now();
            let unavailable = |e: std::io::Error| ReloadError::Unavailable(e.to_string());
            let before = self.master("show proc").await.map_err(unavailable)?;
            let (old_workers, old_failed) = (workers(&before), failed_reloads(&before));
            thalassa::atomic_file::write_atomic(&self.cfg, config_text.as_bytes())
                .map_err(unavailable)?;
            // `reload` answers nothing on 2.6 and closes the connection.
            let _ = self.master("reload").await;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                // The master CLI refuses connections while the master re-executes.
                if let Ok(now) = self.master("show proc").await {
                    if failed_reloads(&now) > old_failed {
                        return Err(ReloadError::Failed(format!("show proc: {}", now.trim())));
                    }
                    if let Some(pid) = workers(&now).difference(&old_workers).next() {
                        return Ok(ReloadReport {
                            duration: started.elapsed(),
                            worker_pid: Some(*pid),
                        });
                    }
                }
                if Instant::now() > deadline {
                    return Err(ReloadError::Unavailable(
                        "no new worker after reload".into(),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    }
}
