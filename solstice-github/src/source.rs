//! [`GithubSource`]: the runner protocol as a [`JobSource`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use serde_json::json;
use solstice_core::{JobEvent, JobEventKind, JobId, JobResult, JobSource, LogStream, ReportOutcome, SourceError, SourceMessage};
use solstice_forge_keys::UserKeys;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::http::{Auth, Call, Http, RunnerAuth};
use crate::json::{bool_field, join_url, str_field};
use crate::protocol::job::JobMessage;
use crate::protocol::location::ids;
use crate::protocol::session::{Listener, Message, Session, SessionTiming};
use crate::recovery::{JobRecord, Journal, complete_abandoned};
use crate::report::JobReport;
use crate::store::RunnerConfig;
use crate::translate::translate;
use crate::{GithubError, RunnerKey};

/// How often waiting live-log lines are sent.
const FEED_TICK: Duration = Duration::from_millis(250);

/// A job the source handed out and still reports for.
#[derive(Debug)]
struct Running {
    report: JobReport,
    renew_stop: CancellationToken,
}

/// How a job's lock is renewed.
#[derive(Debug, Clone)]
enum Renewer {
    /// `PATCH jobrequests/{requestId}` with the runner token.
    Pool { url: String, request_id: i64 },
    /// `POST renewjob` with the job token.
    Run { http: Http, url: String, token: solstice_core::Secret, plan_id: String, job_id: String },
}

#[derive(Debug, Clone)]
struct Options {
    renew_interval: Duration,
    first_renew_attempts: u32,
    retry_delay: Duration,
    timing: SessionTiming,
    ephemeral: bool,
    labels: Vec<String>,
    journal: Option<Journal>,
    metrics: Option<solstice_core::EngineMetrics>,
    drain_limit: Duration,
}

struct Inner {
    name: String,
    key: RunnerKey,
    auth: Arc<RunnerAuth>,
    listener: Listener,
    options: Options,
    session: tokio::sync::Mutex<Option<Session>>,
    last_message: Mutex<Option<i64>>,
    jobs: Mutex<HashMap<JobId, Arc<tokio::sync::Mutex<Running>>>>,
    by_external: Mutex<HashMap<String, JobId>>,
    done: Mutex<HashSet<JobId>>,
    /// Jobs GitHub (or a lost lock) asked to cancel: a cancelled job that is not here
    /// was interrupted by the shutdown of the process running it.
    cancelled_by_forge: Mutex<HashSet<JobId>>,
    pending: Mutex<VecDeque<SourceMessage>>,
    wake: Notify,
    idle: Notify,
    tracker: TaskTracker,
    stop: CancellationToken,
    handed_out: AtomicUsize,
    finished: AtomicUsize,
    shutdown_requested: AtomicBool,
    recovered: tokio::sync::OnceCell<()>,
    /// Fetches the triggering user's public keys for jobs that opted in to debug SSH;
    /// `None` if its HTTP client could not be built (those jobs then get no keys).
    keys: Option<UserKeys>,
}

/// The line GitHub's runner ends a job with when its shutdown interrupted the job.
const SHUTDOWN_MESSAGE: &str = "##[error]The runner has received a shutdown signal. This can happen when the runner service is \
                                stopped, or a manually started runner is canceled.";

/// A registered GitHub runner, serving jobs as a [`JobSource`].
///
/// `next` keeps a session, long-polls the pool (following `BrokerMigration` to the
/// broker), acquires jobs, renews their locks and turns them into
/// [`JobRequest`](solstice_core::JobRequest)s; cancellations arrive as
/// [`SourceMessage::Cancel`]. `report` turns a job's events into GitHub's step states,
/// logs and the job's completion. Call [`GithubSource::shutdown`] when done, so the
/// session is deleted. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct GithubSource {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GithubSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubSource").field("name", &self.inner.name).finish_non_exhaustive()
    }
}

/// Builds a [`GithubSource`] from a registered runner.
#[derive(Debug)]
#[must_use]
pub struct GithubSourceBuilder {
    config: RunnerConfig,
    options: Options,
}

impl GithubSourceBuilder {
    /// How often a running job's lock is renewed. Default: 60 s.
    pub fn renew_interval(mut self, interval: Duration) -> Self {
        self.options.renew_interval = interval;
        self
    }

