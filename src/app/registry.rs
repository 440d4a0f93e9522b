//! `thalassa registry`: binds the HTTP API, opens the registry (loading its snapshot), announces
//! the registry itself as `thalassa@<version>`, and shuts down gracefully (final snapshot).
//! `thalassa up` embeds [`start`]; the binary uses [`run`].

use crate::BoxError;
use crate::cli::RegistryArgs;
use crate::registry::axon::AxonPublisher;
use crate::registry::handle::Registry;
use crate::registry::local_ip::first_non_loopback_ipv4;
use crate::registry::model::RegistrationKey;
use crate::registry::redis_store::RedisStore;
use crate::shutdown_signal::stop_requested;
use serde_json::{Map, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use crate::registry::routes::router;

/// The registry's own registration is refreshed this often ...
pub const SELF_REFRESH_EVERY: Duration = Duration::from_secs(20);
/// ... with this lease, so it outlives a few missed refreshes but not the process for long.
pub const SELF_LEASE: Duration = Duration::from_secs(60);

/// How long a graceful shutdown waits for open connections before dropping them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A registry serving HTTP. Dropping it without [`RunningRegistry::shutdown`] stops nothing
/// gracefully; call `shutdown` to get the final snapshot written.
#[derive(Debug)]
pub struct RunningRegistry {
    registry: Registry,
    local_addr: SocketAddr,
    self_id: String,
    stop_serving: CancellationToken,
    stop_self_refresh: CancellationToken,
    server: JoinHandle<()>,
    self_refresh: JoinHandle<()>,
    axon: Option<AxonPublisher>,
}

impl RunningRegistry {
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The bound address (the real port when `--listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The registry's own registration id, `/thalassa/<version>/<host>/<port>`.
    pub fn self_id(&self) -> &str {
        &self.self_id
    }

    /// Stops accepting requests, ends the event streams, lets in-flight requests finish (up to
    /// 10 s), and writes the final snapshot. The registry's own registration is left to its
    /// lease, like any registration: a restart within a minute keeps it without an event, so
    /// followers see no churn from a registry restart.
    pub async fn shutdown(mut self) {
        self.stop_self_refresh.cancel();
        let _ = (&mut self.self_refresh).await;
        self.stop_serving.cancel();
        if let Some(axon) = self.axon.take() {
            axon.stop().await;
        }
        // End the followers' streams so the server's graceful shutdown does not wait on them.
        self.registry.closing().cancel();
        match tokio::time::timeout(DRAIN_TIMEOUT, &mut self.server).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::error!(error = %err, "registry server task failed"),
            Err(_) => {
                tracing::warn!("connections still open after 10 s: closing them");
                self.server.abort();
            }
        }
        self.registry.close().await;
        tracing::info!("registry stopped");
    }
}

/// Binds `args.listen`, opens the registry from `args.data_dir`, starts serving and announces
/// the registry itself.
pub async fn start(args: &RegistryArgs) -> Result<RunningRegistry, BoxError> {
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|err| format!("cannot listen on {}: {err}", args.listen))?;
    let local_addr = listener.local_addr()?;
    let registry = match &args.store {
        None => Registry::open(args.registry_config())?,
        Some(url) => {
            let config = args.registry_config();
            let store = RedisStore::connect(url.clone(), config.retained_events)
                .await
                .map_err(|err| format!("--store {url}: {err}"))?;
            Registry::with_store(store, config)
        }
    };

    // Bound before the registry announces itself, so its meta can name the socket's port.
    let axon = match args.axon_listen {
        None => None,
        Some(address) => {
            let listener = TcpListener::bind(address)
                .await
                .map_err(|err| format!("cannot listen on {address} (--axon-listen): {err}"))?;
            Some(AxonPublisher::start(listener, registry.clone())?)
        }
    };
    let meta = self_meta(axon.as_ref().map(|axon| axon.local_addr().port()));

    let self_key = RegistrationKey::parse(
        "thalassa",
        env!("CARGO_PKG_VERSION"),
        &advertised_host(local_addr),
        &local_addr.port().to_string(),
    )
    .map_err(|err| format!("cannot build the registry's own registration: {err}"))?;
    let self_id = self_key.id();
    // Registered before the first request is served, so no client ever sees the registry
    // without its own registration.
    if let Err(err) = registry
        .register(self_key.clone(), meta.clone(), SELF_LEASE)
        .await
    {
        tracing::warn!(error = %err, "cannot announce the registry itself yet");
    }

    let policy = args.auth.policy()?;
    crate::auth::warn_if_exposed("registry", local_addr, &policy);
    if let Some(axon) = &axon
        && (policy.read.is_some() || policy.admin.is_some())
        && !axon.local_addr().ip().is_loopback()
    {
        tracing::warn!(
            listen = %axon.local_addr(),
            "the axon socket has no authentication (the original protocol has none): whoever reaches it sees every registration the tokens guard on the API"
        );
    }
    let stop_serving = CancellationToken::new();
    let app = crate::auth::guard(router(registry.clone()), policy);
    let server = tokio::spawn(crate::http_server::serve(
        listener,
        app,
        args.http.serve_limits(),
        stop_serving.clone().cancelled_owned(),
    ));

    let stop_self_refresh = CancellationToken::new();
    let self_refresh = tokio::spawn(refresh_self(
        registry.clone(),
        self_key,
        meta,
        stop_self_refresh.clone(),
    ));
    tracing::info!(
        listen = %local_addr,
        data_dir = %args.data_dir.display(),
        registrations = registry.len(),
        "registry listening"
    );
    Ok(RunningRegistry {
        registry,
        local_addr,
        self_id,
        stop_serving,
        stop_self_refresh,
        server,
        self_refresh,
        axon,
    })
}

/// `thalassa registry`: serves until SIGTERM/SIGINT, then shuts down gracefully.
pub async fn run(args: RegistryArgs) -> Result<(), BoxError> {
    let running = start(&args).await?;
    stop_requested().await;
    running.shutdown().await;
    Ok(())
}

/// The host the registry announces: its listen IP, or this machine's first non-loopback IPv4
/// when it listens on every interface.
fn advertised_host(listen: SocketAddr) -> String {
    if listen.ip().is_unspecified() {
        first_non_loopback_ipv4()
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| "127.0.0.1".to_owned())
    } else {
        listen.ip().to_string()
    }
}

/// The registry's own meta: where its change feed is, and (as the original announced it) the
/// axon socket's port when there is one.
fn self_meta(axon_port: Option<u16>) -> Map<String, Value> {
    let mut meta = Map::new();
    meta.insert("eventsPath".to_owned(), Value::String("/events".to_owned()));
    if let Some(port) = axon_port {
        meta.insert("axonSocket".to_owned(), Value::from(port));
    }
    meta
}

/// Renews the registry's own lease until `stop` (the first registration is made by `start`).
async fn refresh_self(
    registry: Registry,
    key: RegistrationKey,
    meta: Map<String, Value>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(SELF_REFRESH_EVERY) => {}
        }
        if let Err(err) = registry
            .register(key.clone(), meta.clone(), SELF_LEASE)
            .await
        {
            tracing::warn!(error = %err, "cannot renew the registry's own registration");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(listen: &str, expected: &str) {
        assert_eq!(
            advertised_host(listen.parse().unwrap()),
            expected,
            "{listen}"
        );
    }

    #[test]
    fn the_registry_announces_its_listen_ip_or_the_machines_address() {
        check("127.0.0.1:9000", "127.0.0.1");
        check("127.0.0.5:9000", "127.0.0.5");
        check("[::1]:9000", "::1");
        let machine = first_non_loopback_ipv4()
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| "127.0.0.1".to_owned());
        check("0.0.0.0:9000", &machine);
        check("[::]:9000", &machine);
    }
}
