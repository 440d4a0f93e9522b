//! `thalassa register`: keeps registrations alive by heartbeating them.

pub async fn run(_args: crate::cli::RegisterArgs) -> Result<(), crate::BoxError> {
    Err("register is not built yet".into())
}
