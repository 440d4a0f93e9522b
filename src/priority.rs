//! Thread CPU priority: background work (the membership manager's rounds) runs at a lower
//! priority than the paths that answer clients and land joins, so that on a busy machine the
//! kernel runs those first.

/// Raises the calling thread's nice value by `delta` (lower priority). On Linux a nice value
/// belongs to a thread, so the rest of the process is unaffected. Never fails the caller:
/// without the permission or the platform support it logs and carries on.
pub fn lower_this_thread(delta: i32) {
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
