//! [`ForgejoSource`]: Forgejo tasks in, job events out.

mod reporter;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use solstice_core::{JobEvent, JobEventKind, JobId, JobResult, JobSource, ReportOutcome, SourceError, SourceMessage};
use solstice_forge_keys::UserKeys;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::progress::Progress;
use crate::proto::runner::v1 as pb;
use crate::translate::{Translation, translate};
use crate::{CallOptions, ForgeError, ForgejoClient, RUNNER_VERSION};

/// Polling and reporting settings of a [`ForgejoSource`].
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) capacity: usize,
    pub(crate) fetch_interval: Duration,
    pub(crate) fetch_timeout: Duration,
    pub(crate) report_interval: Duration,
    pub(crate) rows_per_update: usize,
    pub(crate) max_buffered_rows: usize,
    pub(crate) report_retries: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            capacity: 1,
            fetch_interval: Duration::from_secs(2),
            fetch_timeout: Duration::from_secs(5),
            report_interval: Duration::from_secs(1),
            rows_per_update: 5_000,
            max_buffered_rows: 50_000,
            report_retries: 10,
        }
    }
}

/// A [`JobSource`] that is one registered Forgejo runner.
///
/// [`next`](JobSource::next) polls `FetchTask` every fetch interval for as many tasks as
/// there are free slots (`tasks_version` bookkeeping, `task_capacity`, the request-key
/// retry rule), translates each task's workflow payload into a [`solstice_core::JobRequest`]
/// and yields it. A task it cannot run (a parse error, an unsupported `uses:`) never
/// reaches the queue: it is reported failed, its log saying why and where.
///
/// [`report`](JobSource::report) turns a job's events into the task's log rows and step
/// states; a background reporter per task sends them (`UpdateLog`, then `UpdateTask`)
/// every report interval and runs the closing sequence when the job ends. When Forgejo
/// answers that the task was cancelled, the source yields [`SourceMessage::Cancel`] and
/// `report` answers [`ReportOutcome::CancelRequested`].
///
/// Events are buffered in memory until Forgejo acknowledges them; `report` waits (back
/// pressure) when a task has more than the configured number of unsent rows. The source
/// is cheap to clone (an `Arc` inside).
#[derive(Debug, Clone)]
pub struct ForgejoSource {
    inner: Arc<SourceInner>,
}

#[derive(Debug)]
pub(crate) struct SourceInner {
    name: String,
    runner_name: String,
    client: ForgejoClient,
    labels: Vec<String>,
    settings: Settings,
    poll: tokio::sync::Mutex<PollState>,
    tasks: Mutex<Tasks>,
    pending: Mutex<VecDeque<SourceMessage>>,
    /// Wakes `next`: a message is pending, a slot was freed, or fetching resumed.
    wake: Notify,
    paused: AtomicBool,
    tracker: TaskTracker,
    /// Stops the background reporters at once.
    hard_stop: CancellationToken,
    /// Fetches the triggering user's public keys for jobs that opted in to debug SSH;
    /// `None` if its HTTP client could not be built (those jobs then get no keys).
    keys: Option<UserKeys>,
}

#[derive(Debug)]
struct PollState {
    tasks_version: i64,
    request_key: String,
    last_fetch: Option<Instant>,
}

#[derive(Debug, Default)]
struct Tasks {
    by_job: HashMap<JobId, Arc<TaskEntry>>,
    task_ids: HashSet<i64>,
    /// Jobs whose task can no longer be reported: their events are dropped quietly.
    abandoned: HashSet<JobId>,
}

/// One task being reported.
#[derive(Debug)]
pub(crate) struct TaskEntry {
    job_id: JobId,
    progress: Mutex<Progress>,
    /// Wakes the task's reporter early (a full batch, or the job ended).
    wake: Notify,
    /// Signals that rows were acknowledged (or the reporter ended).
    drained: Notify,
    cancel_requested: AtomicBool,
    ended: AtomicBool,
}

