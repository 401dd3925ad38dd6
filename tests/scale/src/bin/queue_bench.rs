//! Jobs per second through the engine with a null hypervisor and executor: in-process
//! beside a bare tokio loop, and through RabbitMQ (persistent messages, publisher
//! confirms) beside a bare lapin publish/consume loop with the same durability, all in
//! one run.
//!
//! ```text
//! eval "$(.ci/services.sh)"
//! cargo run --release -p solstice-scale --bin queue_bench -- --jobs 5000
//! ```
//!
//! `--json FILE` hands the figures to the harness in `benches/` (`scripts/bench`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use clap::{Parser, ValueEnum};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use solstice_core::{
    AmqpQueue, CheckoutSource, CheckoutStep, Engine, ExecError, Hypervisor, HypervisorError, JobEvent, JobEventKind,
    JobId, JobQueue, JobQueueKind, JobRequest, JobSource, LogSink, Machine, MachineAccess, MachineRequest, MemoryQueue,
    ProvisionContext, ReportOutcome, ScriptRun, SourceError, SourceMessage, StepCommand, StepExecutor, StepExit, serve_source,
};
use solstice_bench::Figures;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    Quorum,
    Classic,
}

/// Measures queue throughput.
#[derive(Debug, Parser)]
struct Args {
    /// Jobs per measurement.
    #[arg(long, default_value_t = 5000)]
    jobs: usize,
    /// Jobs the engine runs at once (and the consumers' prefetch).
    #[arg(long, default_value_t = 64)]
    capacity: usize,
    /// RabbitMQ URL.
    #[arg(long, env = "SOLSTICE_TEST_AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/solstice-test")]
    amqp_url: String,
    /// The kind of the job queue (and of the baseline's queue).
    #[arg(long, value_enum, default_value_t = Kind::Quorum)]
    job_queue: Kind,
    /// Also measure where the RabbitMQ time goes (job publishing alone, engine alone).
    #[arg(long)]
    diagnose: bool,
    /// Also write the figures to this file, as one JSON object (for `scripts/bench`).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    solstice_scale::init_tracing();
    let args = Args::parse();
    let kind = match args.job_queue {
        Kind::Quorum => JobQueueKind::Quorum,
        Kind::Classic => JobQueueKind::Classic,
    };
    println!("{} jobs, capacity {}, {:?} job queue", args.jobs, args.capacity, args.job_queue);
    let mut figures = Figures::new(args.json.clone())?;
    let rate = |elapsed: Duration| args.jobs as f64 / elapsed.as_secs_f64();
    figures.number("jobs", args.jobs as f64)?;

    let memory = through_engine(Arc::new(MemoryQueue::new()), "bench-memory", args.jobs, args.capacity).await?;
    report("in-process (MemoryQueue)", args.jobs, memory.elapsed, Some(memory.events));
    figures.number("in_process_jobs_per_s", rate(memory.elapsed))?;
    let events_per_job = (memory.events as f64 / args.jobs as f64).round().max(1.0) as usize;
    let bare_memory = bare_in_process(args.jobs, args.capacity, events_per_job).await?;
    report(&format!("bare tokio loop, {events_per_job} events per job"), args.jobs, bare_memory, None);
    figures.number("bare_in_process_jobs_per_s", rate(bare_memory))?;

    let prefix = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let amqp = AmqpQueue::builder(&args.amqp_url)
        .prefix(&prefix)
        .job_queue_kind(kind)
        .connect()
        .await
        .context("RabbitMQ is unreachable (start it with .ci/services.sh)")?;
    let source = format!("{prefix}-source");
    let published_before = amqp.messages_published();
    let rabbit = through_engine(Arc::new(amqp.clone()), &source, args.jobs, args.capacity).await;
    let messages = amqp.messages_published() - published_before;
    let rabbit = match rabbit {
        Ok(r) => r,
        Err(e) => {
            let _ = amqp.delete_namespace(&[LABEL], &[&source]).await;
            return Err(e);
        }
    };
    report("RabbitMQ (AmqpQueue)", args.jobs, rabbit.elapsed, Some(rabbit.events));
    figures.number("rabbitmq_jobs_per_s", rate(rabbit.elapsed))?;
    println!("  {messages} messages published ({:.2} per job: the job and its event batches)", messages as f64 / args.jobs as f64);
    if args.diagnose {
        let sequential = sequential_publish(&amqp, &source, args.jobs).await?;
        report("  publish_job one at a time", args.jobs, sequential, None);
        // Drain what was just published, then measure with jobs published in advance.
        let bench = BenchSource::new(&source, args.jobs);
        bench.handed.store(args.jobs, Ordering::Relaxed);
        run_engine(Arc::new(amqp.clone()), Arc::new(bench), args.capacity).await?;
        let (publishing, drained) = drain_prefilled(Arc::new(amqp.clone()), &source, args.jobs, args.capacity).await?;
        report("  publish_job, 64 in flight", args.jobs, publishing, None);
        report("  engine drain of published jobs", args.jobs, drained.elapsed, Some(drained.events));
    }
    let _ = amqp.delete_namespace(&[LABEL], &[&source]).await;
    amqp.close().await;

