//! Where subsystems report what happened and what HAProxy said: implemented by the UI's hub
//! (and by anything else that wants the reports), so a reporter never knows who listens.

use super::{Activity, StatsSample};

/// A listener for activities and status samples. Reporting never blocks and never fails: a
/// listener that cannot keep up drops, it does not slow the reporter.
pub trait StatusSink: Send + Sync {
    fn activity(&self, entry: Activity);
    fn stats(&self, sample: StatsSample);
}