impl TaskEntry {
    fn progress(&self) -> MutexGuard<'_, Progress> {
        // Every critical section leaves Progress consistent, so a poisoned lock is usable.
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Builds a [`ForgejoSource`].
#[derive(Debug)]
#[must_use]
pub struct ForgejoSourceBuilder {
    client: ForgejoClient,
    labels: Vec<String>,
    runner_name: String,
    settings: Settings,
}

impl ForgejoSourceBuilder {
    /// The runner's label names, sent with `Declare`. Default: none.
    pub fn labels(mut self, labels: Vec<String>) -> Self {
        self.labels = labels;
        self
    }

    /// The runner's name, shown in the first log row of each task. Default: `solstice`.
    pub fn runner_name(mut self, name: impl Into<String>) -> Self {
        self.runner_name = name.into();
        self
    }

    /// How many tasks run at once. Default: 1.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.settings.capacity = capacity.max(1);
        self
    }

    /// Time between two `FetchTask` calls. Default: 2 s.
    pub fn fetch_interval(mut self, interval: Duration) -> Self {
        self.settings.fetch_interval = interval;
        self
    }

    /// Deadline of one `FetchTask` call. Default: 5 s.
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.settings.fetch_timeout = timeout;
        self
    }

    /// Time between two reports of a running task. Default: 1 s.
    pub fn report_interval(mut self, interval: Duration) -> Self {
        self.settings.report_interval = interval;
        self
    }

    /// Most rows in one `UpdateLog`; a task with this many unsent rows is reported
    /// before its interval ends. Default: 5000.
    pub fn rows_per_update(mut self, rows: usize) -> Self {
        self.settings.rows_per_update = rows.max(1);
        self
    }

    /// Unsent rows of one task after which `report` waits for Forgejo (bounds memory).
    /// Default: 50 000.
    pub fn max_buffered_rows(mut self, rows: usize) -> Self {
        self.settings.max_buffered_rows = rows.max(1);
        self
    }

    /// Consecutive refusals (other than an unreachable server, which is retried until
    /// it comes back) after which a task is given up. Default: 10.
    pub fn report_retries(mut self, retries: u32) -> Self {
        self.settings.report_retries = retries.max(1);
        self
    }

    /// Counts every failed call to Forgejo (fetching, reporting, declaring) with
    /// [`EngineMetrics::forge_error`](solstice_core::EngineMetrics::forge_error), so the
    /// engine's `/metrics` shows them (see [`ForgejoClient::with_metrics`]). Default: not
    /// counted.
    pub fn metrics(mut self, metrics: solstice_core::EngineMetrics) -> Self {
        self.client = self.client.with_metrics(metrics);
        self
    }

    /// Builds the source.
    ///
    /// # Errors
    /// [`ForgeError::NoCredentials`] if the client has no runner credentials.
    pub fn build(self) -> Result<ForgejoSource, ForgeError> {
        let uuid = match self.client.credentials() {
            Some(c) => c.uuid.clone(),
            None => return Err(ForgeError::NoCredentials(crate::Procedure::FetchTask)),
        };
        let keys = UserKeys::new(&format!("solstice-forgejo-runner/{}", env!("CARGO_PKG_VERSION")))
            .inspect_err(|e| tracing::error!(error = %e, "no HTTP client for users' public keys; debug SSH will find no keys"))
            .ok();
        let inner = SourceInner {
            keys,
            name: format!("forgejo:{uuid}"),
            runner_name: self.runner_name,
            client: self.client,
            labels: self.labels,
            settings: self.settings,
            poll: tokio::sync::Mutex::new(PollState {
                tasks_version: 0,
                request_key: new_request_key(),
                last_fetch: None,
            }),
            tasks: Mutex::default(),
            pending: Mutex::default(),
            wake: Notify::new(),
            paused: AtomicBool::new(false),
            tracker: TaskTracker::new(),
            hard_stop: CancellationToken::new(),
        };
        Ok(ForgejoSource { inner: Arc::new(inner) })
    }
}

