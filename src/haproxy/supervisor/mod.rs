//! `Supervisor`: owns one HAProxy in master-worker mode as a child process. It validates and
//! applies configs (`ConfigTarget`: `haproxy -c`, then a verified reload that rolls back on
//! failure), carries runtime server state across reloads, restarts HAProxy with backoff when
//! it dies, and never leaves a second HAProxy of its run directory running.
//!
//! The config the renderer produces must contain, for this to work:
//! ```text
//! global
//!     stats socket <admin_socket_path()> mode 600 level admin expose-fd listeners
//!     server-state-file <server_state_path()>
//! defaults
//!     load-server-state-from-file global
//! ```

mod check;
mod external;
mod log;
mod metrics;
mod process;
mod reload;
mod takeover;

pub use log::{LogLevel, LogLine, LogRing};
pub use metrics::SupervisorMetrics;
pub use takeover::leftover_servers;

use super::master_cli::{self, MasterCliError};
use super::runtime::RuntimeClient;
use super::stat::ProcList;
use super::{BoxFuture, ConfigRejected, ConfigTarget, ReloadError, ReloadReport};
use crate::atomic_file::write_atomic;
use rustix::process::Signal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::process::Child;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where HAProxy lives and how patient to be with it.
#[derive(Debug, Clone)]
pub struct SupervisorSettings {
    /// The `haproxy` binary.
    pub bin: PathBuf,
    /// Holds the config, the sockets and the server-state file. Made absolute: `-S` needs an
    /// absolute path, and HAProxy re-executes itself from its own working directory.
    pub run_dir: PathBuf,
    /// Longest wait for a started or reloaded HAProxy to answer with its new worker.
    pub ready_timeout: Duration,
    /// First delay before restarting a dead HAProxy; doubles per failed attempt.
    pub restart_backoff_min: Duration,
    pub restart_backoff_max: Duration,
    /// On shutdown, how long workers may finish their connections (soft stop) before a
    /// hard stop.
    pub shutdown_grace: Duration,
    /// Recent HAProxy output lines kept in memory.
    pub log_lines: usize,
    /// HAProxy is run by something else (its own container) on this run directory: attach to
    /// it, never start, stop or signal it (see `external`).
    pub external: bool,
}

impl SupervisorSettings {
    pub fn new(bin: impl Into<PathBuf>, run_dir: impl Into<PathBuf>) -> SupervisorSettings {
        let run_dir = run_dir.into();
        SupervisorSettings {
            bin: bin.into(),
            run_dir: std::path::absolute(&run_dir).unwrap_or(run_dir),
            ready_timeout: Duration::from_secs(15),
            restart_backoff_min: Duration::from_millis(100),
            restart_backoff_max: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            log_lines: 1000,
            external: false,
        }
    }

    /// For `stats socket <path> mode 600 level admin` in `global`.
    pub fn admin_socket_path(&self) -> PathBuf {
        self.run_dir.join("admin.sock")
    }

    /// For `server-state-file <path>` in `global`.
    pub fn server_state_path(&self) -> PathBuf {
        self.run_dir.join("server-state")
    }

    pub fn config_path(&self) -> PathBuf {
        self.run_dir.join("haproxy.cfg")
    }

    pub fn master_socket_path(&self) -> PathBuf {
        self.run_dir.join("master.sock")
    }
}

/// `haproxy -c` on a config text without a supervised HAProxy, for offline tools such as the
/// import of the original aqueduct's data: the same check every change passes before it is
/// applied. `settings.run_dir` must exist (the check runs there; its scratch copy falls back
/// to the temp dir); messages name the config `haproxy.cfg`.
pub async fn check_config_offline(
    settings: &SupervisorSettings,
    config_text: &str,
) -> Result<(), ConfigRejected> {
    check::check_config(settings, config_text).await
}

/// A `show servers state` file that carries nothing: written when there is no fresh state, so
/// HAProxy never applies stale states (and does not warn about a missing file).
const EMPTY_SERVER_STATE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n";

