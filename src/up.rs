//! `thalassa up`: registry, aqueduct and HAProxy in one process, the embedded default a
//! newcomer starts with. The aqueduct follows the registry in-process (no HTTP hop).

use crate::BoxError;
use crate::cli::{RegistryArgs, UpArgs};

pub async fn run(args: UpArgs) -> Result<(), BoxError> {
    let registry = crate::registry::server::start(&RegistryArgs {
        listen: args.registry_listen,
        data_dir: args.common.data_dir.join("registry"),
        default_secs_to_expire: args.default_secs_to_expire,
    })
    .await?;
    let registry_url = format!("http://{}", registry.local_addr());
    let feed = crate::registry::follow::in_process(registry.registry().clone());
    let aqueduct = crate::aqueduct::server::start(crate::aqueduct::server::AqueductStart {
        listen: args.listen,
        common: args.common,
        feed,
        registry_url,
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
