//! `POST /backends/{key}/rollout` bodies, and a backend with its rollout as stored (the state
//! file, a fleet's store). Whether the backend can take the rollout (dynamic, a balance that
//! honours weights, a way to be sticky) is decided where the backend is at hand: the
//! controller's rollout transitions.

use super::{Fields, number};
use crate::api_error::ApiError;
use crate::config::rollout::{AbortRule, Rollout, RolloutPlan, parse_interval};
use crate::config::{Backend, BackendType};
use serde_json::Value;

/// Most steps a plan may have.
pub const MAX_STEPS: usize = 20;

/// Longest step interval: one day.
pub const MAX_STEP_INTERVAL_MS: u64 = 86_400_000;

/// Shortest step interval: a few stats polls (one a second) must fit in a step.
pub const MIN_STEP_INTERVAL_MS: u64 = 1_000;

/// What a client asks for: a manual weight, or a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutRequest {
    pub version: String,
    /// Percent of new sessions for `version` (manual rollout).
    pub weight: Option<u8>,
    pub plan: Option<RolloutPlan>,
    /// Keep each client on the version it got (the default).
    pub sticky: bool,
}

pub fn rollout_request(body: &Value) -> Result<RolloutRequest, ApiError> {
    let mut fields = Fields::top_level(body)?;
    let version = fields
        .registry_segment("version")?
        .ok_or_else(|| ApiError::bad_field("version", "version is required"))?;
    let weight = match fields.take("weight") {
        None | Some(Value::Null) => None,
        Some(value) => Some(percent("weight", &value)?),
    };
    let steps = match fields.take("steps") {
        None | Some(Value::Null) => None,
        Some(value) => Some(steps(&value)?),
    };
    let interval = fields.take("interval").filter(|v| !v.is_null());
    let abort = fields.take("abort").filter(|v| !v.is_null());
    let sticky = match fields.take("sticky") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(sticky)) => sticky,
        Some(_) => {
            return Err(ApiError::bad_field(
                "sticky",
                "sticky must be true or false",
            ));
        }
    };
    fields.finish()?;
    let plan = match (weight, steps) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_field(
                "steps",
                "give either weight (a manual rollout) or steps (a plan), not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::bad_field(
                "weight",
                "weight (a manual rollout) or steps (a plan) is required",
            ));
        }
        (Some(_), None) => {
            if interval.is_some() {
                return Err(ApiError::bad_field("interval", "interval needs steps"));
            }
            if abort.is_some() {
                return Err(ApiError::bad_field("abort", "abort needs steps"));
            }
            None
        }
        (None, Some(steps)) => {
            let (interval, interval_ms) = step_interval(interval.as_ref())?;
            Some(RolloutPlan {
                steps,
                interval,
                interval_ms,
                abort: abort_rule(abort.as_ref())?,
            })
        }
    };
    Ok(RolloutRequest {
        version,
        weight,
        plan,
        sticky,
    })
}

/// A backend row as stored: its PUT body, plus the rollout it carries.
pub fn stored_backend(key: &str, row: &Value) -> Result<Backend, ApiError> {
    let mut backend = super::backend(key, row)?;
    let Some(value) = row.get("rollout").filter(|v| !v.is_null()) else {
        return Ok(backend);
    };
    let bad = |message: String| ApiError::bad_field("rollout", message);
    let rollout: Rollout = serde_json::from_value(value.clone())
        .map_err(|err| bad(format!("rollout is not a stored rollout: {err}")))?;
    if backend.kind != BackendType::Dynamic {
        return Err(bad("a static backend has no rollout".to_owned()));
    }
    crate::registry::model::validate_segment("version", &rollout.version)
        .map_err(|err| bad(format!("rollout version {}", err.message)))?;
    if rollout.weight > 100 {
        return Err(bad("rollout weight must be 0..=100".to_owned()));
    }
    if let Some(plan) = &rollout.plan {
        let listed = Value::from(plan.steps.clone());
        steps(&listed)?;
        if rollout.step.is_none_or(|step| step >= plan.steps.len()) {
            return Err(bad("rollout step is not one of its plan's steps".to_owned()));
        }
    }
    backend.rollout = Some(Box::new(rollout));
    Ok(backend)
}