fn new_request_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl ForgejoSource {
    /// Starts building a source on a client that carries the runner's credentials.
    pub fn builder(client: ForgejoClient) -> ForgejoSourceBuilder {
        ForgejoSourceBuilder {
            client,
            labels: Vec::new(),
            runner_name: "solstice".to_owned(),
            settings: Settings::default(),
        }
    }

    /// `Declare`: sends this runner's version and label names. Returns `None` when the
    /// server is too old to know `Declare`.
    ///
    /// # Errors
    /// [`ForgeError`]; [`ForgeError::is_auth`] when the runner is not (or no longer)
    /// registered.
    pub async fn declare(&self) -> Result<Option<pb::Runner>, ForgeError> {
        match self.inner.client.declare(RUNNER_VERSION, &self.inner.labels).await {
            Ok(runner) => Ok(Some(runner)),
            Err(e) if e.is_unimplemented() => {
                tracing::info!("the Forgejo server does not know Declare (older than 1.21); carrying on");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Tasks taken and not yet fully reported.
    pub fn active_tasks(&self) -> usize {
        self.inner.lock_tasks().by_job.len()
    }

    /// Stops fetching new tasks; [`next`](JobSource::next) then only yields
    /// cancellations. Reporting goes on.
    pub fn pause(&self) {
        self.inner.paused.store(true, Ordering::SeqCst);
        self.inner.wake.notify_one();
    }

    /// Reports every task whose job no orchestrator has taken yet as failed with
    /// `reason` (used at shutdown: queued jobs will not run).
    pub fn fail_unstarted(&self, reason: &str) {
        let entries: Vec<_> = self.inner.lock_tasks().by_job.values().cloned().collect();
        let now = OffsetDateTime::now_utc();
        for entry in entries {
            let mut progress = entry.progress();
            if !progress.accepted() && !progress.finished() {
                progress.push_row(now, &format!("##[error]{reason}"));
                progress.finish(JobResult::Failure, now);
                drop(progress);
                entry.wake.notify_one();
            }
        }
    }

    /// Waits up to `grace` for every task to be fully reported, then stops the
    /// reporters. Returns whether every task was reported.
    pub async fn close(&self, grace: Duration) -> bool {
        self.pause();
        self.inner.tracker.close();
        let done = tokio::time::timeout(grace, self.inner.tracker.wait()).await.is_ok();
        if !done {
            tracing::warn!(tasks = self.active_tasks(), "tasks still unreported at shutdown");
        }
        self.inner.hard_stop.cancel();
        self.inner.tracker.wait().await;
        done
    }

    fn accept(&self, task: pb::Task) {
        let inner = &self.inner;
        let task_id = task.id;
        if !inner.lock_tasks().task_ids.insert(task_id) {
            tracing::error!(task_id, "Forgejo sent a task that is already running here; ignoring it");
            return;
        }
        let job_id = JobId::from_external(&inner.name, &task_id.to_string());
        let now = OffsetDateTime::now_utc();
        let received = format!(
            "{RUNNER_VERSION} (runner {}) received task {task_id}",
            inner.runner_name
        );
        let mut debug_user = None;
        let (progress, message) = match translate(&task, &inner.name) {
            Translation::Run { job, outputs, debug_user: user } => {
                let mut progress = Progress::for_job(task_id, &job, outputs);
                progress.push_row(now, &received);
                tracing::info!(task_id, %job_id, name = %job.name, "task received");
                debug_user = user;
                (progress, Some(SourceMessage::Job(job)))
            }
            Translation::Skip { steps, reason } => {
                let mut progress = Progress::new(task_id, steps);
                progress.push_row(now, &received);
                progress.push_row(now, &reason);
                progress.finish(JobResult::Skipped, now);
                tracing::info!(task_id, "task skipped by its condition");
                (progress, None)
            }
            Translation::Fail { steps, lines } => {
                let mut progress = Progress::new(task_id, steps);
                progress.push_row(now, &received);
                for line in &lines {
                    progress.push_row(now, line);
                }
                progress.finish(JobResult::Failure, now);
                tracing::warn!(task_id, "task cannot run here; reporting it failed");
                (progress, None)
            }
        };
        let entry = Arc::new(TaskEntry {
            job_id,
            progress: Mutex::new(progress),
            wake: Notify::new(),
            drained: Notify::new(),
            cancel_requested: AtomicBool::new(false),
            ended: AtomicBool::new(false),
        });
        inner.lock_tasks().by_job.insert(job_id, entry.clone());
        inner.tracker.spawn(reporter::run(self.inner.clone(), entry.clone()));
        match (message, debug_user) {
            (Some(SourceMessage::Job(mut job)), Some(user)) => {
                // The keys are fetched before the job is queued, so that the engine
                // has them if the job fails; a failed fetch only costs debug SSH.
                let inner = self.inner.clone();
                self.inner.tracker.spawn(async move {
                    job.debug_keys = inner.debug_keys(&entry, &user).await;
                    inner.push_message(SourceMessage::Job(job));
                });
            }
            (Some(message), _) => inner.push_message(message),
            (None, _) => {}
        }
    }

    /// One `FetchTask` round trip with the bookkeeping around it.
    async fn fetch(&self, free: usize) -> Result<(), ForgeError> {
        let inner = &self.inner;
        let mut poll = inner.poll.lock().await;
        poll.last_fetch = Some(Instant::now());
        let request = pb::FetchTaskRequest {
            tasks_version: poll.tasks_version,
            task_capacity: Some(i64::try_from(free).unwrap_or(i64::MAX)),
        };
        let options = CallOptions { timeout: Some(inner.settings.fetch_timeout), request_key: Some(&poll.request_key) };
        // On any failure the request key is kept, so a retried fetch recovers tasks the
        // server assigned to a lost answer.
        let response = inner.client.fetch_task(&request, options).await?;
        poll.request_key = new_request_key();
        let tasks: Vec<pb::Task> = response.task.into_iter().chain(response.additional_tasks).collect();
        if tasks.is_empty() {
            poll.tasks_version = poll.tasks_version.max(response.tasks_version);
        } else {
            poll.tasks_version = 0;
        }
        drop(poll);
        for task in tasks {
            self.accept(task);
        }
        Ok(())
    }
}

impl SourceInner {
    fn lock_tasks(&self) -> MutexGuard<'_, Tasks> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The public keys Forgejo publishes for `user`, with a line in the task's log
    /// saying whose keys were found (public information) or why there are none.
    async fn debug_keys(&self, entry: &TaskEntry, user: &str) -> Vec<String> {
        let fetched = match &self.keys {
            Some(keys) => keys.fetch(self.client.instance(), user).await.map_err(|e| solstice_core::support::error_chain(&e)),
            None => Err("this runner cannot make HTTP requests for them".to_owned()),
        };
        let line = match &fetched {
            Ok(keys) => format!("Debug SSH: {} public SSH key(s) of {user} found on the forge.", keys.len()),
            Err(why) => {
                tracing::warn!(%user, error = %why, "could not fetch the user's public keys for debug SSH");
                format!("##[warning]Debug SSH: could not fetch the public SSH keys of {user}: {why}")
            }
        };
        entry.progress().push_row(OffsetDateTime::now_utc(), &line);
        fetched.unwrap_or_default()
    }

    fn push_message(&self, message: SourceMessage) {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).push_back(message);
        self.wake.notify_one();
    }

    fn pop_message(&self) -> Option<SourceMessage> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
    }

    /// Forgets a task whose reporter ended; frees its slot.
    fn remove(&self, entry: &TaskEntry, abandoned: bool) {
        let mut tasks = self.lock_tasks();
        tasks.by_job.remove(&entry.job_id);
        if abandoned {
            tasks.abandoned.insert(entry.job_id);
        }
        drop(tasks);
        entry.ended.store(true, Ordering::SeqCst);
        entry.drained.notify_waiters();
        self.wake.notify_one();
    }
}

fn source_error(e: ForgeError) -> SourceError {
    if e.is_auth() {
        SourceError::Unauthorized(Some(Box::new(e)))
    } else if e.is_transient() {
        SourceError::Unavailable(Box::new(e))
    } else {
        SourceError::Other { message: "Forgejo refused to hand out tasks".into(), source: Some(Box::new(e)) }
    }
}

/// The last line of a job its runner's shutdown interrupted.
const SHUTDOWN_MESSAGE: &str = "The runner was stopped before the job ended.";

/// A job that ends cancelled although Forgejo never asked for it was stopped by the
/// shutdown of the runner (or of the orchestrator running it): Forgejo's runner reports
/// such a job failed, its unfinished steps cancelled. `None` for any other event.
fn interrupted_as_failure(event: &JobEvent, cancel_requested: bool) -> Option<JobEvent> {
    match event.kind {
        JobEventKind::JobFinished { result: JobResult::Cancelled } if !cancel_requested => {
            let mut failed = event.clone();
            failed.kind = JobEventKind::JobFinished { result: JobResult::Failure };
            Some(failed)
        }
        _ => None,
    }
}

#[async_trait]
impl JobSource for ForgejoSource {
    async fn open(&self) -> Result<(), SourceError> {
        self.declare().await.map(drop).map_err(source_error)
    }

    fn pause(&self) -> bool {
        ForgejoSource::pause(self);
        true
    }

    async fn close(&self, limit: Duration) {
        ForgejoSource::close(self, limit).await;
    }

    fn name(&self) -> &str {
        &self.inner.name
    }

    async fn next(&self, cancel: &CancellationToken) -> Result<Option<SourceMessage>, SourceError> {
        let inner = &self.inner;
        loop {
            let woken = inner.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if let Some(message) = inner.pop_message() {
                return Ok(Some(message));
            }
            if cancel.is_cancelled() {
                return Ok(None);
            }
            let free = inner.settings.capacity.saturating_sub(inner.lock_tasks().by_job.len());
            let due = inner.poll.lock().await.last_fetch.map(|last| last + inner.settings.fetch_interval);
            let wait_until = match due {
                Some(due) if due > Instant::now() => Some(due),
                _ => None,
            };
            if inner.paused.load(Ordering::SeqCst) || free == 0 || wait_until.is_some() {
                let sleep = async {
                    match wait_until {
                        Some(due) => tokio::time::sleep_until(due).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = &mut woken => {}
                    () = sleep => {}
                    () = cancel.cancelled() => return Ok(None),
                }
                continue;
            }
            tokio::select! {
                result = self.fetch(free) => result.map_err(source_error)?,
                () = cancel.cancelled() => return Ok(None),
            }
        }
    }

    async fn report(&self, event: &JobEvent) -> Result<ReportOutcome, SourceError> {
        let inner = &self.inner;
        let entry = {
            let tasks = inner.lock_tasks();
            match tasks.by_job.get(&event.job_id) {
                Some(entry) => entry.clone(),
                None if tasks.abandoned.contains(&event.job_id) => return Ok(ReportOutcome::Continue),
                None => return Err(SourceError::UnknownJob(event.job_id)),
            }
        };
        let (mut pending, finished) = {
            let mut progress = entry.progress();
            match interrupted_as_failure(event, entry.cancel_requested.load(Ordering::SeqCst)) {
                Some(failed) => {
                    if !progress.finished() {
                        progress.push_row(event.at, SHUTDOWN_MESSAGE);
                    }
                    progress.apply(&failed)
                }
                None => progress.apply(event),
            };
            (progress.pending_rows(), progress.finished())
        };
        if finished || pending >= inner.settings.rows_per_update {
            entry.wake.notify_one();
        }
        while pending >= inner.settings.max_buffered_rows && !entry.ended.load(Ordering::SeqCst) {
            let drained = entry.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            pending = entry.progress().pending_rows();
            if pending < inner.settings.max_buffered_rows || entry.ended.load(Ordering::SeqCst) {
                break;
            }
            tokio::select! {
                () = &mut drained => {}
                () = inner.hard_stop.cancelled() => break,
            }
            pending = entry.progress().pending_rows();
        }
        if entry.cancel_requested.load(Ordering::SeqCst) && !finished {
            Ok(ReportOutcome::CancelRequested)
        } else {
            Ok(ReportOutcome::Continue)
        }
    }
}
