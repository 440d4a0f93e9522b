//! `thalassa registry`: runs the registry HTTP API.

pub async fn run(_args: crate::cli::RegistryArgs) -> Result<(), crate::BoxError> {
    Err("the registry is not built yet".into())
}