fn percent(field: &str, value: &Value) -> Result<u8, ApiError> {
    number(value)
        .filter(|n| *n <= 100)
        .and_then(|n| u8::try_from(n).ok())
        .ok_or_else(|| {
            ApiError::bad_field(field, format!("{field} must be a whole percent, 0 to 100"))
        })
}

/// Ascending whole percents, each 1..=100, the last one 100.
fn steps(value: &Value) -> Result<Vec<u8>, ApiError> {
    let Value::Array(items) = value else {
        return Err(ApiError::bad_field(
            "steps",
            "steps must be an array of percents",
        ));
    };
    if items.is_empty() || items.len() > MAX_STEPS {
        return Err(ApiError::bad_field(
            "steps",
            format!("steps must list 1 to {MAX_STEPS} percents"),
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let step = percent(&format!("steps[{i}]"), item)?;
        if step == 0 || out.last().is_some_and(|last| *last >= step) {
            return Err(ApiError::bad_field(
                format!("steps[{i}]"),
                "steps must rise, each above 0",
            ));
        }
        out.push(step);
    }
    if out.last() != Some(&100) {
        return Err(ApiError::bad_field(
            "steps",
            "the last step must be 100 (the plan finishes the switch)",
        ));
    }
    Ok(out)
}

/// `"60s"`, `"500ms"`, `"5m"`, or a number of seconds; 60 s when absent.
fn step_interval(value: Option<&Value>) -> Result<(String, u64), ApiError> {
    let text = match value {
        None => "60s".to_owned(),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Number(n)) => format!("{n}s"),
        Some(_) => return Err(interval_error()),
    };
    let ms = parse_interval(&text).ok_or_else(interval_error)?;
    if !(MIN_STEP_INTERVAL_MS..=MAX_STEP_INTERVAL_MS).contains(&ms) {
        return Err(interval_error());
    }
    Ok((text, ms))
}

fn interval_error() -> ApiError {
    ApiError::bad_field(
        "interval",
        "interval must be a duration from 1s to 24h, like \"60s\", \"1500ms\" or \"5m\"",
    )
}

/// `{"errorRate":0.05,"minRequests":200,"latencyP95Ms":500}`, each optional.
fn abort_rule(value: Option<&Value>) -> Result<AbortRule, ApiError> {
    let mut rule = AbortRule {
        error_rate: 0.05,
        min_requests: 100,
        latency_p95_ms: None,
    };
    let Some(value) = value else {
        return Ok(rule);
    };
    let mut fields = Fields::nested("abort", value)?;
    if let Some(rate) = fields.take("errorRate").filter(|v| !v.is_null()) {
        rule.error_rate = rate
            .as_f64()
            .filter(|r| (0.0..=1.0).contains(r))
            .ok_or_else(|| {
                ApiError::bad_field("abort.errorRate", "errorRate must be a number from 0 to 1")
            })?;
    }
    if let Some(min) = fields.take("minRequests").filter(|v| !v.is_null()) {
        rule.min_requests = number(&min).filter(|n| *n >= 1).ok_or_else(|| {
            ApiError::bad_field(
                "abort.minRequests",
                "minRequests must be a whole number above 0",
            )
        })?;
    }
    if let Some(latency) = fields.take("latencyP95Ms").filter(|v| !v.is_null()) {
        rule.latency_p95_ms = Some(number(&latency).filter(|n| *n >= 1).ok_or_else(|| {
            ApiError::bad_field(
                "abort.latencyP95Ms",
                "latencyP95Ms must be a whole number of milliseconds above 0",
            )
        })?);
    }
    fields.finish()?;
    Ok(rule)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused(body: Value) -> String {
        let err = rollout_request(&body).unwrap_err();
        assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST, "{body}");
        err.field.unwrap_or_default()
    }

    #[test]
    fn the_issues_bodies() {
        let manual = rollout_request(&json!({"version": "2.0.0", "weight": 5})).unwrap();
        assert_eq!(manual.weight, Some(5));
        assert!(manual.plan.is_none() && manual.sticky);
        let planned = rollout_request(&json!({"version":"2.0.0","steps":[5,25,50,100],
            "interval":"60s","abort":{"errorRate":0.05,"minRequests":200,"latencyP95Ms":500}}))
        .unwrap();
        let plan = planned.plan.unwrap();
        assert_eq!(plan.steps, vec![5, 25, 50, 100]);
        assert_eq!(plan.interval_ms, 60_000);
        assert_eq!(plan.abort.min_requests, 200);
        assert_eq!(plan.abort.latency_p95_ms, Some(500));
    }

    #[test]
    fn refusals_name_the_field() {
        assert_eq!(refused(json!({"weight": 5})), "version");
        assert_eq!(refused(json!({"version": "a b", "weight": 5})), "version");
        assert_eq!(refused(json!({"version": "2"})), "weight");
        assert_eq!(refused(json!({"version": "2", "weight": 101})), "weight");
        assert_eq!(refused(json!({"version": "2", "weight": -1})), "weight");
        assert_eq!(
            refused(json!({"version": "2", "weight": 5, "steps": [100]})),
            "steps"
        );
        assert_eq!(
            refused(json!({"version": "2", "weight": 5, "interval": "1s"})),
            "interval"
        );
        assert_eq!(refused(json!({"version": "2", "steps": [5, 50]})), "steps");
        assert_eq!(
            refused(json!({"version": "2", "steps": [50, 5, 100]})),
            "steps[1]"
        );
        assert_eq!(
            refused(json!({"version": "2", "steps": [0, 100]})),
            "steps[0]"
        );
        assert_eq!(refused(json!({"version": "2", "steps": "5,100"})), "steps");
        assert_eq!(
            refused(json!({"version": "2", "steps": [100], "interval": "0s"})),
            "interval"
        );
        assert_eq!(
            refused(json!({"version": "2", "steps": [100], "interval": "1d"})),
            "interval"
        );
        assert_eq!(
            refused(json!({"version": "2", "steps": [100], "abort": {"errorRate": 2}})),
            "abort.errorRate"
        );
        assert_eq!(
            refused(json!({"version": "2", "steps": [100], "abort": {"minRequests": 0}})),
            "abort.minRequests"
        );
        assert_eq!(
            refused(json!({"version": "2", "steps": [100], "abort": {"other": 1}})),
            "abort.other"
        );
        assert_eq!(
            refused(json!({"version": "2", "weight": 5, "sticky": "yes"})),
            "sticky"
        );
        assert_eq!(
            refused(json!({"version": "2", "weight": 5, "extra": 1})),
            "extra"
        );
    }

    #[test]
    fn a_stored_rollout_round_trips_and_a_bad_one_is_refused() {
        let row = json!({"type": "dynamic", "name": "api", "version": "1", "rollout": {
            "version": "2", "from": "1", "state": "running", "weight": 25, "sticky": "hash",
            "plan": {"steps": [5, 25, 100], "interval": "2s", "intervalMs": 2000,
                     "abort": {"errorRate": 0.1, "minRequests": 50}},
            "step": 1, "stepStarted": 1, "decisions": []}});
        let backend = stored_backend("api", &row).unwrap();
        assert_eq!(backend.rollout.as_ref().unwrap().weight, 25);
        for (path, value) in [
            ("weight", json!(101)),
            ("step", json!(3)),
            ("version", json!("a\nb")),
            ("state", json!("sideways")),
        ] {
            let mut bad = row.clone();
            bad["rollout"][path] = value;
            let err = stored_backend("api", &bad).unwrap_err();
            assert_eq!(err.field.as_deref(), Some("rollout"), "{path}");
        }
    }
}
