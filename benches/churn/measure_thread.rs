//! The measuring thread: registry requests and appearance probes run on a small runtime of
//! their own, on a thread of its own.
//!
//! Why: a latency is stamped by the harness at both ends (the request is about to be sent;
//! HAProxy's answer has arrived). On the runtime that also runs the load generator and the
//! origins (thousands of requests a second), a stamp waits behind that work, and the wait is
//! counted against the system under test. On its own thread, mostly asleep, the kernel wakes
//! it promptly. It gets no special priority: the system under test competes with it as with
//! any client.

use tokio::runtime::Handle;
use tokio::sync::oneshot;

pub struct MeasureThread {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MeasureThread {
    pub fn start() -> Result<MeasureThread, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| format!("measuring runtime: {err}"))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("churn-measure".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(|err| format!("measuring thread: {err}"))?;
        Ok(MeasureThread {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where measuring tasks are spawned.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }
}

impl Drop for MeasureThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
