//! `/metrics` and `/healthz`.

use std::collections::BTreeMap;
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

/// Why [`parse_metrics_text`] refused a scrape.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsTextError {
    /// A `#` line that is neither `# HELP` nor `# TYPE`.
    #[error("line {line}: a comment that is not HELP or TYPE: {text}")]
    Comment {
        /// The 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// A sample line without a value, or with one that is not a number.
    #[error("line {line}: not a `series value` sample: {text}")]
    Sample {
        /// The 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
}

/// Parses the Prometheus text format as `/metrics` serves it into its samples, keyed
/// by the series as written (`name` or `name{label="value"}`).
///
/// Strict on purpose, so a test that scrapes an endpoint also checks its format: every
/// `#` line must be `# HELP` or `# TYPE`, and every other non-empty line a series and a
/// number (no timestamps; `EngineMetrics::render` writes none).
///
/// # Errors
/// [`MetricsTextError`] for the first line that is neither.
///
/// # Example
/// ```
/// let text = "# TYPE solstice_jobs_running gauge\nsolstice_jobs_running 2\n";
/// let samples = solstice_service::parse_metrics_text(text)?;
/// assert_eq!(samples.get("solstice_jobs_running"), Some(&2.0));
/// # Ok::<(), solstice_service::MetricsTextError>(())
/// ```
pub fn parse_metrics_text(text: &str) -> Result<BTreeMap<String, f64>, MetricsTextError> {
    let mut samples = BTreeMap::new();
    for (index, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let line_no = index + 1;
        if let Some(comment) = line.strip_prefix('#') {
            if !matches!(comment.split_whitespace().next(), Some("HELP" | "TYPE")) {
                return Err(MetricsTextError::Comment { line: line_no, text: line.to_owned() });
            }
            continue;
        }
        let sample = line.rsplit_once(' ').and_then(|(series, value)| Some((series, value.parse::<f64>().ok()?)));
        match sample {
            Some((series, value)) if !series.is_empty() => {
                samples.insert(series.to_owned(), value);
            }
            _ => return Err(MetricsTextError::Sample { line: line_no, text: line.to_owned() }),
        }
    }
    Ok(samples)
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
        let samples = parse_metrics_text(&text[text.find("\r\n\r\n").expect("body") + 4..]).expect("Prometheus text");
        assert_eq!(samples.get("solstice_forge_api_errors_total"), Some(&1.0));
        endpoint.stop().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "still listening");
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let busy = taken.local_addr().expect("addr").to_string();
        let err = MetricsEndpoint::start(&busy, EngineMetrics::new()).await.expect_err("taken");
        assert_eq!(err.to_string(), format!("binding the metrics endpoint to {busy}"));
    }

    #[test]
    fn the_metrics_parser_refuses_what_is_not_prometheus_text() {
        let samples = parse_metrics_text("# HELP a A.\n# TYPE a counter\na 1\nb{result=\"x y\"} 2.5\n\n").expect("valid");
        assert_eq!(samples.get("a"), Some(&1.0));
        assert_eq!(samples.get("b{result=\"x y\"}"), Some(&2.5));
        let err = parse_metrics_text("a 1\n# oops\n").expect_err("bad comment");
        assert!(matches!(err, MetricsTextError::Comment { line: 2, .. }), "{err}");
        assert!(matches!(parse_metrics_text("a one"), Err(MetricsTextError::Sample { line: 1, .. })));
        assert!(matches!(parse_metrics_text("lonely"), Err(MetricsTextError::Sample { .. })));
    }
}