    /// How long to wait between retries of a failed call (first lock renewal, session
    /// conflicts). Default: 30 s for session conflicts, 2 s for the first renewal.
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.options.retry_delay = delay;
        self.options.timing.conflict_retry = delay;
        self
    }

    /// How long a stopping runner ([`crate::serve_with_queue`]) waits for the jobs it
    /// took to be reported, after it stopped taking new ones. Jobs still running then
    /// are left to GitHub, which fails them when their lock expires. When the jobs run
    /// elsewhere and get a grace period to finish (as in `solstice serve`), make this
    /// longer than that grace. The runner no longer polls GitHub while it drains, so a
    /// cancellation sent meanwhile is not received. Default: 120 s.
    pub fn drain_limit(mut self, limit: Duration) -> Self {
        self.options.drain_limit = limit;
        self
    }

    /// Take one job, then end (`next` returns `None` once it is reported complete).
    /// Default: what the runner was registered with.
    pub fn ephemeral(mut self, ephemeral: bool) -> Self {
        self.options.ephemeral = ephemeral;
        self
    }

    /// The `runs-on` labels given to jobs (the queue routes by the first one that is not
    /// generic). Default: the labels the runner registered with.
    pub fn labels(mut self, labels: Vec<String>) -> Self {
        self.options.labels = labels;
        self
    }

    /// The directory where a record of each job in flight is kept (mode 0600, ids and
    /// URLs only, no tokens), so that after a crash the next start completes the job as
    /// failed instead of leaving it running at GitHub. Usually the runner's directory.
    /// Default: none (no crash recovery).
    pub fn state_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.options.journal = Some(Journal::new(dir));
        self
    }

    /// Counts every failed call to GitHub's APIs (no answer, or an error status) with
    /// [`EngineMetrics::forge_error`](solstice_core::EngineMetrics::forge_error), so the
    /// engine's `/metrics` shows them. Default: not counted.
    pub fn metrics(mut self, metrics: solstice_core::EngineMetrics) -> Self {
        self.options.metrics = Some(metrics);
        self
    }

    /// Builds the source.
    ///
    /// # Errors
    /// [`GithubError::Transport`] if the HTTP client cannot be built.
    pub fn build(self) -> Result<GithubSource, GithubError> {
        let RunnerConfig { settings, credentials, key } = self.config;
        let http = Http::new()?.count_errors_in(self.options.metrics.clone());
        // The token service signs with a copy of the key; the source keeps its own for
        // session keys.
        let signer = RunnerKey::from_rsaparams_json(key.to_rsaparams_json()?.expose())?;
        let auth = Arc::new(RunnerAuth::new(http, Arc::new(signer), &credentials.data));
        let name = format!("github:{}", settings.agent_name);
        let listener = Listener::new(auth.clone(), settings, self.options.timing.clone());
        let keys = UserKeys::new(&format!("GitHubActionsRunner-solstice/{}", crate::RUNNER_VERSION))
            .inspect_err(|e| tracing::error!(error = %e, "no HTTP client for users' public keys; debug SSH will find no keys"))
            .ok();
        Ok(GithubSource {
            inner: Arc::new(Inner {
                name,
                key,
                auth,
                listener,
                options: self.options,
                session: tokio::sync::Mutex::new(None),
                last_message: Mutex::new(None),
                jobs: Mutex::default(),
                by_external: Mutex::default(),
                done: Mutex::default(),
                cancelled_by_forge: Mutex::default(),
                pending: Mutex::default(),
                wake: Notify::new(),
                idle: Notify::new(),
                tracker: TaskTracker::new(),
                stop: CancellationToken::new(),
                handed_out: AtomicUsize::new(0),
                finished: AtomicUsize::new(0),
                shutdown_requested: AtomicBool::new(false),
                recovered: tokio::sync::OnceCell::new(),
                keys,
            }),
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl GithubSource {
    /// Starts building a source for a registered runner.
    pub fn builder(config: RunnerConfig) -> GithubSourceBuilder {
        let labels = if config.settings.labels.is_empty() { crate::default_labels() } else { config.settings.labels.clone() };
        let ephemeral = config.settings.ephemeral;
        GithubSourceBuilder {
            config,
            options: Options {
                renew_interval: Duration::from_secs(60),
                first_renew_attempts: 5,
                retry_delay: Duration::from_secs(2),
                timing: SessionTiming { conflict_retry: Duration::from_secs(30), conflict_limit: Duration::from_secs(240) },
                ephemeral,
                labels,
                journal: None,
                metrics: None,
                drain_limit: Duration::from_secs(120),
            },
        }
    }

    /// How long a stopping runner waits for its jobs to be reported
    /// ([`GithubSourceBuilder::drain_limit`]).
    pub fn drain_limit(&self) -> Duration {
        self.inner.options.drain_limit
    }

    /// The number of jobs handed out and not yet reported complete.
    pub fn jobs_in_flight(&self) -> usize {
        lock(&self.inner.jobs).len()
    }

    /// Waits until no job is in flight, or `limit` passed. Returns whether it is idle.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let idle = self.inner.idle.notified();
            if self.jobs_in_flight() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.jobs_in_flight() == 0;
            }
        }
    }

    /// Stops renewing locks and deletes the session (not cancelled by anything: the
    /// delete has its own 30 s limit). After an ephemeral job, also deletes the
    /// registration with the runner's own credentials.
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
        let session = self.inner.session.lock().await.take();
        // After a RunnerShutdown the official runner leaves its session to GitHub.
        if let Some(session) = session
            && !self.shutdown_requested()
        {
            self.inner.listener.delete_session(&session).await;
        }
        if self.inner.options.ephemeral
            && self.inner.finished.load(Ordering::SeqCst) > 0
            && let Err(e) = crate::registration::delete_self(&self.inner.auth, &self.inner.listener.settings).await
        {
            tracing::warn!(error = %e, "could not delete the ephemeral runner's registration");
        }
    }

    /// Whether GitHub asked this runner to shut down (a `RunnerShutdown` message): it
    /// takes no more jobs, and [`crate::serve_with_queue`] ends once the running ones
    /// are reported.
    pub fn shutdown_requested(&self) -> bool {
        self.inner.shutdown_requested.load(Ordering::SeqCst)
    }

    /// Whether an ephemeral runner has finished its one job.
    pub fn is_spent(&self) -> bool {
        let i = &self.inner;
        i.options.ephemeral && i.handed_out.load(Ordering::SeqCst) > 0 && i.finished.load(Ordering::SeqCst) >= i.handed_out.load(Ordering::SeqCst)
    }

    async fn session(&self) -> Result<Session, GithubError> {
        let mut guard = self.inner.session.lock().await;
        if let Some(s) = guard.as_ref() {
            return Ok(s.clone());
        }
        let s = self.inner.listener.create_session(&self.inner.key).await?;
        *guard = Some(s.clone());
        Ok(s)
    }

    async fn forget_session(&self) {
        *self.inner.session.lock().await = None;
    }

    /// `event` as GitHub's runner would report it. A job that ends cancelled although
    /// GitHub never asked for it was stopped by the shutdown of the runner (or of the
    /// orchestrator running it): GitHub's runner reports such a job failed, with its
    /// shutdown message.
    fn as_github_reports<'e>(&self, event: &'e JobEvent) -> std::borrow::Cow<'e, JobEvent> {
        let JobEventKind::JobFinished { result: JobResult::Cancelled } = event.kind else {
            return std::borrow::Cow::Borrowed(event);
        };
        if lock(&self.inner.cancelled_by_forge).contains(&event.job_id) {
            return std::borrow::Cow::Borrowed(event);
        }
        tracing::info!(job_id = %event.job_id, "the job was interrupted by a shutdown; reporting it failed, as GitHub's runner does");
        let mut failed = event.clone();
        failed.kind = JobEventKind::JobFinished { result: JobResult::Failure };
        std::borrow::Cow::Owned(failed)
    }

    fn push(&self, message: SourceMessage) {
        if let SourceMessage::Cancel(id) = &message {
            lock(&self.inner.cancelled_by_forge).insert(*id);
        }
        lock(&self.inner.pending).push_back(message);
        self.inner.wake.notify_one();
    }

    async fn handle(&self, message: Message, session: &Session) -> Result<(), GithubError> {
        let kind = message.message_type.to_ascii_lowercase();
        let one_job_taken = self.inner.options.ephemeral && self.inner.handed_out.load(Ordering::SeqCst) > 0;
        match kind.as_str() {
            "pipelineagentjobrequest" => {
                if one_job_taken {
                    // Left undeleted: the service gives it to another runner.
                    tracing::info!("an ephemeral runner ignores a second job");
                    tokio::time::sleep(self.inner.options.retry_delay).await;
                    return Ok(());
                }
                let msg = JobMessage::parse(&message.body);
                if let Some(id) = message.pool_id {
                    self.inner.listener.delete_message(session, id).await;
                }
                let msg = msg?;
                let locations = self.inner.listener.locations().await?;
                let url = locations.url(
                    ids::JOB_REQUESTS,
                    &[("poolId", &self.inner.listener.settings.pool_id.to_string()), ("requestId", &msg.request_id.to_string())],
                );
                let renewer = Renewer::Pool { url, request_id: msg.request_id };
                self.start_job(msg, renewer).await;
            }
            "runnerjobrequest" => {
                if one_job_taken {
                    tracing::info!("an ephemeral runner ignores a second job");
                    return Ok(());
                }
                let request_id = str_field(&message.body, "runner_request_id").unwrap_or_default();
                let run_url = str_field(&message.body, "run_service_url").unwrap_or_default();
                let billing = str_field(&message.body, "billing_owner_id").unwrap_or_default();
                if let Some(broker) = &message.broker
                    && bool_field(&message.body, "should_acknowledge").unwrap_or(true)
                {
                    self.inner.listener.acknowledge(broker, session, &request_id, self.jobs_in_flight() > 0).await;
                }
                if run_url.is_empty() {
                    tracing::warn!("a job request without a run service URL; ignored");
                    return Ok(());
                }
                let acquired = match self.inner.listener.acquire(&run_url, &request_id, &billing).await {
                    Ok(job) => job,
                    Err(e) if matches!(e.status(), Some(404 | 409 | 422)) => {
                        tracing::info!(error = %e, "the job went to another runner or is gone");
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                };
                let mut msg = JobMessage::parse(&acquired)?;
                if !msg.is_v2() {
                    msg.message_type = "RunnerJobRequest".to_owned();
                }
                let renewer = Renewer::Run {
                    http: self.inner.auth.http().clone(),
                    url: join_url(&msg.endpoint.url, "renewjob"),
                    token: msg.endpoint.token.clone(),
                    plan_id: msg.plan_id.clone(),
                    job_id: msg.job_id.clone(),
                };
                self.start_job(msg, renewer).await;
            }
            "jobcancellation" => {
                let job = str_field(&message.body, "jobId").unwrap_or_default().to_ascii_lowercase();
                let id = lock(&self.inner.by_external).get(&job).copied();
                if let Some(pool_id) = message.pool_id {
                    self.inner.listener.delete_message(session, pool_id).await;
                }
                match id {
                    Some(id) => {
                        tracing::info!(job_id = %id, "GitHub cancelled the job");
                        self.push(SourceMessage::Cancel(id));
                    }
                    None => {
                        // A cancellation for a job we do not run; do not spin on it.
                        tokio::time::sleep(self.inner.options.retry_delay).await;
                    }
                }
            }
            "forcetokenrefresh" => {
                self.inner.auth.invalidate().await;
                if let Some(id) = message.pool_id {
                    self.inner.listener.delete_message(session, id).await;
                }
            }
            "runnershutdown" => {
                tracing::info!("GitHub asked the runner to shut down");
                self.inner.shutdown_requested.store(true, Ordering::SeqCst);
                // GitHub's runner stops its running job as on a shutdown signal: it is
                // cancelled here and reported failed with the shutdown message, not as
                // a cancellation GitHub asked for.
                let running: Vec<JobId> = lock(&self.inner.jobs).keys().copied().collect();
                let mut pending = lock(&self.inner.pending);
                pending.extend(running.into_iter().map(SourceMessage::Cancel));
                drop(pending);
                self.inner.wake.notify_one();
            }
            other => {
                tracing::debug!(message_type = other, "ignoring a message");
                if let Some(id) = message.pool_id {
                    self.inner.listener.delete_message(session, id).await;
                }
            }
        }
        Ok(())
    }

    async fn start_job(&self, msg: JobMessage, renewer: Renewer) {
        // Acquired: from here on the job must be completed, also by the next process if
        // this one dies.
        if let Some(journal) = &self.inner.options.journal
            && let Err(e) = journal.save(&JobRecord::of(&msg))
        {
            tracing::warn!(github_job = %msg.job_id, error = %e, "could not record the job for crash recovery");
        }
        // The lock is renewed once before anything runs; a job that cannot be renewed
        // is abandoned (GitHub gives it to another runner).
        let mut renewed = false;
        for attempt in 0..self.inner.options.first_renew_attempts {
            match renew(&self.inner.auth, &renewer).await {
                Ok(()) => {
                    renewed = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "could not renew the job's lock");
                    if e.status() == Some(404) {
                        break;
                    }
                    tokio::time::sleep(self.inner.options.retry_delay).await;
                }
            }
        }
        if !renewed {
            tracing::error!(github_job = %msg.job_id, "abandoning a job whose lock cannot be renewed");
            if let Some(journal) = &self.inner.options.journal {
                journal.remove(&msg.job_id);
            }
            return;
        }
        let mut translation = translate(&msg, &self.inner.name, &self.inner.options.labels);
        let job_id = translation.request.id;
        // The keys are fetched before the job is handed out, so that the engine has them
        // if the job fails; a failed fetch only costs debug SSH. A job that cannot run
        // here fails without a machine, so it needs none.
        let debug_line = match translation.debug_user() {
            Some((server, actor)) if translation.unsupported.is_none() => {
                let (keys, line) = self.debug_keys(job_id, &server, actor.as_deref()).await;
                translation.request.debug_keys = keys;
                Some(line)
            }
            _ => None,
        };
        let mut report = JobReport::new(
            job_id,
            msg.clone(),
            self.inner.auth.http().clone(),
            self.inner.listener.settings.agent_name.clone(),
            &translation.steps,
            crate::report::JobMasks { regexes: translation.regex_masks, values: translation.masker.clone() },
            translation.contexts,
        );
        if let Some(line) = debug_line {
            report.job_line(&line);
        }
        let renew_stop = self.inner.stop.child_token();
        if msg.is_v2()
            && let Some(url) = &msg.endpoint.feed_url
        {
            report.set_live_feed(crate::report::spawn_live_feed(
                &self.inner.tracker,
                self.inner.auth.http().clone(),
                url.clone(),
                msg.endpoint.token.clone(),
                job_id,
                self.inner.stop.child_token(),
            ));
        }
        let running = Arc::new(tokio::sync::Mutex::new(Running { report, renew_stop: renew_stop.clone() }));
        lock(&self.inner.jobs).insert(job_id, running.clone());
        lock(&self.inner.by_external).insert(msg.job_id.to_ascii_lowercase(), job_id);
        self.inner.handed_out.fetch_add(1, Ordering::SeqCst);
        tracing::info!(%job_id, github_job = %msg.job_id, v2 = msg.is_v2(), "job acquired");
        self.spawn_renewal(job_id, renewer, renew_stop.clone());
        self.spawn_ticker(running, renew_stop);
        match translation.unsupported {
            None => self.push(SourceMessage::Job(Box::new(translation.request))),
            Some((index, why)) => {
                tracing::warn!(%job_id, reason = %why, "failing a job this runner cannot run");
                let source = self.clone();
                let steps = translation.request.steps.len();
                self.inner.tracker.spawn(async move { source.fail_unsupported(job_id, steps, index, why).await });
            }
        }
    }

    /// The public keys `server` publishes for `actor`, and a line for the job's log
    /// saying whose keys were found (public information) or why there are none.
    async fn debug_keys(&self, job_id: JobId, server: &str, actor: Option<&str>) -> (Vec<String>, String) {
        let Some(user) = actor else {
            tracing::warn!(%job_id, "the job asked for debug SSH, but GitHub did not say who started the run");
            return (Vec::new(), "##[warning]Debug SSH: GitHub did not say who started this run (github.actor), so no public SSH keys were fetched.".to_owned());
        };
        let fetched = match &self.inner.keys {
            Some(keys) => tokio::select! {
                fetched = keys.fetch(server, user) => fetched.map_err(|e| solstice_core::support::error_chain(&e)),
                _ = self.inner.stop.cancelled() => Err("the runner is stopping".to_owned()),
            },
            None => Err("this runner cannot make HTTP requests for them".to_owned()),
        };
        match fetched {
            Ok(keys) => {
                tracing::info!(%job_id, %user, keys = keys.len(), "fetched the user's public keys for debug SSH");
                let line = format!("Debug SSH: {} public SSH key(s) of {user} found on the forge.", keys.len());
                (keys, line)
            }
            Err(why) => {
                tracing::warn!(%job_id, %user, error = %why, "could not fetch the user's public keys for debug SSH");
                (Vec::new(), format!("##[warning]Debug SSH: could not fetch the public SSH keys of {user}: {why}"))
            }
        }
    }

    fn spawn_ticker(&self, running: Arc<tokio::sync::Mutex<Running>>, stop: CancellationToken) {
        self.inner.tracker.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(FEED_TICK) => {}
                    _ = stop.cancelled() => return,
                }
                running.lock().await.report.tick().await;
            }
        });
    }

    fn spawn_renewal(&self, job_id: JobId, renewer: Renewer, stop: CancellationToken) {
        let source = self.clone();
        let interval = self.inner.options.renew_interval;
        self.inner.tracker.spawn(async move {
            let mut failures = 0u32;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stop.cancelled() => return,
                }
                match renew(&source.inner.auth, &renewer).await {
                    Ok(()) => failures = 0,
                    Err(e) if e.status() == Some(404) => {
                        tracing::warn!(%job_id, "GitHub no longer knows the job; cancelling it");
                        source.push(SourceMessage::Cancel(job_id));
                        return;
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(%job_id, failures, error = %e, "could not renew the job's lock");
                        if failures >= 5 {
                            source.push(SourceMessage::Cancel(job_id));
                            return;
                        }
                    }
                }
            }
        });
    }

    /// Reports a job this runner cannot execute as failed, with the reason in its log.
    async fn fail_unsupported(&self, job_id: JobId, steps: usize, index: Option<usize>, why: String) {
        let mut kinds = vec![JobEventKind::Accepted { orchestrator: "solstice-github".to_owned() }];
        let line = |step, text: &str| JobEventKind::Log { step, stream: LogStream::System, line: format!("##[error]{text}") };
        if index.is_none() {
            kinds.push(line(None, &why));
        }
        for i in 0..steps {
            kinds.push(JobEventKind::StepStarted { index: i, name: String::new() });
            let result = if Some(i) == index {
                kinds.push(line(Some(i), &why));
                JobResult::Failure
            } else {
                JobResult::Skipped
            };
            kinds.push(JobEventKind::StepFinished {
                index: i,
                outcome: result,
                conclusion: result,
                exit_code: None,
                outputs: Default::default(),
            });
        }
        kinds.push(JobEventKind::JobFinished { result: JobResult::Failure });
        let mut backoff = solstice_core::support::Backoff::default();
        for (seq, kind) in kinds.into_iter().enumerate() {
            let event = JobEvent { job_id, attempt: 1, seq: seq as u64 + 1, at: time::OffsetDateTime::now_utc(), kind };
            loop {
                match self.report(&event).await {
                    Ok(_) => break,
                    Err(e) if e.is_transient() => {
                        if !backoff.wait(&self.inner.stop).await {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::error!(%job_id, error = %e, "could not report a failed job");
                        break;
                    }
                }
            }
        }
    }

    /// Completes, as failed, every job a previous process left in flight.
    async fn recover(&self) {
        let Some(journal) = &self.inner.options.journal else { return };
        for record in journal.load_all() {
            tracing::warn!(github_job = %record.job_id, broker = record.broker, "completing a job a previous run left unfinished");
            let mut attempt = 0;
            loop {
                attempt += 1;
                match complete_abandoned(&self.inner.auth, &self.inner.listener.settings, &record).await {
                    Ok(()) => {
                        tracing::info!(github_job = %record.job_id, "the unfinished job is completed as failed");
                        journal.remove(&record.job_id);
                    }
                    Err(e) if e.is_transient() && attempt < 3 => {
                        tracing::warn!(github_job = %record.job_id, error = %e, "could not complete the unfinished job; retrying");
                        tokio::time::sleep(self.inner.options.retry_delay).await;
                        continue;
                    }
                    Err(e) if e.is_transient() => {
                        tracing::error!(github_job = %record.job_id, error = %e, "could not complete the unfinished job; trying again at the next start");
                    }
                    Err(e) => {
                        tracing::error!(github_job = %record.job_id, error = %e, "GitHub refused to complete the unfinished job; giving up on it");
                        journal.remove(&record.job_id);
                    }
                }
                break;
            }
        }
        tracing::debug!(dir = %journal.dir().display(), "crash recovery done");
    }

    fn finish_job(&self, job_id: JobId, running: &Running) {
        running.renew_stop.cancel();
        if let Some(journal) = &self.inner.options.journal {
            journal.remove(&running.report.msg.job_id);
        }
        lock(&self.inner.jobs).remove(&job_id);
        lock(&self.inner.by_external).retain(|_, id| *id != job_id);
        lock(&self.inner.done).insert(job_id);
        self.inner.finished.fetch_add(1, Ordering::SeqCst);
        self.inner.wake.notify_one();
        self.inner.idle.notify_waiters();
    }
}