    // The same number of messages as the RabbitMQ run published, for comparison.
    let messages_per_job = ((messages as f64 / args.jobs as f64).round() as usize).max(1);
    let body = serde_json::to_vec(&bench_job("x"))?;
    let bare = bare_lapin(&args.amqp_url, kind, args.jobs, args.capacity, &body).await?;
    report("bare lapin, 1 message per job", args.jobs, bare, None);
    figures.number("bare_lapin_jobs_per_s", rate(bare))?;
    let bare_all = bare_lapin(&args.amqp_url, kind, args.jobs * messages_per_job, args.capacity, &body).await?;
    report(&format!("bare lapin, {messages_per_job} messages per job"), args.jobs, bare_all, None);
    figures.number("messages_per_job", messages_per_job as f64)?;
    figures.number("bare_lapin_same_messages_jobs_per_s", rate(bare_all))?;

    println!(
        "ratio bare lapin/RabbitMQ: {:.2}x at 1 message per job (target: at most 2x), {:.2}x at {messages_per_job} messages per job; in-process/RabbitMQ: {:.1}x; bare tokio/in-process: {:.1}x",
        rate(bare) / rate(rabbit.elapsed),
        rate(bare_all) / rate(rabbit.elapsed),
        rate(memory.elapsed) / rate(rabbit.elapsed),
        rate(bare_memory) / rate(memory.elapsed),
    );
    Ok(())
}

/// The floor under the in-process path: `jobs` jobs handed over a bounded channel to a
/// dispatcher that runs each as a task, at most `capacity` at once; each task sends
/// `events_per_job` events over a channel to a collector that counts finished jobs. No
/// engine, queue or machine: tokio's tasks and channels alone.
async fn bare_in_process(jobs: usize, capacity: usize, events_per_job: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let (job_tx, mut job_rx) = tokio::sync::mpsc::channel::<JobRequest>(capacity);
    let (event_tx, mut event_rx) = tokio::sync::mpsc::channel::<(JobId, usize)>(capacity * events_per_job);
    let feeder = tokio::spawn(async move {
        for _ in 0..jobs {
            if job_tx.send(bench_job("bare")).await.is_err() {
                break;
            }
        }
    });
    let dispatcher = tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(capacity));
        let mut running = JoinSet::new();
        while let Some(job) = job_rx.recv().await {
            let slot = slots.clone().acquire_owned().await?;
            let events = event_tx.clone();
            running.spawn(async move {
                for step in 0..events_per_job {
                    if events.send((job.id, step)).await.is_err() {
                        break;
                    }
                }
                drop(slot);
            });
            while running.try_join_next().is_some() {}
        }
        while running.join_next().await.is_some() {}
        anyhow::Ok(())
    });
    let mut finished = 0;
    while finished < jobs {
        let Some((_, step)) = event_rx.recv().await else { anyhow::bail!("the bare loop's tasks ended early") };
        if step + 1 == events_per_job {
            finished += 1;
        }
    }
    let elapsed = started.elapsed();
    feeder.await?;
    dispatcher.await??;
    Ok(elapsed)
}

fn report(what: &str, jobs: usize, elapsed: Duration, events: Option<usize>) {
    let rate = jobs as f64 / elapsed.as_secs_f64();
    match events {
        Some(events) => println!("{what:<40} {rate:>9.0} jobs/s  ({jobs} jobs, {events} events, {elapsed:.2?})"),
        None => println!("{what:<40} {rate:>9.0} jobs/s  ({elapsed:.2?})"),
    }
}

