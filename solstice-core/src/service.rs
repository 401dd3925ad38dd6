//! The runner-service loop every Solstice service runs: job sources into a queue, an
//! optional engine on the same queue, events back, and one stop behaviour.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::dispatch::{Halves, dispatch};
use crate::{
    Engine, EngineError, JobEvent, JobEventKind, JobId, JobQueue, JobResult, JobSource, LogStream, QueueError,
    SourceError,
};
use crate::support::Backoff;

/// The line a job that never started gets when the service stops for good.
pub const NOT_STARTED_MESSAGE: &str = "The runner stopped before the job started.";

/// A service's two-stage stop, shared by everything that serves.
///
/// [`drain`](Shutdown::drain) (the first SIGTERM or SIGINT) stops taking jobs and lets
/// the running ones finish within the grace period; [`abort`](Shutdown::abort) (a second
/// signal, or the grace period over) cancels them. Cheap to clone; every clone stops the
/// same service.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    drain: CancellationToken,
    abort: CancellationToken,
}

impl Shutdown {
    /// A shutdown nobody has asked for yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops taking new jobs; the running ones may finish within the grace period.
    pub fn drain(&self) {
        self.drain.cancel();
    }

    /// Stops taking new jobs and cancels the running ones now.
    pub fn abort(&self) {
        self.drain.cancel();
        self.abort.cancel();
    }

    /// Whether [`drain`](Shutdown::drain) (or [`abort`](Shutdown::abort)) was asked for.
    pub fn is_draining(&self) -> bool {
        self.drain.is_cancelled()
    }

    /// Whether [`abort`](Shutdown::abort) was asked for.
    pub fn is_aborting(&self) -> bool {
        self.abort.is_cancelled()
    }

    /// Resolves once the service is asked to stop taking jobs.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn draining(&self) {
        self.drain.cancelled().await;
    }

    /// Resolves once running jobs are to be cancelled.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn aborting(&self) {
        self.abort.cancelled().await;
    }
}

/// Why a [`RunnerService`] stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// A source could not be opened: the forge refused the runner, or a failure that
    /// is not transient.
    #[error("could not open the job source `{name}`")]
    Open {
        /// The source's name.
        name: String,
        /// Why.
        #[source]
        source: SourceError,
    },
    /// A source's route through the queue failed for good.
    #[error("the job queue failed")]
    Queue(#[source] QueueError),
    /// The in-process engine failed.
    #[error("the engine failed")]
    Engine(#[source] EngineError),
    /// A task of the service panicked.
    #[error("a task of the service panicked: {0}")]
    Panicked(&'static str),
}

impl ServiceError {
    /// Whether the forge refused the runner's credentials (register it again).
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Self::Open { source: SourceError::Unauthorized(_), .. })
    }
}

/// Where a service counts the jobs its sources issued until their final event is
/// reported, so that it stops only once nothing is left unreported.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    jobs: Mutex<HashMap<JobId, Progress>>,
    changed: Notify,
}

/// How far an issued job got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Queued, not yet taken by an engine.
    Issued,
    /// An engine took it.
    Started,
}

impl Ledger {
    pub(crate) fn issued(&self, job: JobId) {
        self.lock().entry(job).or_insert(Progress::Issued);
        self.changed.notify_waiters();
    }

    /// An event reached its source (or was refused by it for good).
    pub(crate) fn reported(&self, event: &JobEvent) {
        let mut jobs = self.lock();
        match &event.kind {
            JobEventKind::JobFinished { .. } => {
                jobs.remove(&event.job_id);
            }
            _ => {
                if let Some(progress) = jobs.get_mut(&event.job_id) {
                    *progress = Progress::Started;
                }
            }
        }
        drop(jobs);
        self.changed.notify_waiters();
    }

    fn unreported(&self) -> usize {
        self.lock().len()
    }

    fn not_started(&self) -> Vec<JobId> {
        self.lock().iter().filter(|(_, p)| **p == Progress::Issued).map(|(id, _)| *id).collect()
    }

