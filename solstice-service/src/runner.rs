//! What both runner services share: the queue, the engine when `[engine] enabled`, the
//! metrics they count in, and the endpoint that serves them while the service runs.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use solstice_config::ServiceConfig;
use solstice_core::{Engine, EngineMetrics, JobQueue, JobSource, RunnerService};
use solstice_forgejo::LabelSpec;
use solstice_vm::Machines;

use crate::{EndpointError, LabelPlan, MetricsEndpoint, ServiceError, machines, open_queue, start_engine};

/// A runner's side of the queue: where it puts jobs, and the engine that takes them in
/// this process (none when orchestrators elsewhere consume a RabbitMQ queue).
pub(crate) struct RunnerParts {
    pub(crate) queue: Arc<dyn JobQueue>,
    /// The engine and the labels it serves.
    pub(crate) engine: Option<(Engine, Vec<String>)>,
    /// The engine's metrics; without an engine only the forge's API errors count.
    pub(crate) metrics: EngineMetrics,
    /// Kept until the service ends: dropping them removes the machines' run files.
    _machines: Option<Machines>,
}

impl RunnerParts {
    /// Opens `[queue]` and, if `[engine] enabled`, sets up the machines for the
    /// [`LabelPlan`] of `config` and `forgejo` and an engine (without a store) on them.
    pub(crate) async fn start(config: &ServiceConfig, forgejo: &[LabelSpec]) -> anyhow::Result<Self> {
        let queue = open_queue(config).await?;
        if !config.engine.enabled {
            return Ok(Self { queue, engine: None, metrics: EngineMetrics::new(), _machines: None });
        }
        let plan = LabelPlan::from_config(config, forgejo);
        if plan.is_empty() {
            return Err(ServiceError::NoLabels.into());
        }
        let machines = machines(config, &plan).await?;
        let engine = start_engine(config, &machines, None, queue.as_ref()).await?.engine().clone();
        let metrics = engine.metrics().clone();
        Ok(Self { queue, engine: Some((engine, machines.labels.clone())), metrics, _machines: Some(machines) })
    }
}

impl std::fmt::Debug for RunnerParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerParts").field("engine", &self.engine).finish_non_exhaustive()
    }
}

/// How long a stopping runner may go on reporting its jobs once none runs here.
const REPORT_MARGIN: Duration = Duration::from_secs(60);

/// Runs `source` into `queue` (with `engine` in this process, if given) on
/// [`RunnerService`] until `shutdown` has stopped it: the loop of both runners.
pub(crate) async fn runner_service(
    source: Arc<dyn JobSource>,
    queue: Arc<dyn JobQueue>,
    engine: Option<(Engine, Vec<String>)>,
    grace: Duration,
    shutdown: &crate::Shutdown,
) -> Result<(), solstice_core::ServiceError> {
    let mut service = RunnerService::builder(queue).source(source).grace(grace).report_limit(REPORT_MARGIN);
    if let Some((engine, labels)) = engine {
        service = service.engine(engine, labels);
    }
    service.build().run(shutdown.for_service()).await
}

/// Serves `/metrics` and `/healthz` on `listen` (empty: nowhere) while `service` runs.
///
/// # Errors
/// [`EndpointError`] if the address cannot be bound (then `service` does not run).
pub(crate) async fn with_metrics<T>(listen: &str, metrics: EngineMetrics, service: impl Future<Output = T>) -> Result<T, EndpointError> {
    let endpoint = MetricsEndpoint::start(listen, metrics).await?;
    let result = service.await;
    if let Some(endpoint) = endpoint {
        endpoint.stop().await;
    }
    Ok(result)
}
