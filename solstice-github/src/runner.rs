//! Serving a [`GithubSource`]: all in one process (an in-process queue and an engine),
//! or over a shared queue such as RabbitMQ.

use std::sync::Arc;
use std::time::Duration;

use solstice_core::{Engine, JobQueue, MemoryQueue, RunnerService, Shutdown};
use tokio_util::sync::CancellationToken;

use crate::{GithubError, GithubSource};

/// Runs `source` with `engine` in this process, over an in-process queue, until `stop`
/// fires (running jobs are then cancelled and reported) or an ephemeral runner finished
/// its job. The session is deleted on the way out.
///
/// `labels` are the queue routes the engine serves (the jobs' route label, see
/// [`solstice_core::JobRequest::route_label`]).
///
/// # Errors
/// [`GithubError::Config`] when the queue or the engine cannot start.
///
/// # Cancel safety
/// Stop it through `stop`; dropping the future skips the session's deletion.
pub async fn serve_all_in_one(
    source: GithubSource,
    engine: Engine,
    labels: Vec<String>,
    stop: CancellationToken,
) -> Result<(), GithubError> {
    serve_with_queue(source, Arc::new(MemoryQueue::new()), Some((engine, labels)), stop).await
}

/// Runs `source` over `queue` (RabbitMQ, to scale out), until `stop` fires or an
/// ephemeral runner finished its job. With `engine`, this process also runs the jobs
/// routed to its labels; without, orchestrators elsewhere run them and their events
/// come back through the queue. The session is deleted on the way out.
///
/// When `stop` fires, no job is taken from GitHub any more; the jobs taken are then
/// reported until they end, for at most the source's
/// [`drain_limit`](crate::GithubSourceBuilder::drain_limit). This process's own
/// `engine` cancels its running jobs at once; jobs running elsewhere end as their
/// orchestrators decide (a grace period, for `solstice serve`).
///
/// # Errors
/// [`GithubError::Config`] when the queue or the engine cannot start.
///
/// # Cancel safety
/// Stop it through `stop`; dropping the future skips the session's deletion.
pub async fn serve_with_queue(
    source: GithubSource,
    queue: Arc<dyn JobQueue>,
    engine: Option<(Engine, Vec<String>)>,
    stop: CancellationToken,
) -> Result<(), GithubError> {
    let limit = source.drain_limit();
    let mut builder = RunnerService::builder(queue).source(Arc::new(source)).grace(Duration::ZERO).report_limit(limit);
    if let Some((engine, labels)) = engine {
        builder = builder.engine(engine, labels);
    }
    let shutdown = Shutdown::new();
    let bridge = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            shutdown.abort();
        })
    };
    let result = builder.build().run(shutdown).await;
    bridge.abort();
    result.map_err(|e| GithubError::Service(Box::new(e)))
}