    /// Waits until every issued job's final event was reported.
    async fn settled(&self) {
        loop {
            let changed = self.changed.notified();
            if self.unreported() == 0 {
                return;
            }
            changed.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Progress>> {
        // A panic while holding the lock leaves a map that is still consistent.
        self.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Job sources served into a queue, with an optional engine in the same process: the
/// loop of every Solstice service (the Forgejo and GitHub runners, the orchestrator,
/// `solstice serve`), and of any service built on a [`JobSource`] of one's own.
///
/// # Stop behaviour
/// - Until the [`Shutdown`] drains, jobs flow from the sources into the queue, the
///   engine runs those routed to its labels, and events flow back.
/// - On [`Shutdown::drain`] no source is asked for a new job (a source that can
///   [`pause`](JobSource::pause) still passes on the forge's cancellations) and the
///   engine takes no new job; running jobs may finish within the grace period, then
///   they are cancelled (at once on [`Shutdown::abort`]). Each job's events are
///   reported to the end; a job the stop interrupted ends cancelled, which each source
///   reports as its forge's own runner does.
/// - With the engine in this process, jobs issued but never started are reported
///   failed ([`NOT_STARTED_MESSAGE`]): nothing else would run them. Without, jobs may
///   still run on other hosts, and are reported until the grace period and the report
///   limit have passed.
/// - A source with no more jobs to give (a finished ephemeral runner, GitHub asking
///   the runner to stop) stops the service once its jobs are reported.
/// - Finally every source is [closed](JobSource::close), within the report limit.
///
/// # Example
/// ```
/// use std::sync::Arc;
/// use solstice_core::{Engine, HostExecutor, HostHypervisor, JobRequest, JobResult, LocalSource, MemoryQueue};
/// use solstice_core::{RunnerService, Shutdown, StepCommand};
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let job = JobRequest::new("hello", vec!["host".into()], vec![StepCommand::run("greet", "echo hello")]);
/// let (events, _lines) = tokio::sync::mpsc::channel(64);
/// let source = Arc::new(LocalSource::new("local", vec![job.clone()], events));
/// let engine = Engine::builder().hypervisor(HostHypervisor::new()).executor(HostExecutor::new()).build()?;
/// let service = RunnerService::builder(Arc::new(MemoryQueue::new()))
///     .source(source.clone())
///     .engine(engine, vec!["host".into()])
///     .build();
/// // The local source has one job: the service stops once it is reported.
/// service.run(Shutdown::new()).await?;
/// assert_eq!(source.results().get(&job.id), Some(&JobResult::Success));
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(run()).unwrap();
/// ```
pub struct RunnerService {
    queue: Arc<dyn JobQueue>,
    sources: Vec<Arc<dyn JobSource>>,
    engine: Option<(Engine, Vec<String>)>,
    grace: Duration,
    report_limit: Duration,
}

/// Builds a [`RunnerService`].
#[derive(Debug)]
#[must_use]
pub struct RunnerServiceBuilder {
    service: RunnerService,
}

impl RunnerServiceBuilder {
    /// Adds a job source. Default: none (an orchestrator that only runs what others
    /// queue).
    pub fn source(mut self, source: Arc<dyn JobSource>) -> Self {
        self.service.sources.push(source);
        self
    }

    /// Runs the jobs routed to `labels` in this process. Default: no engine (other
    /// processes consume the queue).
    pub fn engine(mut self, engine: Engine, labels: Vec<String>) -> Self {
        self.service.engine = Some((engine, labels));
        self
    }

    /// How long running jobs may take to finish once the service drains. Default: 10
    /// minutes.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.service.grace = grace;
        self
    }

    /// How long, once no job runs here any more, the service waits for the last events
    /// to reach the forge and for each source to close. Default: 60 seconds.
    pub fn report_limit(mut self, limit: Duration) -> Self {
        self.service.report_limit = limit;
        self
    }

    /// The service.
    pub fn build(self) -> RunnerService {
        self.service
    }
}

impl std::fmt::Debug for RunnerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerService")
            .field("sources", &self.sources.iter().map(|s| s.name()).collect::<Vec<_>>())
            .field("engine", &self.engine)
            .field("grace", &self.grace)
            .field("report_limit", &self.report_limit)
            .finish_non_exhaustive()
    }
}

/// Every source's ledger.
struct Ledgers(Vec<Arc<Ledger>>);

impl Ledgers {
    fn unreported(&self) -> usize {
        self.0.iter().map(|l| l.unreported()).sum()
    }

