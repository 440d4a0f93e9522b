//! HAProxy's own output (master and workers share its stdout/stderr): a bounded ring of recent
//! lines with sequence numbers, so a reload can collect exactly the ALERT lines it caused, and
//! a forwarder into `tracing`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::Notify;

/// The `[LEVEL]` prefix HAProxy puts on each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogLevel {
    Alert,
    Warning,
    Notice,
    /// Anything without a recognised prefix.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Increases by one per line over the supervisor's life.
    pub seq: u64,
    pub level: LogLevel,
    /// PID in the `(1234)` marker: the master or a worker.
    pub pid: Option<u32>,
    /// The message after the `[LEVEL] (pid) : ` prefix (or the whole line).
    pub message: String,
}

impl LogLine {
    /// Splits `[ALERT]    (11834) : config : ...` into its parts. Continuation lines
    /// (`   | ...`) take the level of the line they continue.
    pub(crate) fn parse(seq: u64, line: &str, previous: Option<LogLevel>) -> LogLine {
        let trimmed = line.trim_end();
        let level_of = |tag: &str| match tag {
            "ALERT" => LogLevel::Alert,
            "WARNING" => LogLevel::Warning,
            "NOTICE" => LogLevel::Notice,
            _ => LogLevel::Other,
        };
        if let Some(rest) = trimmed.strip_prefix('[')
            && let Some((tag, rest)) = rest.split_once(']')
        {
            let rest = rest.trim_start();
            let (pid, message) = match rest.strip_prefix('(').and_then(|r| r.split_once(')')) {
                Some((pid, message)) => (
                    pid.trim().parse().ok(),
                    message.trim_start().trim_start_matches(':').trim_start(),
                ),
                None => (None, rest),
            };
            return LogLine {
                seq,
                level: level_of(tag),
                pid,
                message: message.to_owned(),
            };
        }
        let level = match previous {
            Some(level) if trimmed.trim_start().starts_with('|') => level,
            _ => LogLevel::Other,
        };
        LogLine {
            seq,
            level,
            pid: None,
            message: trimmed.trim_start().to_owned(),
        }
    }
}

/// Recent HAProxy output, bounded.
#[derive(Debug)]
pub struct LogRing {
    capacity: usize,
    state: Mutex<RingState>,
    appended: Notify,
}

#[derive(Debug, Default)]
struct RingState {
    lines: VecDeque<LogLine>,
    next_seq: u64,
}

impl LogRing {
    pub fn new(capacity: usize) -> LogRing {
        LogRing {
            capacity: capacity.max(1),
            state: Mutex::new(RingState::default()),
            appended: Notify::new(),
        }
    }

    /// The sequence number the next line will get: a mark to collect "lines since".
    pub fn mark(&self) -> u64 {
        self.lock().next_seq
    }

    pub fn push(&self, raw: &str) {
        let line = {
            let mut state = self.lock();
            let previous = state.lines.back().map(|line| line.level);
            let line = LogLine::parse(state.next_seq, raw, previous);
            state.next_seq += 1;
            if state.lines.len() == self.capacity {
                state.lines.pop_front();
            }
            state.lines.push_back(line.clone());
            line
        };
        forward_to_tracing(&line);
        self.appended.notify_waiters();
    }

    /// Lines with `seq >= mark` still in the ring.
    pub fn since(&self, mark: u64) -> Vec<LogLine> {
        self.lock()
            .lines
            .iter()
            .filter(|line| line.seq >= mark)
            .cloned()
            .collect()
    }

    pub fn recent(&self) -> Vec<LogLine> {
        self.lock().lines.iter().cloned().collect()
    }

