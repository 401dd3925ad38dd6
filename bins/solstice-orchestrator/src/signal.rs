//! The stop signal of the services.

/// Resolves on SIGINT or SIGTERM. If SIGTERM cannot be listened for, logs so and waits
/// for SIGINT alone.
///
/// # Cancel safety
/// Cancel safe; each call listens afresh, so awaiting it again waits for another signal.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the service");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
