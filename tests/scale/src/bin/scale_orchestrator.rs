//! An orchestrator process for the scale tests: an engine with the host runner, serving
//! the `host` label from RabbitMQ and recording job state in PostgreSQL (or SQLite).

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use solstice_core::{AmqpQueue, Engine, HostExecutor, HostHypervisor, JobQueue, Store};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Serves host jobs from RabbitMQ until SIGTERM or SIGINT.
#[derive(Debug, Parser)]
struct Args {
    /// RabbitMQ URL.
    #[arg(long, env = "SOLSTICE_AMQP_URL")]
    amqp_url: String,
    /// Job state store URL (postgres://… or sqlite://…).
    #[arg(long, env = "SOLSTICE_STORE_URL")]
    store_url: String,
    /// Namespace prefix of the exchanges and queues.
    #[arg(long, default_value = "solstice")]
    prefix: String,
    /// This orchestrator's name (recorded as the owner of the jobs it claims).
    #[arg(long)]
    name: String,
    /// Jobs run at once.
    #[arg(long, default_value_t = 8)]
    capacity: usize,
    /// How long a claim on a job lasts unless renewed, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    lease_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    solstice_scale::init_tracing();
    let args = Args::parse();
    let queue = AmqpQueue::builder(&args.amqp_url)
        .prefix(&args.prefix)
        .connection_name(&args.name)
        .connect()
        .await
        .context("connecting to RabbitMQ")?;
    let store = Store::connect(&args.store_url).await.context("opening the job state store")?;
    let engine = Engine::builder()
        .hypervisor(HostHypervisor::new())
        .executor(HostExecutor::new())
        .store(store)
        .capacity(args.capacity)
        .claim_lease(std::time::Duration::from_millis(args.lease_ms))
        .name(&args.name)
        .build()?;
    let stop = CancellationToken::new();
    let abort = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let on_signal = {
        let stop = stop.clone();
        async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("stopping: no new jobs, finishing the running ones");
            stop.cancel();
        }
    };
    let shared: Arc<dyn JobQueue> = Arc::new(queue.clone());
    tracing::info!(name = %args.name, capacity = args.capacity, "serving");
    let signals = tokio::spawn(on_signal);
    let labels = [solstice_scale::LABEL.to_owned()];
    // Returns once `stop` fired and the running jobs ended.
    let served = engine.serve(shared, &labels, stop, abort).await;
    signals.abort();
    queue.close().await;
    served?;
    Ok(())
}
