//! The runner service: a [`ForgejoSource`] served into a queue, with an in-process
//! [`Engine`] in the all-in-one mode.

use std::sync::Arc;
use std::time::Duration;

use solstice_core::{Engine, EngineError, JobQueue, QueueError, RunnerService, ServiceError, Shutdown, SourceError};
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
    /// The runner-service loop failed otherwise.
    #[error("the runner service failed")]
    Service(#[source] ServiceError),
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
/// queue, events back, through [`solstice_core::RunnerService`] and its stop behaviour:
/// on `shutdown` no task is fetched any more and running jobs may finish within
/// `grace` (`abort` cancels them at once), jobs that never started are reported failed
/// (in-process engine only), and every task is reported before it returns.
///
/// # Errors
/// [`DaemonError`].
pub async fn run_service(service: Service, shutdown: CancellationToken, abort: CancellationToken) -> Result<(), DaemonError> {
    let Service { source, queue, engine, grace } = service;
    let mut builder = RunnerService::builder(queue).source(Arc::new(source)).grace(grace).report_limit(grace);
    if let Some((engine, labels)) = engine {
        builder = builder.engine(engine, labels);
    }
    let stop = Shutdown::new();
    let bridge = {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            stop.drain();
            abort.cancelled().await;
            stop.abort();
        })
    };
    let result = builder.build().run(stop).await;
    bridge.abort();
    result.map_err(DaemonError::from)
}

impl From<ServiceError> for DaemonError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Open { source: SourceError::Unauthorized(Some(cause)), .. } => match cause.downcast::<ForgeError>() {
                Ok(forge) => DaemonError::Declare(*forge),
                Err(_) => DaemonError::Panicked,
            },
            ServiceError::Queue(e) => DaemonError::Queue(e),
            ServiceError::Engine(e) => DaemonError::Engine(e),
            other => DaemonError::Service(other),
        }
    }
}