async fn renew(auth: &RunnerAuth, renewer: &Renewer) -> Result<(), GithubError> {
    match renewer {
        Renewer::Pool { url, request_id } => {
            let call = Call::new(Method::PATCH, url.clone(), "tenant")
                .api("5.1-preview.1")
                .query("lockToken", "00000000-0000-0000-0000-000000000000")
                .json(json!({"requestId": request_id}));
            auth.send(&call).await.map(|_| ())
        }
        Renewer::Run { http, url, token, plan_id, job_id } => {
            let call = Call::new(Method::POST, url.clone(), "run service").json(json!({"planId": plan_id, "jobId": job_id}));
            http.send(&call, &Auth::Bearer(token.clone())).await.map(|_| ())
        }
    }
}

fn session_lost(e: &GithubError) -> bool {
    e.mentions("SessionExpired") || e.mentions("RunnerSessionInvalid") || e.mentions("SessionNotFound")
}

#[async_trait]
impl JobSource for GithubSource {
    fn name(&self) -> &str {
        &self.inner.name
    }

    /// Waits for the jobs in flight to be reported complete, then ends the session.
    async fn close(&self, limit: Duration) {
        if !self.wait_idle(limit).await {
            tracing::warn!(jobs = self.jobs_in_flight(), ?limit, "some jobs were not reported before stopping");
        }
        self.shutdown().await;
    }

