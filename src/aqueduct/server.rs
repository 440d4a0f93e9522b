//! `thalassa aqueduct`: runs the aqueduct API and its HAProxy.

pub async fn run(_args: crate::cli::AqueductArgs) -> Result<(), crate::BoxError> {
    Err("the aqueduct is not built yet".into())
}
