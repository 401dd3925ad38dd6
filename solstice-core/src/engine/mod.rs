//! The orchestration engine: jobs from a queue, machines from a hypervisor, steps
//! through an executor, events back.

mod commands;
mod condition;
mod contexts;
mod debug;
mod debug_slot;
mod emit;
mod forward;
#[cfg(feature = "_store")]
mod orphans;
mod run;
mod serve;

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::support::Masker;
use crate::{Hypervisor, JobEvent, JobRequest, JobResult, StepExecutor};
use emit::Emitter;
pub use debug::{DEFAULT_DEBUG_PORTS, DEFAULT_DEBUG_TTL, DebugKeeper, DebugKeeperBuilder, DebugSshError};
#[cfg(feature = "_store")]
pub use orphans::ReapedMachine;

/// Why an engine could not be built or stopped serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The builder lacks a required part.
    #[error("the engine needs a {0}")]
    Missing(&'static str),
    /// The queue failed in a way the engine could not recover from.
    #[error("the job queue failed")]
    Queue(#[from] crate::QueueError),
    /// The state store failed.
    #[cfg(feature = "_store")]
    #[error("the job state store failed")]
    Store(#[from] crate::StoreError),
}

pub(crate) struct EngineInner {
    pub(crate) hypervisor: Arc<dyn Hypervisor>,
    pub(crate) executor: Arc<dyn StepExecutor>,
    pub(crate) capacity: usize,
    pub(crate) name: String,
    pub(crate) metrics: crate::EngineMetrics,
    #[cfg(feature = "_store")]
    pub(crate) store: Option<crate::Store>,
    /// Keeps failed, opted-in jobs' machines for debug SSH; none: destroyed at once.
    pub(crate) debug: Option<DebugKeeper>,
    /// How long a claim on a served job lasts unless renewed (see `serve`).
    pub(crate) claim_lease: std::time::Duration,
    pub(crate) queue_depth_interval: std::time::Duration,
    /// Fetches remote actions; none: a remote `uses:` step fails, naming the action.
    #[allow(dead_code)] // read by the action runtime (issue #17), which lands next
    pub(crate) actions: Option<Arc<dyn crate::ActionFetcher>>,
}

impl std::fmt::Debug for EngineInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("name", &self.name).field("capacity", &self.capacity).finish_non_exhaustive()
    }
}

/// Runs jobs: provisions a machine, runs the steps in order, reports every event, and
/// always destroys the machine.
///
/// Step `if:` conditions are evaluated with GitHub's rules (`success()` by default,
/// `failure()`, `always()`, `cancelled()`, and any expression over the job's
/// contexts); `continue-on-error`, step and job timeouts and cancellation are honoured;
/// every secret of the job and every `::add-mask::` value is replaced by `***` before a
/// line leaves the engine. `Engine` is cheap to clone (an `Arc` inside).
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

impl Engine {
    /// Starts building an engine.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// The engine's metrics (jobs by result, running jobs, boot and job durations).
    pub fn metrics(&self) -> &crate::EngineMetrics {
        &self.inner.metrics
    }

    /// The number of jobs this engine runs at once.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Runs one job to the end, sending its events (attempt 1) to `events`.
    ///
    /// The last event is always `JobFinished` with the returned result.
    ///
    /// # Cancel safety
    /// Cancel the job through `cancel`, not by dropping the future: dropping it skips
    /// the machine's orderly destruction.
    pub async fn run_job(
        &self,
        job: &JobRequest,
        events: mpsc::Sender<JobEvent>,
        cancel: CancellationToken,
    ) -> JobResult {
        self.run_attempt(job, 1, events, cancel).await
    }

    pub(crate) async fn run_attempt(
        &self,
        job: &JobRequest,
        attempt: u32,
        events: mpsc::Sender<JobEvent>,
        cancel: CancellationToken,
    ) -> JobResult {
        let masker = Masker::new(job.secrets.iter().map(|s| s.expose()));
        let mut emitter = Emitter::new(job.id, attempt, masker, events);
        let span = tracing::info_span!("job", job_id = %job.id, name = %job.name);
        tracing::Instrument::instrument(run::run_job(&self.inner, job, &mut emitter, cancel), span).await
    }

    /// Runs one job and returns its result with all its events: handy in tests and
    /// examples.
    pub async fn run_job_collect(&self, job: JobRequest) -> (JobResult, Vec<JobEvent>) {
        let (tx, mut rx) = mpsc::channel(256);
        let collect = async {
            let mut events = Vec::new();
            while let Some(event) = rx.recv().await {
                events.push(event);
            }
            events
        };
        let run = async {
            let tx = tx;
            self.run_job(&job, tx, CancellationToken::new()).await
        };
        let (result, events) = tokio::join!(run, collect);
        (result, events)
    }
}