const LABEL: &str = "null";

fn bench_job(source: &str) -> JobRequest {
    let mut job = JobRequest::new("bench", vec![LABEL.to_owned()], vec![StepCommand::run("noop", "true")]);
    job.origin.source = source.to_owned();
    job
}

struct Measured {
    elapsed: Duration,
    events: usize,
}

/// Runs `jobs` jobs from a source through `queue` and an engine; returns when the
/// source has every job's final event.
async fn through_engine(queue: Arc<dyn JobQueue>, source: &str, jobs: usize, capacity: usize) -> anyhow::Result<Measured> {
    run_engine(queue, Arc::new(BenchSource::new(source, jobs)), capacity).await
}

/// Publishes `jobs` jobs up front (`window` publishes in flight), then measures how
/// fast the engine drains them and the source receives their events.
async fn drain_prefilled(queue: Arc<dyn JobQueue>, source: &str, jobs: usize, window: usize) -> anyhow::Result<(Duration, Measured)> {
    let started = Instant::now();
    let mut pending = futures::stream::FuturesUnordered::new();
    for _ in 0..jobs {
        if pending.len() >= window
            && let Some(published) = pending.next().await
        {
            published?;
        }
        let queue = queue.clone();
        let job = bench_job(source);
        pending.push(async move { queue.publish_job(&job).await });
    }
    while let Some(published) = pending.next().await {
        published?;
    }
    let publishing = started.elapsed();
    let bench = BenchSource::new(source, jobs);
    bench.handed.store(jobs, Ordering::Relaxed);
    Ok((publishing, run_engine(queue, Arc::new(bench), window).await?))
}

/// `jobs` sequential `publish_job` calls, each awaiting its confirm (as `serve_source` does).
async fn sequential_publish(queue: &dyn JobQueue, source: &str, jobs: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for _ in 0..jobs {
        queue.publish_job(&bench_job(source)).await?;
    }
    Ok(started.elapsed())
}

async fn run_engine(queue: Arc<dyn JobQueue>, source: Arc<BenchSource>, capacity: usize) -> anyhow::Result<Measured> {
    let jobs = source.total;
    let engine = Engine::builder()
        .hypervisor(NullHypervisor)
        .executor(NullExecutor)
        .capacity(capacity)
        .name("bench")
        .build()?;
    let stop = CancellationToken::new();
    let started = Instant::now();
    let serving = {
        let (engine, queue, stop) = (engine.clone(), queue.clone(), stop.clone());
        tokio::spawn(async move { engine.serve(queue, &[LABEL.to_owned()], stop, CancellationToken::new()).await })
    };
    let feeding = tokio::spawn(serve_source(source.clone() as Arc<dyn JobSource>, queue, stop.clone()));
    let done = tokio::time::timeout(Duration::from_secs(600), source.all_finished()).await;
    let elapsed = started.elapsed();
    stop.cancel();
    serving.await??;
    feeding.await??;
    done.context("the jobs did not finish within 10 minutes")?;
    let _ = jobs;
    Ok(Measured { elapsed, events: source.events.load(Ordering::Relaxed) })
}

/// Publishes `messages` persistent messages with publisher confirms (at most `window`
/// unconfirmed) into a durable queue and consumes them with manual acks and prefetch
/// `window`, as fast as lapin goes.
async fn bare_lapin(url: &str, kind: JobQueueKind, messages: usize, window: usize, body: &[u8]) -> anyhow::Result<Duration> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let queue = format!("bench-bare-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let publisher = conn.create_channel().await?;
    publisher.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut args = FieldTable::default();
    if kind == JobQueueKind::Quorum {
        args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    }
    publisher
        .queue_declare(queue.clone().into(), QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() }, args)
        .await?;
    let consumer_channel = conn.create_channel().await?;
    let window_u16 = u16::try_from(window).unwrap_or(u16::MAX);
    consumer_channel.basic_qos(window_u16, BasicQosOptions::default()).await?;
    let mut consumer = consumer_channel
        .basic_consume(queue.clone().into(), "bench".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    let started = Instant::now();
    let consume = tokio::spawn(async move {
        let mut got = 0;
        while got < messages {
            let Some(delivery) = consumer.next().await else { anyhow::bail!("consumer ended") };
            delivery?.ack(BasicAckOptions::default()).await?;
            got += 1;
        }
        Ok(consumer)
    });
    let properties = BasicProperties::default().with_delivery_mode(2);
    let mut pending = futures::stream::FuturesUnordered::new();
    for _ in 0..messages {
        if pending.len() >= window
            && let Some(confirm) = pending.next().await
        {
            anyhow::ensure!(lapin::Confirmation::is_ack(&confirm?), "broker nacked a publish");
        }
        let confirm = publisher
            .basic_publish("".into(), queue.clone().into(), Default::default(), body, properties.clone())
            .await?;
        pending.push(confirm);
    }
    while let Some(confirm) = pending.next().await {
        anyhow::ensure!(confirm?.is_ack(), "broker nacked a publish");
    }
    let consumer = consume.await??;
    let elapsed = started.elapsed();
    // Stop consuming before the connection goes, or lapin logs the race as an error.
    let _ = consumer_channel.basic_cancel(consumer.tag(), Default::default()).await;
    let _ = consumer_channel.close(200, "done".into()).await;
    let _ = conn.close(200, "done".into()).await;
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    conn.create_channel().await?.queue_delete(queue.into(), Default::default()).await?;
    let _ = conn.close(200, "done".into()).await;
    Ok(elapsed)
}