    /// Waits until a line after `mark` satisfies `wanted`, or `timeout` passes.
    pub async fn wait_for(
        &self,
        mark: u64,
        timeout: Duration,
        wanted: impl Fn(&LogLine) -> bool,
    ) -> Option<LogLine> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register interest before looking, so a push in between is not missed.
            let appended = self.appended.notified();
            if let Some(line) = self.since(mark).into_iter().find(|line| wanted(line)) {
                return Some(line);
            }
            if tokio::time::timeout_at(deadline, appended).await.is_err() {
                return None;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RingState> {
        // A panic while holding this lock cannot leave the ring inconsistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn forward_to_tracing(line: &LogLine) {
    let pid = line.pid.unwrap_or(0);
    match line.level {
        // HAProxy prints every reload's normal lifecycle as warnings; they are not surprises.
        LogLevel::Warning if is_lifecycle(&line.message) => {
            tracing::debug!(haproxy_pid = pid, "haproxy: {}", line.message)
        }
        LogLevel::Alert => tracing::error!(haproxy_pid = pid, "haproxy: {}", line.message),
        LogLevel::Warning => tracing::warn!(haproxy_pid = pid, "haproxy: {}", line.message),
        LogLevel::Notice => tracing::info!(haproxy_pid = pid, "haproxy: {}", line.message),
        LogLevel::Other => tracing::debug!(haproxy_pid = pid, "haproxy: {}", line.message),
    }
}

/// Warnings HAProxy prints in normal operation: old proxies and workers going away on every
/// reload or stop, health-check results.
pub fn is_lifecycle(message: &str) -> bool {
    (message.starts_with("Proxy ") && message.contains(" stopped (cumulated conns: "))
        || (message.starts_with("Former worker (") && message.contains(") exited with code 0"))
        || (message.starts_with("Current worker (") && message.contains(") exited with code 0"))
        || message.starts_with("All workers exited.")
        // `option log-health-checks` (for the health-events ring) also prints each check
        // result change as a warning; the membership manager reads them from the ring.
        || message.starts_with("Health check for server ")
        || message.starts_with("Stopping ")
}

/// Once the lines already read are handled, the next read waits this long. HAProxy writes
/// each line with separate small writes (hundreds of health-check lines a second under churn,
/// and the access log): woken for each, the control plane would spend its CPU on wake-ups
/// that the fast lane needs, while a pipe (64 KiB) holds far more than this pause gathers.
const BATCH_PAUSE: Duration = Duration::from_millis(10);

/// Copies one of HAProxy's output pipes into the ring until EOF.
pub(crate) async fn capture(output: impl AsyncRead + Unpin, ring: std::sync::Arc<LogRing>) {
    let mut reader = BufReader::with_capacity(64 * 1024, output);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.buffer().is_empty() {
            tokio::time::sleep(BATCH_PAUSE).await;
        }
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches(['\n', '\r']);
                if !text.trim().is_empty() {
                    ring.push(text);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str, previous: Option<LogLevel>, expected: (LogLevel, Option<u32>, &str)) {
        let line = LogLine::parse(0, raw, previous);
        assert_eq!(
            (line.level, line.pid, line.message.as_str()),
            expected,
            "{raw}"
        );
    }

    #[test]
    fn parses_haproxy_prefixes() {
        check(
            "[ALERT]    (11834) : config : Proxy 'extra': unable to find required default_backend: 'be'.",
            None,
            (
                LogLevel::Alert,
                Some(11834),
                "config : Proxy 'extra': unable to find required default_backend: 'be'.",
            ),
        );
        check(
            "[WARNING]  (12414) : Server be/up1 is UP",
            None,
            (LogLevel::Warning, Some(12414), "Server be/up1 is UP"),
        );
        check(
            "[NOTICE]   (1) : Loading success.",
            None,
            (LogLevel::Notice, Some(1), "Loading success."),
        );
        check(
            "   | with such a configuration. To fix this",
            Some(LogLevel::Warning),
            (
                LogLevel::Warning,
                None,
                "| with such a configuration. To fix this",
            ),
        );
        check(
            "Configuration file is valid",
            Some(LogLevel::Alert),
            (LogLevel::Other, None, "Configuration file is valid"),
        );
        check("[", None, (LogLevel::Other, None, "["));
        check("[DEBUG] no pid", None, (LogLevel::Other, None, "no pid"));
    }

    #[test]
    fn ring_is_bounded_and_marks_work() {
        let ring = LogRing::new(3);
        ring.push("[NOTICE] (1) : a");
        let mark = ring.mark();
        for text in ["b", "c", "d"] {
            ring.push(&format!("[ALERT] (1) : {text}"));
        }
        let recent: Vec<_> = ring.recent().into_iter().map(|l| l.message).collect();
        assert_eq!(recent, vec!["b", "c", "d"]);
        let since: Vec<_> = ring.since(mark).into_iter().map(|l| l.seq).collect();
        assert_eq!(since, vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn wait_for_sees_later_lines_and_times_out() {
        let ring = std::sync::Arc::new(LogRing::new(10));
        let mark = ring.mark();
        let pusher = ring.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            pusher.push("[WARNING] (1) : Loading failure!");
        });
        let found = ring
            .wait_for(mark, Duration::from_secs(5), |l| {
                l.message == "Loading failure!"
            })
            .await;
        assert!(found.is_some());
        let missing = ring
            .wait_for(mark, Duration::from_millis(30), |l| l.message == "never")
            .await;
        assert!(missing.is_none());
    }
}
