//! The background runtime: work that is never waited on by a client (the membership
//! manager's reconcile rounds, the stats poll, the UI's config view) runs on a thread of its
//! own, at a lower CPU priority.
//!
//! Why: those jobs compute in chunks of milliseconds (parsing thousands of servers, planning,
//! building JSON for every member). On the shared runtime each chunk holds a worker thread,
//! and whatever was queued on that worker (a registration being answered, the fast lane's
//! next join) waits behind it. On their own thread the kernel schedules them, and the lower
//! priority tells it that registrations and joins go first when the machine is busy.

use std::future::Future;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How much lower than the rest of the process the background thread runs (nice levels):
/// a tenth of a normal thread's CPU share when the machine is saturated. Measured on the
/// 2-core churn benchmark (500 changes/s), register -> in HAProxy p99: about 20 ms at nice 0
/// or 5, 17 ms at 10, 15 ms at 19. Not 19: the manager also turns checked joins into serving
/// members and drains expiries, and must not starve on a busy machine; its rounds slow down
/// gracefully (they take at most a quarter of the time) instead.
const BACKGROUND_NICE: i32 = 10;

/// Owns the thread; dropping it stops the runtime and every task on it.
pub struct Background {
    handle: Handle,
    _stop: oneshot::Sender<()>,
}

impl Background {
    pub fn start() -> std::io::Result<Background> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("background".into())
            .spawn(move || {
                lower_this_thread(BACKGROUND_NICE);
                // Ends when the owner is dropped (the sender goes away).
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(Background {
            handle,
            _stop: stop,
        })
    }

    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }
}

/// Raises the calling thread's nice value by `delta` (lower priority). On Linux a nice value
/// belongs to a thread, so the rest of the process is unaffected. Never fails the caller:
/// without the permission or the platform support it logs and carries on.
fn lower_this_thread(delta: i32) {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        let current = rustix::process::getpriority_process(Some(tid)).unwrap_or(0);
        if let Err(err) = rustix::process::setpriority_process(Some(tid), current + delta) {
            tracing::debug!(error = %err, "cannot lower this thread's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = delta;
}
