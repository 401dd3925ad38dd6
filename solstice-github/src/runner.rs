//! Serving a [`GithubSource`]: all in one process (an in-process queue and an engine),
//! or over a shared queue such as RabbitMQ.

use std::sync::Arc;
use std::time::Duration;

use solstice_core::{Engine, JobQueue, JobSource, MemoryQueue, serve_source};
use tokio_util::sync::CancellationToken;

use crate::pause::Pausable;
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
    let engine_stop = CancellationToken::new();
    let abort = CancellationToken::new();
    let source_stop = CancellationToken::new();
    let fetching_paused = CancellationToken::new();

    let engine_task = engine.map(|(engine, labels)| {
        let queue = queue.clone();
        let (engine_stop, abort) = (engine_stop.clone(), abort.clone());
        tokio::spawn(async move { engine.serve(queue, &labels, engine_stop, abort).await })
    });
    let source_task = {
        let source: Arc<dyn JobSource> = Arc::new(Pausable { inner: source.clone(), paused: fetching_paused.clone() });
        let (queue, source_stop) = (queue.clone(), source_stop.clone());
        tokio::spawn(async move { serve_source(source, queue, source_stop).await })
    };
    // A stop request, GitHub asking the runner to shut down, or an ephemeral runner
    // that is done.
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if source.shutdown_requested() || (source.is_spent() && source.jobs_in_flight() == 0) {
                    break;
                }
            }
        }
    }
    tracing::info!("stopping: taking no more jobs; cancelling this process's running jobs and reporting them");
    fetching_paused.cancel();
    engine_stop.cancel();
    abort.cancel();
    if let Some(engine_task) = engine_task {
        match engine_task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the engine failed"),
            Err(e) => tracing::error!(error = %e, "the engine task failed"),
        }
    }
    if !source.wait_idle(source.drain_limit()).await {
        tracing::warn!(jobs = source.jobs_in_flight(), limit = ?source.drain_limit(), "some jobs were not reported before stopping");
    }
    source_stop.cancel();
    match source_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "the source failed"),
        Err(e) => tracing::error!(error = %e, "the source task failed"),
    }
    source.shutdown().await;
    Ok(())
}
