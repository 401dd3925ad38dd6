//! The orchestrator on RabbitMQ (or the in-process queue): the shared composition of
//! the `solstice_orchestrator` library plus the queue and the grace period.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use solstice_core::{AmqpQueue, JobQueue, MemoryQueue, Store};
use solstice_orchestrator::{LabelPlan, MetricsEndpoint, machines, shutdown_signal, start_engine};
use tokio_util::sync::CancellationToken;

use crate::config::OrchestratorConfig;

pub async fn run(config: OrchestratorConfig) -> anyhow::Result<()> {
    let plan = LabelPlan::from_config(&config);
    if plan.is_empty() {
        anyhow::bail!("this orchestrator serves no label: set host_labels or vm_images");
    }
    let store = Store::connect(&config.store.url).await.context("opening the state store")?;
    let queue: Arc<dyn JobQueue> = if config.queue.url == "memory" {
        Arc::new(MemoryQueue::new())
    } else {
        let queue = AmqpQueue::builder(config.queue.url.clone())
            .connection_name(config.name.clone())
            .connect()
            .await
            .context("connecting to RabbitMQ")?;
        Arc::new(queue)
    };
    let machines = machines(&config, cache_dir(&config), &plan).await?;
    let labels = machines.labels.clone();
    let orchestrator = start_engine(&config, &machines, store, queue.as_ref()).await?;
    let engine = orchestrator.engine().clone();
    let http = MetricsEndpoint::start(&config.metrics.listen, engine.metrics().clone()).await?;

    let stop = CancellationToken::new();
    let abort = CancellationToken::new();
    let grace = Duration::from_secs(config.shutdown_grace_seconds);
    let signals = {
        let (stop, abort) = (stop.clone(), abort.clone());
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!(grace_seconds = grace.as_secs(), "shutting down: no new jobs; running jobs may finish");
            stop.cancel();
            tokio::select! {
                _ = tokio::time::sleep(grace) => {
                    tracing::warn!("grace period over: cancelling running jobs");
                    abort.cancel();
                }
                _ = shutdown_signal() => {
                    tracing::warn!("second signal: cancelling running jobs");
                    abort.cancel();
                }
            }
        })
    };
    tracing::info!(name = %config.name, ?labels, capacity = config.capacity, "serving jobs");
    let served = engine.serve(queue, &labels, stop, abort).await;
    orchestrator.shutdown().await;
    served?;
    signals.abort();
    if let Some(http) = http {
        http.stop().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// `cache_dir`, else [`solstice_config::default_cache_dir`].
fn cache_dir(config: &OrchestratorConfig) -> PathBuf {
    config.cache_dir.clone().unwrap_or_else(solstice_config::default_cache_dir)
}
