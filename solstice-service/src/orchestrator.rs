//! `solstice-orchestrator`: jobs for its labels from the queue into its engine, on the
//! state store.

use std::sync::Arc;

use solstice_config::ServiceConfig;
use solstice_core::{JobQueue, RunnerService};
use solstice_forgejo::LabelSpec;
use solstice_vm::Machines;

use crate::runner::with_metrics;
use crate::{LabelPlan, Orchestrator, ServiceError, Shutdown, machines, open_queue, open_store, start_engine};

/// What the orchestrator and `solstice serve` both start: the machines for the
/// [`LabelPlan`] of `config` and `forgejo`, the store, the queue, and the engine on them,
/// with what a crashed run under the same name left running reaped before any job.
pub(crate) async fn start_orchestrator(
    config: &ServiceConfig,
    forgejo: &[LabelSpec],
) -> anyhow::Result<(Orchestrator, Arc<dyn JobQueue>, Machines)> {
    let plan = LabelPlan::from_config(config, forgejo);
    if plan.is_empty() {
        return Err(ServiceError::NoLabels.into());
    }
    let store = open_store(config).await?;
    let queue = open_queue(config).await?;
    let machines = machines(config, &plan).await?;
    let orchestrator = start_engine(config, &machines, Some(store), queue.as_ref()).await?;
    Ok((orchestrator, queue, machines))
}

/// Serves jobs until SIGTERM or SIGINT (see [`Shutdown`]): the store opened and what a
/// crashed run left reaped before the first job, `/metrics` served meanwhile.
///
/// # Errors
/// No label to serve (exit 2); the store, the queue, the machines or the engine
/// failing (exit 5).
pub async fn run_orchestrator(config: ServiceConfig) -> anyhow::Result<()> {
    let (orchestrator, queue, machines) = start_orchestrator(&config, &[]).await?;
    let labels = machines.labels.clone();
    let engine = orchestrator.engine().clone();
    let shutdown = Shutdown::on_signals(config.shutdown_grace);
    tracing::info!(name = %config.name, labels = ?labels, capacity = config.capacity, "serving jobs");
    // The runner-service loop with no source of its own: the same stop as every service.
    let service = RunnerService::builder(queue).engine(engine.clone(), labels).grace(config.shutdown_grace).build();
    let serving = service.run(shutdown.for_service());
    let served = with_metrics(config.metrics.listen(), engine.metrics().clone(), serving).await;
    shutdown.finish();
    orchestrator.shutdown().await;
    served??;
    tracing::info!("stopped");
    Ok(())
}