/// The config to restart a dead HAProxy with: the current model with its current members
/// (an empty text means "none"). Fresher than the last reloaded config, which lacks every
/// member added at runtime since, so a restarted HAProxy serves at once instead of answering
/// 503 until the members are added again.
pub type RestartConfigSource = Arc<dyn Fn() -> String + Send + Sync>;

/// State shared by the public handle, the reload path and the monitor task.
struct Shared {
    settings: SupervisorSettings,
    /// Our `-S` argument: identifies our HAProxy processes in /proc.
    fingerprint: String,
    logs: Arc<LogRing>,
    metrics: SupervisorMetrics,
    runtime: RuntimeClient,
    /// Serialises reloads and restarts (one at a time) and holds the config HAProxy last
    /// accepted, which is what a restart starts from.
    last_good_config: tokio::sync::Mutex<String>,
    /// 0 while no master runs.
    master_pid: AtomicU32,
    stopping: AtomicBool,
    /// Left serving for the next start ([`Supervisor::leave_serving`]): dropping the handle
    /// kills nothing.
    left_serving: AtomicBool,
    reloads: watch::Sender<u64>,
    restarts: watch::Sender<u64>,
    restart_config: std::sync::Mutex<Option<RestartConfigSource>>,
}

/// The handle to a supervised HAProxy. Dropping it kills HAProxy; call `shutdown` to stop it
/// gracefully, or `leave_serving` to hand it to the next start.
pub struct Supervisor {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    monitor: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Supervisor {
    /// Validates `initial_config`, writes it, starts HAProxy and returns once its worker
    /// answers on the admin socket. An HAProxy of the same run directory left serving by an
    /// earlier run (killed without stopping it) is taken over without a gap: the new master
    /// takes its listening sockets and server states, then it is soft-stopped; leftovers that
    /// do not answer are killed first. Render the config with the servers
    /// [`leftover_servers`] reports so the new worker starts with them.
    pub async fn start(
        settings: SupervisorSettings,
        initial_config: &str,
    ) -> Result<Supervisor, ReloadError> {
        std::fs::create_dir_all(&settings.run_dir).map_err(|err| {
            ReloadError::Unavailable(format!(
                "cannot create run directory {}: {err}",
                settings.run_dir.display()
            ))
        })?;
        let shared = Arc::new(Shared {
            fingerprint: process::master_socket_arg(&settings),
            logs: Arc::new(LogRing::new(settings.log_lines)),
            metrics: SupervisorMetrics::default(),
            runtime: RuntimeClient::new(settings.admin_socket_path()),
            last_good_config: tokio::sync::Mutex::new(initial_config.to_owned()),
            master_pid: AtomicU32::new(0),
            stopping: AtomicBool::new(false),
            left_serving: AtomicBool::new(false),
            reloads: watch::Sender::new(0),
            restarts: watch::Sender::new(0),
            restart_config: std::sync::Mutex::new(None),
            settings,
        });
        shared.check(initial_config).await?;
        if shared.settings.external {
            return Self::attach(shared, initial_config).await;
        }

        // An HAProxy left serving by an earlier run (killed without stopping it) is taken
        // over without a gap; one that does not answer is killed.
        let leftover = takeover::find_leftover(&shared.settings, &shared.fingerprint).await;
        if leftover.is_none() {
            let leftovers = process::reap_leftovers(&shared.fingerprint).await;
            if !leftovers.is_empty() {
                tracing::warn!(pids = ?leftovers, "killed haproxy processes left by an earlier run");
            }
        }
        let settings = &shared.settings;
        let servers_state = leftover
            .as_ref()
            .map_or(EMPTY_SERVER_STATE, |old| old.servers_state.as_str());
        write_start_files(settings, initial_config, servers_state)?;

        let child = match leftover {
            None => launch(&shared, None).await?,
            Some(old) => match launch(&shared, Some(&old.pids)).await {
                Ok(child) => {
                    tracing::info!(old_pids = ?old.pids,
                        "took over the listening sockets of the haproxy an earlier run left serving");
                    child
                }
                Err(err) => {
                    tracing::warn!(error = %err, old_pids = ?old.pids,
                        "taking over the leftover haproxy failed; replacing it");
                    process::reap_leftovers(&shared.fingerprint).await;
                    shared.write_empty_server_state();
                    launch(&shared, None).await?
                }
            },
        };
        tracing::info!(
            master_pid = shared.master_pid.load(Ordering::Relaxed),
            run_dir = %shared.settings.run_dir.display(),
            "haproxy started"
        );
        let (shutdown, shutdown_rx) = watch::channel(false);
        let monitor = tokio::spawn(monitor(shared.clone(), child, shutdown_rx));
        Ok(Supervisor {
            shared,
            shutdown,
            monitor: std::sync::Mutex::new(Some(monitor)),
        })
    }

