//! The rollout engine's wiring: where its decisions go, and how each shows in the activity.

use crate::api_error::ApiError;
use crate::aqueduct::controller::Controller;
use crate::aqueduct::fleet::Fleet;
use crate::aqueduct::rollout::engine::Submit;
use crate::status::Activity;
use serde_json::json;
use std::sync::Arc;

/// Where the rollout engine's decisions go: through the fleet's store in a fleet (every
/// node applies them), to this node's apply pipeline alone otherwise.
pub(super) fn submitter(controller: &Controller, fleet: Option<&Fleet>) -> Submit {
    match fleet.cloned() {
        Some(fleet) => Arc::new(move |change| {
            let fleet = fleet.clone();
            Box::pin(async move {
                fleet
                    .submit(change, crate::aqueduct::fleet::WaitFor::ThisNode)
                    .await
                    .map(|_| ())
            })
        }),
        None => {
            let controller = controller.clone();
            Arc::new(move |change| {
                let controller = controller.clone();
                Box::pin(async move { controller.submit(change).await.map_err(ApiError::from) })
            })
        }
    }
}

/// The activity entry of a rollout decision: the decision as the backend recorded it (its
/// reason and the figures it was based on).
pub(super) fn activity(controller: &Controller, key: &str, verb: &str) -> Activity {
    let config = controller.config();
    let rollout = config.backends.get(key).and_then(|b| b.rollout.as_ref());
    let decision = rollout.and_then(|r| r.decisions.last());
    let action = decision.map_or(verb, |d| d.action.as_str());
    Activity::now(
        format!("rollout-{action}"),
        format!("backend/{key}"),
        json!({
            "version": rollout.map(|r| &r.version),
            "from": rollout.map(|r| &r.from),
            "state": rollout.map(|r| r.state.as_str()),
            "weight": decision.map(|d| d.weight),
            "reason": decision.map(|d| &d.reason),
            "figures": decision.and_then(|d| d.figures.as_ref()),
        }),
    )
}
