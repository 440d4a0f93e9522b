//! Waiting for the operator's stop request: SIGTERM (containers, `kill`) or SIGINT (Ctrl-C).

/// Resolves on the first SIGTERM or SIGINT. If a handler cannot be installed, that signal is
/// simply not waited for (the other still works), and the failure is logged.
pub async fn stop_requested() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = terminate => tracing::info!("SIGTERM received: stopping"),
        _ = interrupt => tracing::info!("SIGINT received: stopping"),
    }
}