    /// `start` for an external HAProxy: writes the config it is to start from (it waits for
    /// the file) unless it already runs, attaches, and reloads one that ran already with the
    /// config of this start.
    async fn attach(shared: Arc<Shared>, initial_config: &str) -> Result<Supervisor, ReloadError> {
        let settings = &shared.settings;
        let running = master_cli::show_proc(&settings.master_socket_path())
            .await
            .is_ok();
        if !running {
            write_start_files(settings, initial_config, EMPTY_SERVER_STATE)?;
        }
        // Its own container may take a while to start it.
        let master = external::attach(&shared, settings.ready_timeout * 4).await?;
        if running {
            reload::reload(&shared, initial_config, "attached to the external haproxy").await?;
        }
        tracing::info!(master_pid = master, run_dir = %settings.run_dir.display(),
            "attached to the external haproxy");
        let (shutdown, shutdown_rx) = watch::channel(false);
        let monitor = tokio::spawn(external::watch(shared.clone(), shutdown_rx));
        Ok(Supervisor {
            shared,
            shutdown,
            monitor: std::sync::Mutex::new(Some(monitor)),
        })
    }

    /// The admin socket client: the only writer to HAProxy's runtime API. Clones share one
    /// connection, which reloads and restarts re-establish to the current worker.
    pub fn runtime(&self) -> RuntimeClient {
        self.shared.runtime.clone()
    }

    pub fn settings(&self) -> &SupervisorSettings {
        &self.shared.settings
    }

    /// Where a restart after HAProxy died takes its config from (checked with `haproxy -c`
    /// first; the last good config when it is refused or empty).
    pub fn set_restart_config(&self, source: RestartConfigSource) {
        *self
            .shared
            .restart_config
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(source);
    }

    /// Increments after every successful reload.
    pub fn reloads(&self) -> watch::Receiver<u64> {
        self.shared.reloads.subscribe()
    }

    /// Increments after every restart of a dead HAProxy: runtime-added servers are gone and
    /// must be added again.
    pub fn restarts(&self) -> watch::Receiver<u64> {
        self.shared.restarts.subscribe()
    }

    pub fn metrics(&self) -> &SupervisorMetrics {
        &self.shared.metrics
    }

    /// HAProxy's recent output, oldest first.
    pub fn recent_log(&self) -> Vec<LogLine> {
        self.shared.logs.recent()
    }

    /// The master's PID, or `None` while HAProxy is down (being restarted).
    pub fn master_pid(&self) -> Option<u32> {
        Some(self.shared.master_pid.load(Ordering::Relaxed)).filter(|pid| *pid != 0)
    }

    /// `show proc` on the master CLI.
    pub async fn show_proc(&self) -> Result<ProcList, MasterCliError> {
        master_cli::show_proc(&self.shared.settings.master_socket_path()).await
    }

    /// The config HAProxy runs (the last one it accepted).
    pub async fn current_config(&self) -> String {
        self.shared.last_good_config.lock().await.clone()
    }

