//! Everything that talks to HAProxy: rendering haproxy.cfg, supervising the master-worker
//! process, the runtime (stats socket) and master CLI clients, and parsing their output.

pub mod master_cli;
pub mod render;
pub mod runtime;
pub mod server_name;
pub mod stat;
pub mod supervisor;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// HAProxy refused a candidate configuration; `lines` are its own ALERT/error lines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("haproxy rejected the configuration: {}", lines.join(" | "))]
pub struct ConfigRejected {
    pub lines: Vec<String>,
}

/// Why a reload did not take effect. The previous configuration keeps serving in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Rejected(#[from] ConfigRejected),
    /// The master reported the reload as failed (`show proc` counted a failure).
    #[error("haproxy reload failed: {0}")]
    Failed(String),
    /// HAProxy could not be reached or started.
    #[error("haproxy unavailable: {0}")]
    Unavailable(String),
}

/// What a successful reload cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Wall time from the reload request to the new worker being verified.
    pub duration: Duration,
    /// PID of the worker now serving.
    pub worker_pid: Option<u32>,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The narrow interface the aqueduct's apply pipeline needs from an HAProxy: validate a
/// candidate config, and make a config live. Implemented by `supervisor::Supervisor`.
/// Implementations serialise reloads themselves.
pub trait ConfigTarget: Send + Sync + 'static {
    /// Runs `haproxy -c` on the text without touching the running process.
    fn check<'a>(&'a self, config_text: &'a str) -> BoxFuture<'a, Result<(), ConfigRejected>>;
    /// Validates, writes and reloads; returns once the new worker serves (or the reload was
    /// rolled back to the previous config).
    fn reload<'a>(
        &'a self,
        config_text: &'a str,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<ReloadReport, ReloadError>>;
}
