//! `/metrics` and `/healthz`.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use solstice_core::EngineMetrics;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Serves `/metrics` (the Prometheus text of `metrics`) and `/healthz` (`ok`) on
/// `listener` until `stop` fires.
///
/// # Errors
/// The server's I/O error.
///
/// # Cancel safety
/// Cancel safe: dropping it closes the listener and the connections.
pub async fn serve_metrics(listener: tokio::net::TcpListener, metrics: EngineMetrics, stop: CancellationToken) -> std::io::Result<()> {
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

/// Why [`MetricsEndpoint::start`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The address could not be bound.
    #[error("binding the metrics endpoint to {listen}")]
    Bind {
        /// The configured address.
        listen: String,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
}

/// The `/metrics` and `/healthz` endpoint, served by a task of its own until
/// [`stop`](MetricsEndpoint::stop).
#[derive(Debug)]
pub struct MetricsEndpoint {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl MetricsEndpoint {
    /// Binds `listen` (`[metrics] listen`; empty: no endpoint, `None`) and serves
    /// `metrics` there; logs the bound address.
    ///
    /// # Errors
    /// [`EndpointError::Bind`] if the address cannot be bound.
    pub async fn start(listen: &str, metrics: EngineMetrics) -> Result<Option<Self>, EndpointError> {
        if listen.is_empty() {
            return Ok(None);
        }
        let bind_error = |source| EndpointError::Bind { listen: listen.to_owned(), source };
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        tracing::info!(listen = %addr, "metrics and health endpoint up");
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve_metrics(listener, metrics, stop.clone()));
        Ok(Some(Self { addr, stop, task }))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits for the server to end; logs a server error.
    pub async fn stop(self) {
        self.stop.cancel();
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the metrics endpoint failed"),
            Err(e) => tracing::warn!(error = %e, "the metrics endpoint's task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).await.expect("request");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("response");
        response
    }

    #[tokio::test]
    async fn serves_metrics_and_health_until_stopped() {
        assert!(MetricsEndpoint::start("", EngineMetrics::new()).await.expect("off").is_none());
        let metrics = EngineMetrics::new();
        metrics.forge_error();
        let endpoint = MetricsEndpoint::start("127.0.0.1:0", metrics).await.expect("bind").expect("on");
        let addr = endpoint.local_addr();
        assert!(get(addr, "/healthz").await.ends_with("\r\n\r\nok\n"));
        let text = get(addr, "/metrics").await;
        assert!(text.contains("solstice_forge_api_errors_total 1\n"), "{text}");
        endpoint.stop().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "still listening");
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let busy = taken.local_addr().expect("addr").to_string();
        let err = MetricsEndpoint::start(&busy, EngineMetrics::new()).await.expect_err("taken");
        assert_eq!(err.to_string(), format!("binding the metrics endpoint to {busy}"));
    }
}