    /// Stops HAProxy: soft stop (workers finish their connections) for `shutdown_grace`, then
    /// a hard stop. Returns once no HAProxy of this run directory is left.
    pub async fn shutdown(&self) {
        if self.shared.settings.external {
            tracing::info!("the external haproxy is not ours to stop");
            return self.leave_serving().await;
        }
        self.shared.stopping.store(true, Ordering::SeqCst);
        // An open admin-socket connection keeps a stopping worker alive until it times out.
        self.shared.runtime.disconnect_all().await;
        let _ = self.shutdown.send(true);
        let monitor = self.take_monitor();
        if let Some(monitor) = monitor {
            let _ = monitor.await;
        }
        process::reap_leftovers(&self.shared.fingerprint).await;
        tracing::info!("haproxy stopped");
    }

    /// The monitor task, once (`shutdown`, `leave_serving` and Drop each end it their way).
    fn take_monitor(&self) -> Option<JoinHandle<()>> {
        self.monitor
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    /// Stops supervising and leaves HAProxy serving, signalling nothing: the next start on
    /// the same run directory takes it over (its listening sockets and server states, see
    /// the `takeover` module), so a restart or an upgrade of the control plane drops no
    /// connection.
    /// Until then members are not updated, and a dead HAProxy is not restarted.
    pub async fn leave_serving(&self) {
        self.shared.left_serving.store(true, Ordering::SeqCst);
        self.shared.stopping.store(true, Ordering::SeqCst);
        let monitor = self.take_monitor();
        if let Some(monitor) = monitor {
            // Waits for a reload or restart in progress to finish: nothing is half done.
            let _last_good = self.shared.last_good_config.lock().await;
            monitor.abort();
            let _ = monitor.await;
        }
        self.shared.runtime.disconnect_all().await;
        tracing::info!(
            master_pid = self.shared.master_pid.load(Ordering::SeqCst),
            "haproxy left serving; the next start on this data directory takes it over"
        );
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        if self.shared.left_serving.load(Ordering::SeqCst) || self.shared.settings.external {
            return;
        }
        if let Some(monitor) = self.take_monitor() {
            monitor.abort();
        }
        // Not shut down gracefully: kill the master and every worker of this run directory
        // now, synchronously, by PID (an aborted task drops its Child only later).
        for pid in process::find_our_haproxies(&self.shared.fingerprint) {
            let _ = process::signal(pid, Signal::KILL);
        }
    }
}

impl ConfigTarget for Supervisor {
    fn check<'a>(&'a self, config_text: &'a str) -> BoxFuture<'a, Result<(), ConfigRejected>> {
        Box::pin(self.shared.check(config_text))
    }

    fn reload<'a>(
        &'a self,
        config_text: &'a str,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<ReloadReport, ReloadError>> {
        Box::pin(reload::reload(&self.shared, config_text, reason))
    }
}

impl Shared {
    async fn check(&self, config_text: &str) -> Result<(), ConfigRejected> {
        let result = check::check_config(&self.settings, config_text).await;
        let outcome = if result.is_ok() { "valid" } else { "rejected" };
        self.metrics.config_checks.inc(&[outcome]);
        result
    }

    /// The config a restart starts from: the source's current text if HAProxy accepts it,
    /// else `last_good`.
    async fn restart_config_text(&self, last_good: &str) -> String {
        let source = self
            .restart_config
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let Some(text) = source
            .map(|source| source())
            .filter(|text| !text.is_empty())
        else {
            return last_good.to_owned();
        };
        if text == last_good {
            return text;
        }
        match self.check(&text).await {
            Ok(()) => text,
            Err(err) => {
                tracing::warn!(error = %err, "the current config was refused; restarting from the last good one");
                last_good.to_owned()
            }
        }
    }

    fn master_socket(&self) -> PathBuf {
        self.settings.master_socket_path()
    }