/// Builds an [`Engine`].
#[derive(Default)]
#[must_use]
pub struct EngineBuilder {
    hypervisor: Option<Arc<dyn Hypervisor>>,
    executor: Option<Arc<dyn StepExecutor>>,
    capacity: Option<usize>,
    name: Option<String>,
    #[cfg(feature = "_store")]
    store: Option<crate::Store>,
    claim_lease: Option<std::time::Duration>,
    queue_depth_interval: Option<std::time::Duration>,
    debug: Option<DebugKeeper>,
    actions: Option<Arc<dyn crate::ActionFetcher>>,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder").field("capacity", &self.capacity).field("name", &self.name).finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// The hypervisor that makes machines. Required.
    pub fn hypervisor(mut self, hypervisor: impl Hypervisor) -> Self {
        self.hypervisor = Some(Arc::new(hypervisor));
        self
    }

    /// The hypervisor, already shared.
    pub fn hypervisor_arc(mut self, hypervisor: Arc<dyn Hypervisor>) -> Self {
        self.hypervisor = Some(hypervisor);
        self
    }

    /// The executor that runs steps. Required.
    pub fn executor(mut self, executor: impl StepExecutor) -> Self {
        self.executor = Some(Arc::new(executor));
        self
    }

    /// The executor, already shared.
    pub fn executor_arc(mut self, executor: Arc<dyn StepExecutor>) -> Self {
        self.executor = Some(executor);
        self
    }

    /// How many jobs run at once when serving a queue. Default: 1.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = Some(capacity.max(1));
        self
    }

    /// The name this engine reports in `Accepted` events and records as a job's owner.
    /// Default: `orchestrator`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The state store that records each job's life. Default: none (state is only in
    /// the events).
    #[cfg(feature = "_store")]
    pub fn store(mut self, store: crate::Store) -> Self {
        self.store = Some(store);
        self
    }

    /// How often [`serve`](Engine::serve) reads how many jobs wait in the queue for its
    /// labels (the `solstice_queue_depth` metric). Default: 5 s.
    pub fn queue_depth_interval(mut self, interval: std::time::Duration) -> Self {
        self.queue_depth_interval = Some(interval.max(std::time::Duration::from_millis(10)));
        self
    }

    /// With a store, how long an orchestrator's claim on a job it serves from a queue
    /// lasts unless renewed; it is renewed every third of that while the job runs. A
    /// redelivered copy of a job whose lease is live is held, not run; once the lease
    /// expires (its orchestrator died) another one takes the job over. Shorter leases
    /// take over sooner and cost more store writes. Default: 30 s.
    pub fn claim_lease(mut self, lease: std::time::Duration) -> Self {
        self.claim_lease = Some(lease.max(std::time::Duration::from_millis(300)));
        self
    }

    /// Keeps the machine of a failed job that opted in to debug SSH (and whose source
    /// found the triggering user's public keys) with `keeper`, instead of destroying it
    /// at once; see `docs/debug-ssh.md`. Call [`DebugKeeper::shutdown`] when the engine
    /// stops. Default: none, every machine is destroyed when its job ends.
    pub fn debug_keeper(mut self, keeper: DebugKeeper) -> Self {
        self.debug = Some(keeper);
        self
    }

    /// Fetches the files of remote `uses:` actions. Default: none, and a step that uses
    /// a remote action fails with a message naming it (local `./` actions still run).
    pub fn action_fetcher(mut self, fetcher: Arc<dyn crate::ActionFetcher>) -> Self {
        self.actions = Some(fetcher);
        self
    }

    /// Builds the engine.
    ///
    /// # Errors
    /// [`EngineError::Missing`] without a hypervisor or an executor.
    pub fn build(self) -> Result<Engine, EngineError> {
        let inner = EngineInner {
            hypervisor: self.hypervisor.ok_or(EngineError::Missing("hypervisor"))?,
            executor: self.executor.ok_or(EngineError::Missing("step executor"))?,
            capacity: self.capacity.unwrap_or(1),
            name: self.name.unwrap_or_else(|| "orchestrator".to_owned()),
            metrics: crate::EngineMetrics::new(),
            #[cfg(feature = "_store")]
            store: self.store,
            claim_lease: self.claim_lease.unwrap_or(std::time::Duration::from_secs(30)),
            queue_depth_interval: self.queue_depth_interval.unwrap_or(std::time::Duration::from_secs(5)),
            debug: self.debug,
            actions: self.actions,
        };
        Ok(Engine { inner: Arc::new(inner) })
    }
}
