//! A progressive rollout of a dynamic backend from its `version` to another: both versions'
//! members stay in HAProxy and their weights split new sessions between them; a plan moves
//! the split step by step. This module is the model (what is persisted and shared with a
//! fleet) and the weight arithmetic; the aqueduct's rollout engine decides the steps.
//!
//! The JSON form (serde, camelCase) is the one `GET /backends/{key}` shows under `rollout`,
//! the state file stores and a fleet's store carries.

use serde::{Deserialize, Serialize};

/// The weight a side of a split gets when it is the larger one. HAProxy's maximum (256)
/// gives the other side the finest steps: 1/256 of a member's share.
pub const FULL_WEIGHT: u16 = 256;

/// The weight of a member outside any rollout: HAProxy's default for a server.
pub const DEFAULT_WEIGHT: u16 = 1;

/// Most decisions a rollout keeps (the oldest go first); the activity log keeps them all.
pub const MAX_DECISIONS: usize = 50;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// The version new sessions move to.
    pub version: String,
    /// The version they leave: the backend's own until the rollout finishes.
    pub from: String,
    pub state: RolloutState,
    /// Percent of new sessions the new version gets now (0-100).
    pub weight: u8,
    pub sticky: Stickiness,
    /// `None` for a manual rollout (the operator sets each weight).
    #[serde(default)]
    pub plan: Option<RolloutPlan>,
    /// Index into the plan's steps.
    #[serde(default)]
    pub step: Option<usize>,
    /// Epoch milliseconds when the current weight was set.
    pub step_started: u64,
    /// Newest last, at most [`MAX_DECISIONS`].
    #[serde(default)]
    pub decisions: Vec<Decision>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RolloutState {
    /// Both versions serve; a plan advances by itself.
    Running,
    /// Both versions serve at the current weight; a plan waits for `resume`.
    Paused,
    /// Rolled back: only the backend's version serves. Kept to show why.
    Aborted,
    /// The backend moved to the new version. Kept to show how.
    Finished,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Aborted => "aborted",
            RolloutState::Finished => "finished",
        }
    }
}

/// What keeps a client on the version it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stickiness {
    /// The backend's consistent hash (source, uri, hdr(), ...): raising the new version's
    /// weight before lowering the old one's moves no client from new back to old.
    Hash,
    /// The backend's `stickyCookie`, a dynamic cookie per server.
    Cookie,
    /// Asked for: every new connection is balanced again.
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutPlan {
    /// Ascending weights, the last one 100.
    pub steps: Vec<u8>,
    /// As the client sent it, e.g. `60s`.
    pub interval: String,
    pub interval_ms: u64,
    pub abort: AbortRule,
}

/// When a plan rolls back by itself, judged on the new version's figures over the current
/// step (only once it has served `min_requests`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AbortRule {
    /// Errors / requests (0-1) above which the new version is rolled back, when it is also
    /// worse than the old version's.
    pub error_rate: f64,
    pub min_requests: u64,
    /// Bound on the new version's response time. HAProxy keeps no percentiles: this is
    /// compared with its per-server `rtime` (the average over each server's last 1,024
    /// responses), the closest figure `show stat` has.
    #[serde(
        default,
        rename = "latencyP95Ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub latency_p95_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// Epoch milliseconds.
    pub time: u64,
    pub action: DecisionAction,
    /// The new version's share after the decision.
    pub weight: u8,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub figures: Option<Figures>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecisionAction {
    Start,
    Weight,
    Advance,
    Pause,
    Resume,
    Promote,
    Abort,
    Finish,
}

impl DecisionAction {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionAction::Start => "start",
            DecisionAction::Weight => "weight",
            DecisionAction::Advance => "advance",
            DecisionAction::Pause => "pause",
            DecisionAction::Resume => "resume",
            DecisionAction::Promote => "promote",
            DecisionAction::Abort => "abort",
            DecisionAction::Finish => "finish",
        }
    }
}

/// Both versions' figures over one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub new: VersionFigures,
    pub old: VersionFigures,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionFigures {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    /// The request-weighted mean of its servers' `rtime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtime_ms: Option<u64>,
}

impl VersionFigures {
    pub fn new(requests: u64, errors: u64, rtime_ms: Option<u64>) -> Self {
        let error_rate = if requests == 0 {
            0.0
        } else {
            errors as f64 / requests as f64
        };
        VersionFigures {
            requests,
            errors,
            error_rate,
            rtime_ms,
        }
    }
}

impl Rollout {
    /// Both versions are in HAProxy (running or paused).
    pub fn is_active(&self) -> bool {
        matches!(self.state, RolloutState::Running | RolloutState::Paused)
    }

    /// Records a decision, keeping the newest [`MAX_DECISIONS`].
    pub fn record(&mut self, decision: Decision) {
        self.decisions.push(decision);
        if self.decisions.len() > MAX_DECISIONS {
            let excess = self.decisions.len() - MAX_DECISIONS;
            self.decisions.drain(..excess);
        }
    }