    /// ALERT messages HAProxy printed since `mark`.
    fn alerts_since(&self, mark: u64) -> Vec<String> {
        self.logs
            .since(mark)
            .into_iter()
            .filter(|line| line.level == LogLevel::Alert)
            .map(|line| line.message)
            .collect()
    }

    fn write_empty_server_state(&self) {
        if let Err(err) = write_atomic(
            &self.settings.server_state_path(),
            EMPTY_SERVER_STATE.as_bytes(),
        ) {
            tracing::warn!(error = %err, "cannot reset the server-state file");
        }
    }
}

/// Spawns the master from the config on disk and waits until its worker answers on the admin
/// socket. On failure nothing is left running. With `take_over_from` (the processes of an
/// HAProxy an earlier run left serving), the new master takes their listening sockets, and the
/// old master is soft-stopped once the new worker exists.
async fn launch(shared: &Shared, take_over_from: Option<&[u32]>) -> Result<Child, ReloadError> {
    let settings = &shared.settings;
    let mark = shared.logs.mark();
    let mut child = process::spawn_master(settings, &shared.logs, take_over_from.is_some())
        .map_err(|err| {
            ReloadError::Unavailable(format!("cannot run {}: {err}", settings.bin.display()))
        })?;
    shared
        .master_pid
        .store(child.id().unwrap_or(0), Ordering::SeqCst);
    let deadline = Instant::now() + settings.ready_timeout;
    let probe =
        RuntimeClient::new(settings.admin_socket_path()).with_timeout(Duration::from_secs(2));
    // Until the old HAProxy stops accepting, it shares the admin socket with the new worker.
    let mut old_retired = take_over_from.is_none();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            shared.master_pid.store(0, Ordering::SeqCst);
            // Its last words may still be in the pipe.
            shared
                .logs
                .wait_for(mark, Duration::from_millis(500), |line| {
                    line.message.contains("Exiting") || line.message.contains("Fatal")
                })
                .await;
            let alerts = shared.alerts_since(mark);
            process::reap_leftovers(&shared.fingerprint).await;
            return Err(ReloadError::Failed(if alerts.is_empty() {
                format!("haproxy exited during start ({status})")
            } else {
                alerts.join(" | ")
            }));
        }
        // The master socket's path reaches the old master until the new one has bound it.
        let new_worker = master_cli::show_proc(&shared.master_socket())
            .await
            .ok()
            .and_then(|procs| procs.current_worker().map(|worker| worker.pid))
            .filter(|pid| take_over_from.is_none_or(|old| !old.contains(pid)));
        if let Some(worker_pid) = new_worker {
            let answered = matches!(probe.show_info().await,
                Ok(info) if info.pid() == Some(worker_pid));
            // Since 3.2 `show proc` lists the worker at fork, before it has loaded its config
            // and fetched the old worker's sockets (`-x`): the old HAProxy is retired only
            // once the new worker has loaded (the master says so, or the worker answers on
            // the admin socket it took over).
            if !old_retired && (answered || loaded_since(shared, mark)) {
                takeover::retire(shared, take_over_from.unwrap_or_default().to_vec());
                old_retired = true;
            }
            if answered {
                return Ok(child);
            }
        }
        probe.disconnect().await;
        if Instant::now() >= deadline {
            let _ = child.kill().await;
            shared.master_pid.store(0, Ordering::SeqCst);
            process::reap_leftovers(&shared.fingerprint).await;
            return Err(ReloadError::Unavailable(format!(
                "haproxy did not answer within {:?}",
                settings.ready_timeout
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The config and server-state file HAProxy starts from.
fn write_start_files(
    settings: &SupervisorSettings,
    config: &str,
    servers_state: &str,
) -> Result<(), ReloadError> {
    write_atomic(&settings.config_path(), config.as_bytes())
        .and_then(|()| write_atomic(&settings.server_state_path(), servers_state.as_bytes()))
        .map_err(|err| ReloadError::Unavailable(format!("cannot write haproxy files: {err}")))
}

/// Whether HAProxy printed `Loading success.` since `mark` (every line from 2.6 to 3.4 says
/// so once a new worker has loaded its config).
fn loaded_since(shared: &Shared, mark: u64) -> bool {
    shared
        .logs
        .since(mark)
        .iter()
        .any(|line| line.message.contains("Loading success"))
}

/// Watches the master: restarts it when it dies, stops it on shutdown.
async fn monitor(shared: Arc<Shared>, mut child: Child, mut shutdown: watch::Receiver<bool>) {
    let mut started_at = Instant::now();
    let mut backoff = shared.settings.restart_backoff_min;
    loop {
        tokio::select! {
            status = child.wait() => {
                shared.master_pid.store(0, Ordering::SeqCst);
                if shared.stopping.load(Ordering::SeqCst) {
                    return;
                }
                tracing::error!(
                    status = ?status.ok(),
                    ran_for = ?started_at.elapsed(),
                    "haproxy exited unexpectedly; restarting it"
                );
                // A master that ran a good while earns a fresh backoff.
                if started_at.elapsed() > Duration::from_secs(60) {
                    backoff = shared.settings.restart_backoff_min;
                }
                match restart(&shared, &mut shutdown, &mut backoff).await {
                    Some(restarted) => {
                        child = restarted;
                        started_at = Instant::now();
                    }
                    None => return,
                }
            }
            _ = shutdown.changed() => {
                stop(&shared, child).await;
                return;
            }
        }
    }
}

/// Starts HAProxy again from the last good config, with exponential backoff between
/// attempts. `None` when shutdown was requested meanwhile.
async fn restart(
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
    backoff: &mut Duration,
) -> Option<Child> {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(*backoff) => {}
            _ = shutdown.changed() => return None,
        }
        *backoff = (*backoff * 2).min(shared.settings.restart_backoff_max);
        if shared.stopping.load(Ordering::SeqCst) {
            return None;
        }
        let attempt = {
            let mut config = shared.last_good_config.lock().await;
            // A worker that outlived its master would share the ports with the new one.
            let leftovers = process::reap_leftovers(&shared.fingerprint).await;
            if !leftovers.is_empty() {
                tracing::warn!(pids = ?leftovers, "killed haproxy processes left by the dead master");
            }
            // Saved states describe the dead process; servers start from the config.
            shared.write_empty_server_state();
            let text = shared.restart_config_text(&config).await;
            let attempt = match write_atomic(&shared.settings.config_path(), text.as_bytes()) {
                Ok(()) => launch(shared, None).await,
                Err(err) => Err(ReloadError::Unavailable(format!(
                    "cannot write config: {err}"
                ))),
            };
            if attempt.is_ok() {
                *config = text;
            }
            attempt
        };
        match attempt {
            Ok(child) => {
                if shared.stopping.load(Ordering::SeqCst) {
                    stop(shared, child).await;
                    return None;
                }
                shared.metrics.restarts.inc();
                shared.restarts.send_modify(|generation| *generation += 1);
                shared.runtime.disconnect_all().await;
                tracing::info!(
                    master_pid = shared.master_pid.load(Ordering::Relaxed),
                    restarts = shared.metrics.restarts.get(),
                    "haproxy restarted"
                );
                return Some(child);
            }
            Err(err) => {
                tracing::error!(error = %err, retry_in = ?*backoff, "haproxy restart failed");
            }
        }
    }
}

/// Soft stop (SIGUSR1: workers finish their connections), then SIGTERM, then SIGKILL.
async fn stop(shared: &Shared, mut child: Child) {
    let steps = [
        (Signal::USR1, shared.settings.shutdown_grace),
        (Signal::TERM, Duration::from_secs(2)),
    ];
    for (signal, grace) in steps {
        if let Some(pid) = child.id() {
            let _ = process::signal(pid, signal);
        }
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            shared.master_pid.store(0, Ordering::SeqCst);
            return;
        }
    }
    let _ = child.kill().await;
    shared.master_pid.store(0, Ordering::SeqCst);
}
