//! A runner-service process for the scale tests: hands a plan of host jobs to the
//! queue, collects their events, and prints a JSON [`Report`](solstice_scale::Report)
//! on stdout once every job finished (exit 0) or the deadline passed (exit 2).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use solstice_core::{AmqpQueue, JobQueue, JobSource, serve_source};
use solstice_scale::PlanSource;
use tokio_util::sync::CancellationToken;

/// Submits a plan of jobs and reports what came back.
#[derive(Debug, Parser)]
struct Args {
    /// RabbitMQ URL.
    #[arg(long, env = "SOLSTICE_AMQP_URL")]
    amqp_url: String,
    /// Namespace prefix of the exchanges and queues.
    #[arg(long, default_value = "solstice")]
    prefix: String,
    /// The source name (events are routed back by it); also seeds the job ids.
    #[arg(long)]
    run: String,
    /// How many jobs.
    #[arg(long, default_value_t = 200)]
    jobs: usize,
    /// How long each job sleeps, in milliseconds.
    #[arg(long, default_value_t = 200)]
    sleep_ms: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 180)]
    deadline_secs: u64,
    /// After the last job finished, keep listening this long for duplicate events.
    #[arg(long, default_value_t = 1500)]
    linger_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    solstice_scale::init_tracing();
    let args = Args::parse();
    let queue = AmqpQueue::builder(&args.amqp_url)
        .prefix(&args.prefix)
        .connection_name(format!("{}-submitter", args.run))
        .connect()
        .await
        .context("connecting to RabbitMQ")?;
    let source = Arc::new(PlanSource::new(&args.run, args.jobs, args.sleep_ms));
    let stop = CancellationToken::new();
    let started = Instant::now();
    let serving = tokio::spawn(serve_source(
        source.clone() as Arc<dyn JobSource>,
        Arc::new(queue.clone()) as Arc<dyn JobQueue>,
        stop.clone(),
    ));
    let done = tokio::time::timeout(Duration::from_secs(args.deadline_secs), source.all_finished()).await.is_ok();
    let elapsed = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    if done {
        tracing::info!(jobs = args.jobs, elapsed_ms = elapsed, "every job finished; listening for duplicates");
        tokio::time::sleep(Duration::from_millis(args.linger_ms)).await;
    } else {
        tracing::error!(finished = source.finished(), jobs = args.jobs, "deadline passed");
    }
    stop.cancel();
    serving.await.context("the source task")?.context("serving the source")?;
    queue.close().await;
    println!("{}", serde_json::to_string(&source.report(elapsed))?);
    Ok(if done { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(2) })
}