    async fn next(&self, cancel: &CancellationToken) -> Result<Option<SourceMessage>, SourceError> {
        tokio::select! {
            _ = self.inner.recovered.get_or_init(|| self.recover()) => {}
            _ = cancel.cancelled() => return Ok(None),
        }
        loop {
            if let Some(message) = lock(&self.inner.pending).pop_front() {
                return Ok(Some(message));
            }
            if self.is_spent() || cancel.is_cancelled() || self.inner.shutdown_requested.load(Ordering::SeqCst) {
                return Ok(None);
            }
            let session = tokio::select! {
                s = self.session() => s?,
                _ = cancel.cancelled() => return Ok(None),
            };
            let busy = self.jobs_in_flight() > 0;
            let last = *lock(&self.inner.last_message);
            let polled = tokio::select! {
                p = self.inner.listener.poll(&session, busy, last) => p,
                _ = self.inner.wake.notified() => continue,
                _ = cancel.cancelled() => return Ok(None),
            };
            let message = match polled {
                Ok(Some(message)) => message,
                Ok(None) => continue,
                Err(e) if session_lost(&e) => {
                    tracing::info!("the session expired; creating a new one");
                    self.forget_session().await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if let Some(id) = message.pool_id {
                *lock(&self.inner.last_message) = Some(id);
            }
            self.handle(message, &session).await?;
        }
    }

    async fn report(&self, event: &JobEvent) -> Result<ReportOutcome, SourceError> {
        let running = lock(&self.inner.jobs).get(&event.job_id).cloned();
        let Some(running) = running else {
            if lock(&self.inner.done).contains(&event.job_id) {
                return Ok(ReportOutcome::Continue);
            }
            return Err(SourceError::UnknownJob(event.job_id));
        };
        let mut running = running.lock().await;
        let event = self.as_github_reports(event);
        if matches!(event, std::borrow::Cow::Owned(_)) && !running.report.is_completed() {
            running.report.push_job_line(SHUTDOWN_MESSAGE);
        }
        let event = event.as_ref();
        match running.report.apply(event).await {
            Ok(()) => {
                if running.report.is_completed() {
                    tracing::info!(job_id = %event.job_id, result = ?running.report.result, "job reported complete");
                    self.finish_job(event.job_id, &running);
                }
                Ok(ReportOutcome::Continue)
            }
            Err(e) => {
                if !e.is_transient() && event.is_final() {
                    // Never keep a job GitHub will not take back: it would hold the slot.
                    tracing::error!(job_id = %event.job_id, error = %e, "GitHub refused the job's completion");
                    self.finish_job(event.job_id, &running);
                }
                Err(e.into())
            }
        }
    }
}
