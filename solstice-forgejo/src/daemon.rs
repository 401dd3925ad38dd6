//! The runner service: a [`ForgejoSource`] served into a queue, with an in-process
//! [`Engine`] in the all-in-one mode.

use std::sync::Arc;
use std::time::Duration;

use solstice_core::{Engine, EngineError, JobQueue, JobSource, QueueError, serve_source};
use tokio_util::sync::CancellationToken;

use crate::{ForgeError, ForgejoSource};

/// Why the runner service stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// `Declare` failed (not registered, or the server refused).
    #[error("could not declare the runner to Forgejo")]
    Declare(#[source] ForgeError),
    /// The queue could not be opened.
    #[error("the job queue failed")]
    Queue(#[source] QueueError),
    /// The engine could not serve the queue.
    #[error("the engine failed")]
    Engine(#[source] EngineError),
    /// A service task panicked.
    #[error("a runner task panicked")]
    Panicked,
}

/// How the service runs.
pub struct Service {
    /// The Forgejo side.
    pub source: ForgejoSource,
    /// The queue between the source and the engine(s).
    pub queue: Arc<dyn JobQueue>,
    /// An in-process engine and the labels it takes from the queue; `None` when
    /// orchestrators elsewhere consume the queue.
    pub engine: Option<(Engine, Vec<String>)>,
    /// How long running tasks get to be reported after shutdown before the service
    /// gives up on them.
    pub grace: Duration,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("source", &self.source)
            .field("engine", &self.engine)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

/// Runs the service until `shutdown` fires: `Declare`, then tasks from Forgejo into the
/// queue, events back. On `shutdown` it stops fetching, lets the engine finish its jobs
/// (`abort` cancels them), reports jobs that never started as failed (in-process
/// engine only: with a shared queue other orchestrators may still run them), waits up to the
/// grace period for every task to be reported, then returns.
///
/// # Errors
/// [`DaemonError`].
pub async fn run_service(service: Service, shutdown: CancellationToken, abort: CancellationToken) -> Result<(), DaemonError> {
    let Service { source, queue, engine, grace } = service;
    source.declare().await.map_err(DaemonError::Declare)?;
    let serve_stop = CancellationToken::new();
    let engine_stop = CancellationToken::new();
    let serving = tokio::spawn(serve_source(
        Arc::new(source.clone()) as Arc<dyn JobSource>,
        queue.clone(),
        serve_stop.clone(),
    ));
    let in_process = engine.is_some();
    let mut engine_task = engine.map(|(engine, labels)| {
        let queue = queue.clone();
        let stop = engine_stop.clone();
        let abort = abort.clone();
        tokio::spawn(async move { engine.serve(queue, &labels, stop, abort).await })
    });
    let mut serving = serving;

    // Runs until shutdown, unless the engine or the source stop on their own (an error).
    let mut outcome = Ok(());
    let engine_ended = tokio::select! {
        () = shutdown.cancelled() => None,
        r = async {
            match engine_task.as_mut() {
                Some(task) => task.await,
                None => std::future::pending().await,
            }
        } => Some(r),
        r = &mut serving => {
            return match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(DaemonError::Queue(e)),
                Err(_) => Err(DaemonError::Panicked),
            };
        }
    };
    match engine_ended {
        Some(r) => {
            tracing::error!("the engine stopped on its own; stopping");
            engine_task = None;
            outcome = engine_outcome(r);
        }
        None => tracing::info!("stopping: no new tasks; finishing running jobs"),
    }
    source.pause();
    engine_stop.cancel();
    if in_process {
        if let Some(task) = engine_task {
            outcome = engine_outcome(task.await);
        }
        // Jobs still queued in this process will never run.
        source.fail_unstarted("The runner stopped before the job started.");
    }
    if !source.close(grace).await {
        tracing::warn!("some tasks could not be fully reported before shutdown");
    }
    serve_stop.cancel();
    match serving.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => outcome = outcome.and(Err(DaemonError::Queue(e))),
        Err(_) => outcome = outcome.and(Err(DaemonError::Panicked)),
    }
    outcome
}

fn engine_outcome(result: Result<Result<(), EngineError>, tokio::task::JoinError>) -> Result<(), DaemonError> {
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(DaemonError::Engine(e)),
        Err(_) => Err(DaemonError::Panicked),
    }
}
