//! Progressive delivery: a dynamic backend moves from one version to another by weight, step
//! by step, with no reload. `transition` is the rollout's state machine (applied by the
//! controller like any other change); `engine` watches the versions' figures and takes the
//! plan's decisions.

pub mod engine;
pub mod transition;