/// Hands out `total` jobs and counts their final events.
#[derive(Debug)]
struct BenchSource {
    name: String,
    total: usize,
    handed: AtomicUsize,
    finished: AtomicUsize,
    events: AtomicUsize,
    progress: Notify,
}

impl BenchSource {
    fn new(name: &str, total: usize) -> Self {
        Self {
            name: name.to_owned(),
            total,
            handed: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            events: AtomicUsize::new(0),
            progress: Notify::new(),
        }
    }

    async fn all_finished(&self) {
        loop {
            let notified = self.progress.notified();
            if self.finished.load(Ordering::Acquire) >= self.total {
                return;
            }
            notified.await;
        }
    }
}

#[async_trait]
impl JobSource for BenchSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn next(&self, cancel: &CancellationToken) -> Result<Option<SourceMessage>, SourceError> {
        if self.handed.fetch_add(1, Ordering::AcqRel) < self.total {
            return Ok(Some(SourceMessage::Job(Box::new(bench_job(&self.name)))));
        }
        cancel.cancelled().await;
        Ok(None)
    }

    async fn report(&self, event: &JobEvent) -> Result<ReportOutcome, SourceError> {
        self.events.fetch_add(1, Ordering::Relaxed);
        if let JobEventKind::JobFinished { .. } = event.kind
            && self.finished.fetch_add(1, Ordering::AcqRel) + 1 >= self.total
        {
            self.progress.notify_waiters();
        }
        Ok(ReportOutcome::Continue)
    }
}

/// Machines that exist only as a name.
#[derive(Debug)]
struct NullHypervisor;

#[async_trait]
impl Hypervisor for NullHypervisor {
    fn serves(&self, _label: &str) -> bool {
        true
    }

    async fn provision(&self, request: &MachineRequest, _ctx: &ProvisionContext<'_>) -> Result<Machine, HypervisorError> {
        Ok(Machine {
            id: request.job_id.to_string(),
            label: request.label.clone(),
            workspace: "/nonexistent".to_owned(),
            access: MachineAccess::Local,
            runner: solstice_core::RunnerInfo { os: "Linux".into(), arch: "X64".into(), name: request.job_id.to_string(), temp: "/tmp".into(), tool_cache: "/tmp".into() }, env: Default::default(),
        })
    }

    async fn destroy(&self, _machine: &Machine) -> Result<(), HypervisorError> {
        Ok(())
    }
}

/// Steps that succeed at once without output.
#[derive(Debug)]
struct NullExecutor;

#[async_trait]
impl StepExecutor for NullExecutor {
    async fn run_script(
        &self,
        _machine: &Machine,
        _step: &ScriptRun,
        _output: &LogSink,
        _cancel: &CancellationToken,
    ) -> Result<StepExit, ExecError> {
        Ok(StepExit::code(0))
    }

    async fn checkout(
        &self,
        _machine: &Machine,
        _source: &CheckoutSource,
        _step: &CheckoutStep,
        _output: &LogSink,
        _cancel: &CancellationToken,
    ) -> Result<StepExit, ExecError> {
        Ok(StepExit::code(0))
    }
}