    async fn settled(&self) {
        for ledger in &self.0 {
            ledger.settled().await;
        }
    }
}

/// Why the serving phase ended.
enum Ended {
    /// Asked to drain.
    Drain,
    /// Every source had no more jobs to give.
    SourcesDone,
    /// The engine returned on its own.
    Engine(Result<Result<(), EngineError>, tokio::task::JoinError>),
    /// A source's dispatch returned on its own.
    Dispatch(Result<Result<(), QueueError>, tokio::task::JoinError>),
}

impl RunnerService {
    /// Starts building a service on `queue`.
    pub fn builder(queue: Arc<dyn JobQueue>) -> RunnerServiceBuilder {
        RunnerServiceBuilder {
            service: RunnerService {
                queue,
                sources: Vec::new(),
                engine: None,
                grace: Duration::from_secs(600),
                report_limit: Duration::from_secs(60),
            },
        }
    }

    /// Serves until `shutdown` has stopped everything (see the type's docs), or every
    /// source ran out of jobs and they are reported.
    ///
    /// # Errors
    /// [`ServiceError::Open`] when a source cannot be opened (before anything is
    /// served); the others when the queue or the engine failed for good, after the
    /// jobs in hand were handled as on a stop.
    ///
    /// # Cancel safety
    /// Not cancel safe: stop it through `shutdown`; a dropped future leaves the jobs in
    /// hand unreported.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), ServiceError> {
        let RunnerService { queue, sources, engine, grace, report_limit } = self;
        for source in &sources {
            if !open(source.as_ref(), &shutdown).await? {
                return Ok(());
            }
        }

        // Fired by the drain itself, so that no job is fetched between a drain and the
        // moment this loop notices it.
        let fetch_stop = shutdown.drain.child_token();
        let report_stop = CancellationToken::new();
        let ledgers = Ledgers(sources.iter().map(|_| Arc::new(Ledger::default())).collect());
        let mut fetch_ended = Vec::new();
        let mut dispatches: Vec<JoinHandle<Result<(), QueueError>>> = Vec::new();
        for (source, ledger) in sources.iter().zip(&ledgers.0) {
            let ended = CancellationToken::new();
            fetch_ended.push(ended.clone());
            let halves = Halves {
                fetch_stop: fetch_stop.clone(),
                stop: report_stop.clone(),
                ledger: Some(ledger.clone()),
                fetch_ended: ended,
                report_after_fetch: true,
            };
            dispatches.push(tokio::spawn(dispatch(source.clone(), queue.clone(), halves)));
        }
        let engine_stop = CancellationToken::new();
        let abort = CancellationToken::new();
        let in_process = engine.is_some();
        let mut engine_task = engine.map(|(engine, labels)| {
            let (queue, stop, abort) = (queue.clone(), engine_stop.clone(), abort.clone());
            tokio::spawn(async move { engine.serve(queue, &labels, stop, abort).await })
        });
        // The grace period starts with the drain; a second request cuts it short.
        let deadline = {
            let (shutdown, abort) = (shutdown.clone(), abort.clone());
            tokio::spawn(async move {
                shutdown.draining().await;
                tokio::select! {
                    () = tokio::time::sleep(grace) => tracing::warn!("grace period over: cancelling running jobs"),
                    () = shutdown.aborting() => tracing::warn!("asked to stop at once: cancelling running jobs"),
                }
                abort.cancel();
            })
        };

        let all_fetched = async {
            if sources.is_empty() {
                return std::future::pending().await;
            }
            for ended in &fetch_ended {
                ended.cancelled().await;
            }
        };
        let ended = tokio::select! {
            () = shutdown.draining() => Ended::Drain,
            () = all_fetched => Ended::SourcesDone,
            r = async {
                match engine_task.as_mut() {
                    Some(task) => task.await,
                    None => std::future::pending().await,
                }
            } => Ended::Engine(r),
            (r, index, _) = async {
                if dispatches.is_empty() {
                    return std::future::pending().await;
                }
                futures::future::select_all(dispatches.iter_mut()).await
            } => {
                dispatches.remove(index);
                Ended::Dispatch(r)
            }
        };
        let mut outcome = Ok(());
        match ended {
            Ended::Drain => tracing::info!(grace_seconds = grace.as_secs(), "stopping: no new jobs; running jobs may finish"),
            Ended::SourcesDone => {
                tracing::info!(jobs = ledgers.unreported(), "the sources have no more jobs; finishing the ones taken");
                tokio::select! {
                    () = ledgers.settled() => {}
                    () = shutdown.draining() => tracing::info!("stopping: running jobs may finish"),
                }
            }
            Ended::Engine(r) => {
                tracing::error!("the engine stopped on its own; stopping");
                engine_task = None;
                outcome = engine_outcome(r);
            }
            Ended::Dispatch(r) => {
                tracing::error!("a job source stopped on its own; stopping");
                outcome = dispatch_outcome(r);
            }
        }
        fetch_stop.cancel();
        engine_stop.cancel();

