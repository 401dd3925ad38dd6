//! Composes the orchestrator from the library crates.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use solstice_core::{AmqpQueue, DebugKeeper, Engine, JobQueue, MemoryQueue, Store};
use solstice_vm::{ImageCatalog, MachineLimits, MachineSetup, Machines};
use tokio_util::sync::CancellationToken;

use crate::config::OrchestratorConfig;

pub async fn run(config: OrchestratorConfig) -> anyhow::Result<()> {
    if config.host_labels.is_empty() && config.vm_images.is_empty() {
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
    let machines = machines(&config).await?;
    let labels = machines.labels.clone();
    let debug = debug_keeper(&config)?;
    let mut engine = Engine::builder()
        .hypervisor(machines.hypervisor.clone())
        .executor(machines.executor.clone())
        .capacity(config.capacity)
        .name(config.name.clone())
        .store(store);
    if let Some(keeper) = &debug {
        engine = engine.debug_keeper(keeper.clone());
    }
    let engine = engine.build()?;
    // Before taking any job: whatever a crashed run of this orchestrator left running.
    for reaped in engine.reap_orphans(Some(queue.as_ref())).await.context("reaping machines left by a previous run")? {
        tracing::warn!(machine = %reaped.record.id, job_id = %reaped.record.job_id, job_failed = reaped.job_failed, "removed a machine left by a previous run");
    }

    let stop = CancellationToken::new();
    let abort = CancellationToken::new();
    let http_stop = CancellationToken::new();
    let http = if config.metrics.listen.is_empty() {
        None
    } else {
        let listener = tokio::net::TcpListener::bind(&config.metrics.listen)
            .await
            .with_context(|| format!("binding the metrics endpoint to {}", config.metrics.listen))?;
        tracing::info!(listen = %listener.local_addr()?, "metrics and health endpoint up");
        Some(tokio::spawn(crate::http::serve(listener, engine.metrics().clone(), http_stop.clone())))
    };

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
    if let Some(keeper) = &debug {
        // Machines kept for debugging go with the orchestrator, whatever their time left.
        keeper.shutdown().await;
    }
    served?;
    signals.abort();
    http_stop.cancel();
    if let Some(http) = http {
        let _ = http.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The keeper of failed jobs' machines for debug SSH, if `[debug_ssh] listen` is set.
fn debug_keeper(config: &OrchestratorConfig) -> anyhow::Result<Option<DebugKeeper>> {
    let section = &config.debug_ssh;
    if section.listen.is_empty() {
        return Ok(None);
    }
    let listen: std::net::IpAddr = section.listen.parse().with_context(|| format!("debug_ssh.listen `{}`", section.listen))?;
    let mut builder = DebugKeeper::builder()
        .dangerous_listen(listen)
        .ports(section.first_port..section.last_port.saturating_add(1))
        .ttl(Duration::from_secs(section.ttl_seconds));
    if !section.host.is_empty() {
        builder = builder.host(section.host.clone());
    }
    tracing::info!(%listen, ttl_seconds = section.ttl_seconds, "debug SSH into failed jobs that opt in is on");
    Ok(Some(builder.build().context("setting up debug SSH")?))
}

/// The host for `host_labels`, QEMU VMs for `vm_images`.
async fn machines(config: &OrchestratorConfig) -> anyhow::Result<Machines> {
    let cache = config.cache_dir.clone().unwrap_or_else(|| {
        std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir).join(".cache/solstice")
    });
    let catalog = config.image_catalog.as_deref().map(ImageCatalog::load).transpose()?.unwrap_or_default();
    // A fixed place for the machines' files (not a fresh temporary directory per run),
    // so that what a crashed run left is where its records say and nothing else piles up.
    let run_dir = cache.join("run");
    let limits = MachineLimits {
        max_machines: Some(config.vm_limits.max_vms),
        memory_mib: config.vm_limits.memory_mib,
        vcpus: config.vm_limits.vcpus,
    };
    let mut setup = MachineSetup::new(cache).catalog(catalog).run_dir(run_dir).limits(limits);
    for label in &config.host_labels {
        setup = setup.host_label(label.clone());
    }
    for (label, image) in &config.vm_images {
        setup = setup.vm_label(label.clone(), image.clone());
    }
    setup.build().await.context("setting up the machines")
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the service");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
