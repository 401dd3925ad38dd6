//! `/metrics` and `/healthz` of `solstice serve`, as the orchestrator serves them.

use axum::Router;
use axum::routing::get;
use solstice_core::EngineMetrics;
use tokio_util::sync::CancellationToken;

/// Serves the endpoint on `listener` until `stop` fires.
pub async fn serve(listener: tokio::net::TcpListener, metrics: EngineMetrics, stop: CancellationToken) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { ([("content-type", "text/plain; version=0.0.4")], metrics.render()) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await
}