        if in_process {
            if let Some(task) = engine_task {
                outcome = outcome.and(engine_outcome(task.await));
            }
            // Jobs still queued in this process will never run.
            for (source, ledger) in sources.iter().zip(&ledgers.0) {
                fail_not_started(source.as_ref(), ledger, &report_stop).await;
            }
            if tokio::time::timeout(report_limit, ledgers.settled()).await.is_err() {
                tracing::warn!(jobs = ledgers.unreported(), "some jobs were not fully reported before stopping");
            }
        } else if !sources.is_empty() {
            // Other hosts run the jobs: report them while they may still run there.
            let reported = async {
                if shutdown.is_draining() {
                    tokio::time::timeout(grace + report_limit, ledgers.settled()).await.is_ok()
                } else {
                    ledgers.settled().await;
                    true
                }
            };
            if !reported.await {
                tracing::warn!(jobs = ledgers.unreported(), "some jobs were not fully reported before stopping");
            }
        }
        deadline.abort();
        report_stop.cancel();
        for task in dispatches {
            outcome = outcome.and(dispatch_outcome(task.await));
        }
        for source in &sources {
            if tokio::time::timeout(report_limit, source.close(report_limit)).await.is_err() {
                tracing::warn!(source = source.name(), "the source did not close in time");
            }
        }
        tracing::info!("stopped");
        outcome
    }
}

/// Opens a source, retrying transient failures until the shutdown drains (false).
async fn open(source: &dyn JobSource, shutdown: &Shutdown) -> Result<bool, ServiceError> {
    let mut backoff = Backoff::default();
    loop {
        let error = tokio::select! {
            r = source.open() => match r {
                Ok(()) => return Ok(true),
                Err(e) => e,
            },
            () = shutdown.draining() => return Ok(false),
        };
        if !error.is_transient() {
            return Err(ServiceError::Open { name: source.name().to_owned(), source: error });
        }
        tracing::warn!(source = source.name(), error = %crate::support::error_chain(&error), "the forge is unavailable; retrying");
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = shutdown.draining() => return Ok(false),
        }
    }
}

/// Reports every job of `source` that no engine took as failed with
/// [`NOT_STARTED_MESSAGE`]: the in-process engine has stopped, so nothing will run it.
async fn fail_not_started(source: &dyn JobSource, ledger: &Ledger, stop: &CancellationToken) {
    for job_id in ledger.not_started() {
        let now = time::OffsetDateTime::now_utc();
        let line = NOT_STARTED_MESSAGE.to_owned();
        let events = [
            JobEvent { job_id, attempt: 1, seq: 1, at: now, kind: JobEventKind::Log { step: None, stream: LogStream::System, line } },
            JobEvent { job_id, attempt: 1, seq: 2, at: now, kind: JobEventKind::JobFinished { result: JobResult::Failure } },
        ];
        let mut backoff = Backoff::default();
        for event in &events {
            if !report_until_taken(source, event, stop, &mut backoff).await {
                return;
            }
            ledger.reported(event);
        }
    }
}

/// Passes `event` to the source until it is taken or refused for good; false if
/// `stop` fired first.
async fn report_until_taken(source: &dyn JobSource, event: &JobEvent, stop: &CancellationToken, backoff: &mut Backoff) -> bool {
    loop {
        match source.report(event).await {
            Ok(_) => return true,
            Err(e) if e.is_transient() => {
                if !backoff.wait(stop).await {
                    return false;
                }
            }
            Err(e) => {
                tracing::error!(job_id = %event.job_id, error = %e, "could not report a job that never started");
                return true;
            }
        }
    }
}

fn engine_outcome(result: Result<Result<(), EngineError>, tokio::task::JoinError>) -> Result<(), ServiceError> {
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ServiceError::Engine(e)),
        Err(_) => Err(ServiceError::Panicked("the engine")),
    }
}

fn dispatch_outcome(result: Result<Result<(), QueueError>, tokio::task::JoinError>) -> Result<(), ServiceError> {
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ServiceError::Queue(e)),
        Err(_) => Err(ServiceError::Panicked("a job source's dispatch")),
    }
}