    /// The weight each member of `version` gets while this rollout is active, with `old`
    /// members of the backend's version and `new` members of the rollout's.
    pub fn member_weight(&self, version: &str, old: usize, new: usize) -> u16 {
        let (old_weight, new_weight) = split_weights(self.weight, old, new);
        if version == self.version {
            new_weight
        } else {
            old_weight
        }
    }
}

/// Per-member weights `(old, new)` so that the new side gets `share` percent of new sessions
/// whatever the member counts: the side whose members need the larger weight gets
/// [`FULL_WEIGHT`], the other side's are scaled down by the counts (at least 1, so a share
/// above 0 is never rounded away).
pub fn split_weights(share: u8, old: usize, new: usize) -> (u16, u16) {
    let full = FULL_WEIGHT;
    match share {
        0 => return (full, 0),
        100.. => return (0, full),
        _ => {}
    }
    if old == 0 || new == 0 {
        return (full, full);
    }
    let p = f64::from(share);
    // A new member's weight over an old member's.
    let ratio = p * old as f64 / ((100.0 - p) * new as f64);
    let scale = |x: f64| ((f64::from(full) * x).round() as u16).clamp(1, full);
    if ratio <= 1.0 {
        (full, scale(ratio))
    } else {
        (scale(1.0 / ratio), full)
    }
}

/// Parses an interval as `500ms`, `60s`, `5m` or a bare number of seconds.
pub fn parse_interval(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, unit_ms) = if let Some(d) = text.strip_suffix("ms") {
        (d, 1)
    } else if let Some(d) = text.strip_suffix('s') {
        (d, 1_000)
    } else if let Some(d) = text.strip_suffix('m') {
        (d, 60_000)
    } else if let Some(d) = text.strip_suffix('h') {
        (d, 3_600_000)
    } else {
        (text, 1_000)
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(unit_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The share the new side gets with these weights and counts.
    fn share(old_weight: u16, new_weight: u16, old: usize, new: usize) -> f64 {
        let old_total = f64::from(old_weight) * old as f64;
        let new_total = f64::from(new_weight) * new as f64;
        100.0 * new_total / (old_total + new_total)
    }

    #[test]
    fn weights_give_the_share_whatever_the_counts() {
        for old in 1..=12 {
            for new in 1..=12 {
                // Below 5 % (or above 95 %) a dozen members at the least weight, 1, already
                // weigh more than the share: the split is as close as whole weights allow.
                for target in [5u8, 10, 25, 33, 50, 67, 75, 90, 95] {
                    let (w_old, w_new) = split_weights(target, old, new);
                    let got = share(w_old, w_new, old, new);
                    // Whole weights round: with up to a dozen members a side, the share
                    // is at most 1.6 points off (the issue allows 3 for the measured split).
                    assert!(
                        (got - f64::from(target)).abs() < 2.0,
                        "{target}% with {old} old and {new} new: {w_old}/{w_new} give {got:.2}%"
                    );
                    assert!(w_old >= 1 && w_new >= 1 && w_old <= 256 && w_new <= 256);
                }
            }
        }
    }

    #[test]
    fn the_ends_and_a_missing_side() {
        assert_eq!(split_weights(0, 2, 2), (256, 0));
        assert_eq!(split_weights(100, 2, 2), (0, 256));
        assert_eq!(split_weights(30, 0, 2), (256, 256));
        assert_eq!(split_weights(30, 2, 0), (256, 256));
        assert_eq!(split_weights(50, 3, 3), (256, 256));
    }

    #[test]
    fn raising_the_share_never_lowers_the_new_weight_or_raises_the_old() {
        // The monotone schedule consistent hashing needs to move no client from new to old.
        let mut last = (FULL_WEIGHT, 0);
        for target in 0..=100u8 {
            let now = split_weights(target, 3, 2);
            assert!(
                now.1 >= last.1 && now.0 <= last.0,
                "{target}: {last:?} -> {now:?}"
            );
            last = now;
        }
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("60s"), Some(60_000));
        assert_eq!(parse_interval("500ms"), Some(500));
        assert_eq!(parse_interval("5m"), Some(300_000));
        assert_eq!(parse_interval("1h"), Some(3_600_000));
        assert_eq!(parse_interval("90"), Some(90_000));
        for bad in [
            "",
            "s",
            "-1s",
            "1.5s",
            "60 s",
            "1d",
            "99999999999999999999s",
        ] {
            assert_eq!(parse_interval(bad), None, "{bad}");
        }
    }

    #[test]
    fn decisions_keep_the_newest() {
        let mut rollout = Rollout {
            version: "2".into(),
            from: "1".into(),
            state: RolloutState::Running,
            weight: 5,
            sticky: Stickiness::Hash,
            plan: None,
            step: None,
            step_started: 0,
            decisions: Vec::new(),
        };
        for time in 0..(MAX_DECISIONS as u64 + 7) {
            rollout.record(Decision {
                time,
                action: DecisionAction::Weight,
                weight: 5,
                reason: String::new(),
                figures: None,
            });
        }
        assert_eq!(rollout.decisions.len(), MAX_DECISIONS);
        assert_eq!(rollout.decisions[0].time, 7);
    }
}
