//! `thalassa up`: registry, aqueduct and HAProxy in one process, the embedded default a
//! newcomer starts with. The aqueduct follows the registry in-process (no HTTP hop).

use crate::BoxError;
use crate::cli::{RegistryArgs, UpArgs};
use crate::registry::nodes::RegistryNodes;

pub async fn run(args: UpArgs) -> Result<(), BoxError> {
    let registry = crate::app::registry::start(&RegistryArgs {
        listen: args.registry_listen,
        data_dir: args.common.data_dir.join("registry"),
        default_secs_to_expire: args.default_secs_to_expire,
        max_registrations: args.max_registrations,
        // `thalassa up` is the single-node stack: its registry keeps its own registrations.
        store: None,
        axon_listen: args.axon_listen,
        auth: args.common.auth.clone(),
        http: args.common.http.clone(),
    })
    .await?;
    let registry_nodes = RegistryNodes::at(registry.local_addr());
    let feed = crate::registry::follow::in_process(registry.registry().clone());
    // The same tokens guard both APIs; the aqueduct's own calls to the registry (the UI's
    // registry page, its self-announcement) use the admin token, else the read token.
    let registry_token = args
        .common
        .auth
        .admin_token
        .clone()
        .or_else(|| token_from_file(args.common.auth.admin_token_file.as_deref()))
        .or_else(|| args.common.auth.read_token.clone())
        .or_else(|| token_from_file(args.common.auth.read_token_file.as_deref()));
    let aqueduct = crate::app::aqueduct::start(crate::app::aqueduct::AqueductStart {
        listen: args.listen,
        common: args.common,
        feed,
        feed_status: None,
        registry: registry_nodes,
        registry_token,
        fleet: None,
    })
    .await;
    let aqueduct = match aqueduct {
        Ok(aqueduct) => aqueduct,
        Err(err) => {
            registry.shutdown().await;
            return Err(err);
        }
    };
    crate::shutdown_signal::stop_requested().await;
    aqueduct.shutdown().await;
    registry.shutdown().await;
    Ok(())
}

/// A token file's content (already validated by the registry's start, which read it first).
fn token_from_file(path: Option<&std::path::Path>) -> Option<String> {
    std::fs::read_to_string(path?)
        .ok()
        .map(|text| text.trim().to_owned())
}
