//! `thalassa up`: registry, aqueduct and HAProxy in one process.

pub async fn run(_args: crate::cli::UpArgs) -> Result<(), crate::BoxError> {
    Err("up is not built yet".into())
}
