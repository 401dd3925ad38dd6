//! A fake Forgejo server for tests of Forgejo Actions runners.
//!
//! [`FakeForgejo`] serves the runner protocol (`ping.v1.PingService`,
//! `runner.v1.RunnerService`) over Connect unary HTTP on `127.0.0.1`, as Forgejo does:
//! `application/proto` and `application/json`, Connect error bodies with Forgejo's codes
//! and messages, gzip on large responses, runner token checks, tasks versions, request
//! keys, `UpdateLog`'s acknowledgement arithmetic and archiving, cancellation, ephemeral
//! runners. It also serves users' public SSH keys at `INSTANCE/USER.keys`
//! ([`FakeForgejo::set_user_keys`]). Tests drive it through Rust methods: create
//! registration tokens, enqueue single-job workflow payloads ([`JobSpec`]), cancel tasks,
//! inject faults, and read back logs, step states, outputs and every request received.
//!
//! It is test support: it fakes the forge, never the runner under test.
//!
//! ```
//! use solstice_forgejo_fake::{FakeForgejo, JobSpec, Scope};
//! # async fn run() -> std::io::Result<()> {
//! let fake = FakeForgejo::start().await?;
//! let token = fake.registration_token(Scope::Instance);
//! let job = fake.enqueue(JobSpec::new("build", "on: push\njobs:\n  build:\n    runs-on: host\n    steps:\n      - run: echo hi\n"));
//! assert!(fake.job_task(job).is_none(), "no runner has fetched it yet");
//! # let _ = token; Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(run()).unwrap();
//! ```
#![warn(missing_docs, missing_debug_implementations)]

mod http;
mod log;
mod model;
mod procedures;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use solstice_forgejo::{ConnectCode, Procedure};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

pub use log::StoredRow;
pub use model::{JobSpec, Scope, Status};
use model::{Model, Options};

/// One request the fake received, with its answer.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// The procedure.
    pub procedure: Procedure,
    /// Request headers (names lowercase).
    pub headers: Vec<(String, String)>,
    /// The request body after decompression (empty unless bodies are recorded).
    pub body: Vec<u8>,
    /// The decoded request as proto3 JSON (null if not decoded or not recorded).
    pub request: Value,
    /// The HTTP status answered.
    pub status: u16,
    /// The Connect code of an error answer.
    pub code: Option<ConnectCode>,
    /// The response as proto3 JSON (null for errors or when bodies are not recorded).
    pub response: Value,
}

impl RecordedRequest {
    /// The value of a request header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A task's state as the fake stores it.
#[derive(Debug, Clone)]
pub struct TaskView {
    /// Task id.
    pub id: i64,
    /// Index of the job ([`FakeForgejo::enqueue`]'s return value).
    pub job: usize,
    /// The runner it was assigned to.
    pub runner: String,
    /// Task status.
    pub status: Status,
    /// Steps.
    pub steps: Vec<StepView>,
    /// Rows stored.
    pub log_rows: usize,
    /// Whether the log is archived (`no_more` seen or stopped as zombie).
    pub archived: bool,
    /// Outputs stored.
    pub outputs: BTreeMap<String, String>,
    /// Stop time (seconds), once final.
    pub stopped: Option<i64>,
    /// Whether the log was closed before the final `UpdateTask` (the documented order),
    /// once a final `UpdateTask` arrived.
    pub log_closed_before_final: Option<bool>,
    /// The current task token.
    pub token: String,
}

/// A task step as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepView {
    /// Name derived from the payload.
    pub name: String,
    /// Status (`None` = waiting).
    pub status: Option<Status>,
    /// First row of the step.
    pub log_index: i64,
    /// Rows of the step.
    pub log_length: i64,
    /// Start time in seconds (0 = not started).
    pub started: i64,
    /// Stop time in seconds.
    pub stopped: i64,
}

/// A runner as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerView {
    /// DB id.
    pub id: i64,
    /// UUID.
    pub uuid: String,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Label names.
    pub labels: Vec<String>,
    /// Ephemeral.
    pub ephemeral: bool,
}

/// Derived runner liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerStatus {
    /// No call in the last minute.
    Offline,
    /// Online, no report in the last 10 s.
    Idle,
    /// Reported in the last 10 s.
    Active,
}

#[derive(Debug, Default)]
pub(crate) struct Faults {
    unavailable: bool,
    fail_next: Vec<(Procedure, u32, ConnectCode)>,
    delays: HashMap<Procedure, Duration>,
    lose_fetches: u32,
}

#[derive(Debug)]
pub(crate) struct Shared {
    model: Mutex<Model>,
    faults: Mutex<Faults>,
    requests: Mutex<Vec<RecordedRequest>>,
    clock_offset: Mutex<Duration>,
    base_path: String,
    /// Public SSH keys served at `/USER.keys`, by user name.
    user_keys: Mutex<BTreeMap<String, Vec<String>>>,
    /// The user names asked for at `/USER.keys`, in order.
    key_requests: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub(crate) fn model(&self) -> MutexGuard<'_, Model> {
        lock(&self.model)
    }

    pub(crate) fn faults(&self) -> MutexGuard<'_, Faults> {
        lock(&self.faults)
    }

    pub(crate) fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + *lock(&self.clock_offset)
    }

    pub(crate) fn record(&self, request: RecordedRequest) {
        lock(&self.requests).push(request);
    }

    pub(crate) fn take_fault(&self, procedure: Procedure) -> Option<(ConnectCode, String)> {
        let mut faults = self.faults();
        if faults.unavailable {
            return Some((ConnectCode::Unavailable, "fake: the server is unavailable".into()));
        }
        let slot = faults.fail_next.iter_mut().find(|(p, n, _)| *p == procedure && *n > 0)?;
        slot.1 -= 1;
        Some((slot.2, format!("fake: injected {} failure", slot.2)))
    }

    pub(crate) fn take_lost_fetch(&self) -> bool {
        let mut faults = self.faults();
        if faults.lose_fetches > 0 {
            faults.lose_fetches -= 1;
            true
        } else {
            false
        }
    }
}

/// `GET INSTANCE/USER.keys`: the public SSH keys a test registered for the user, one
/// per line, as Forgejo serves them (plain text; an empty body for a user without keys,
/// 404 for an unknown user). Every other GET is 404.
async fn user_keys(axum::extract::State(shared): axum::extract::State<Arc<Shared>>, uri: axum::http::Uri) -> axum::response::Response {
    use axum::response::IntoResponse;
    let not_found = || (axum::http::StatusCode::NOT_FOUND, "Not found.\n").into_response();
    let Some(user) = uri
        .path()
        .strip_prefix(shared.base_path.as_str())
        .and_then(|p| p.strip_prefix('/'))
        .and_then(|p| p.strip_suffix(".keys"))
        .filter(|u| !u.is_empty() && !u.contains('/'))
    else {
        return not_found();
    };
    lock(&shared.key_requests).push(user.to_owned());
    match lock(&shared.user_keys).get(user) {
        Some(keys) => {
            let body: String = keys.iter().map(|k| format!("{k}\n")).collect();
            ([(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
        }
        None => not_found(),
    }
}

/// Configures a [`FakeForgejo`].
#[derive(Debug, Default)]
#[must_use]
pub struct FakeForgejoBuilder {
    options: Options,
    base_path: String,
}

impl FakeForgejoBuilder {
    /// Behave like Forgejo older than 1.21: `Declare` and `FetchSingleTask` answer a
    /// bare 404. Default: off.
    pub fn legacy(mut self, legacy: bool) -> Self {
        self.options.legacy = legacy;
        self
    }

    /// Answer `not_found` instead of Forgejo's `internal` for unknown task ids.
    /// Default: off.
    pub fn unknown_task_not_found(mut self, on: bool) -> Self {
        self.options.unknown_task_not_found = on;
        self
    }

    /// Store task logs in files in `dir` (as Forgejo does) instead of memory.
    /// Default: memory.
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.options.log_dir = Some(dir.into());
        self
    }

    /// Keep request and response bodies in the request record. Default: on (turn it
    /// off for benchmarks).
    pub fn record_bodies(mut self, on: bool) -> Self {
        self.options.record_bodies = on;
        self
    }

    /// The first task id handed out. Default: 1.
    pub fn first_task_id(mut self, id: i64) -> Self {
        self.options.first_task_id = id;
        self
    }

    /// Serve under a sub-path (`/forgejo` → `/forgejo/api/actions/...`). Default: none.
    pub fn base_path(mut self, path: &str) -> Self {
        self.base_path = path.trim_end_matches('/').to_owned();
        self
    }

    /// Binds `127.0.0.1:0` and serves until the [`FakeForgejo`] is dropped.
    ///
    /// # Errors
    /// If the socket cannot be bound.
    pub async fn start(self) -> std::io::Result<FakeForgejo> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}{}", listener.local_addr()?, self.base_path);
        let shared = Arc::new(Shared {
            model: Mutex::new(Model::new(self.options, url.clone())),
            faults: Mutex::default(),
            requests: Mutex::default(),
            clock_offset: Mutex::default(),
            base_path: self.base_path,
            user_keys: Mutex::default(),
            key_requests: Mutex::default(),
        });
        let app = axum::Router::new()
            .fallback(axum::routing::post(http::handle).get(user_keys))
            .with_state(shared.clone());
        let stop = CancellationToken::new();
        let shutdown = stop.clone();
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "fake Forgejo server failed");
            }
        });
        Ok(FakeForgejo { shared, url, stop })
    }
}

/// A running fake Forgejo server. Stops when dropped.
#[derive(Debug)]
pub struct FakeForgejo {
    shared: Arc<Shared>,
    url: String,
    stop: CancellationToken,
}

impl Drop for FakeForgejo {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl FakeForgejo {
    /// A fake with default settings, started.
    ///
    /// # Errors
    /// If the socket cannot be bound.
    pub async fn start() -> std::io::Result<Self> {
        Self::builder().start().await
    }

    /// Configures a fake.
    pub fn builder() -> FakeForgejoBuilder {
        FakeForgejoBuilder { options: Options { record_bodies: true, ..Options::default() }, base_path: String::new() }
    }

    /// The instance URL (no trailing `/`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A new registration token for `scope`; older tokens of the scope stop working.
    pub fn registration_token(&self, scope: Scope) -> String {
        let token = model::random_hex40();
        let mut model = self.shared.model();
        for (_, s, active) in &mut model.registration_tokens {
            if *s == scope {
                *active = false;
            }
        }
        model.registration_tokens.push((token.clone(), scope, true));
        token
    }

    /// Creates a runner from a 40-hex shared secret, as `forgejo-cli actions register
    /// --secret` does: its UUID is made of the first 16 ASCII characters of the secret,
    /// its token is the secret. Returns the UUID.
    pub fn register_shared_secret(&self, secret: &str, scope: Scope, name: &str, labels: &[&str]) -> String {
        let mut bytes = [0u8; 16];
        for (b, c) in bytes.iter_mut().zip(secret.bytes()) {
            *b = c;
        }
        let uuid = uuid::Uuid::from_bytes(bytes).to_string();
        let mut model = self.shared.model();
        let id = model.next_runner_id;
        model.next_runner_id += 1;
        model.runners.insert(
            uuid.clone(),
            model::Runner {
                id,
                uuid: uuid.clone(),
                token: secret.to_owned(),
                name: name.to_owned(),
                version: String::new(),
                labels: labels.iter().map(|l| (*l).to_owned()).collect(),
                ephemeral: false,
                scope,
                last_online: None,
                last_active: None,
                had_task: false,
            },
        );
        uuid
    }

    /// Enqueues a job; returns its index. A job with `needs` waits until every job of
    /// the same run with those ids is done.
    pub fn enqueue(&self, spec: JobSpec) -> usize {
        let now = self.shared.now();
        self.shared.model().enqueue(spec, now)
    }

    /// A job's status.
    pub fn job_status(&self, job: usize) -> Option<Status> {
        self.shared.model().jobs.get(job).map(|j| j.status)
    }

    /// The task of a job, once assigned.
    pub fn job_task(&self, job: usize) -> Option<i64> {
        self.shared.model().jobs.get(job).map(|j| j.task_id).filter(|id| *id != 0)
    }

    /// A task's state.
    pub fn task(&self, id: i64) -> Option<TaskView> {
        let model = self.shared.model();
        let task = model.tasks.get(&id)?;
        Some(TaskView {
            id,
            job: task.job,
            runner: task.runner.clone(),
            status: task.status,
            steps: task
                .steps
                .iter()
                .map(|s| StepView {
                    name: s.name.clone(),
                    status: s.status,
                    log_index: s.log_index,
                    log_length: s.log_length,
                    started: s.started,
                    stopped: s.stopped,
                })
                .collect(),
            log_rows: task.log.len(),
            archived: task.archived,
            outputs: task.outputs.clone(),
            stopped: task.stopped,
            log_closed_before_final: task.log_closed_first,
            token: task.token.clone(),
        })
    }

    /// Every task id, in order.
    pub fn task_ids(&self) -> Vec<i64> {
        self.shared.model().tasks.keys().copied().collect()
    }

    /// A task's stored log rows.
    pub fn log_rows(&self, id: i64) -> Vec<StoredRow> {
        self.shared.model().tasks.get_mut(&id).map(|t| t.log.rows()).unwrap_or_default()
    }

    /// A task's stored log lines (contents only).
    pub fn log(&self, id: i64) -> Vec<String> {
        self.log_rows(id).into_iter().map(|r| r.content).collect()
    }

    /// The rows of one step, by the step's reported `log_index`/`log_length`.
    pub fn step_log(&self, id: i64, step: usize) -> Vec<String> {
        let Some(view) = self.task(id) else { return Vec::new() };
        let Some(s) = view.steps.get(step) else { return Vec::new() };
        let start = usize::try_from(s.log_index).unwrap_or(0);
        let len = usize::try_from(s.log_length).unwrap_or(0);
        self.log(id).into_iter().skip(start).take(len).collect()
    }

    /// Cancels a task as a user would: task, job and unfinished steps cancelled; the
    /// log stays open for the runner's last rows.
    pub fn cancel_task(&self, id: i64) {
        let now = self.shared.now();
        self.shared.model().finish_task(id, Status::Cancelled, now.unix_timestamp(), false, now);
    }

    /// Stops a task as a zombie or endless task: failure, log archived.
    pub fn stop_task(&self, id: i64) {
        let now = self.shared.now();
        self.shared.model().finish_task(id, Status::Failure, now.unix_timestamp(), true, now);
    }

    /// Moves the fake's clock forward.
    pub fn advance_clock(&self, by: Duration) {
        *lock(&self.shared.clock_offset) += by;
    }

    /// Applies Forgejo's timers at the fake's current time: running tasks without a
    /// heartbeat for 10 min (zombie) or running for more than 3 h (endless) fail with
    /// their log archived; waiting or blocked jobs older than 24 h are cancelled.
    pub fn check_timers(&self) {
        let now = self.shared.now();
        let mut model = self.shared.model();
        let stale: Vec<i64> = model
            .tasks
            .values()
            .filter(|t| !t.status.is_done())
            .filter(|t| now - t.updated > Duration::from_secs(600) || now - t.started > Duration::from_secs(3 * 3600))
            .map(|t| t.id)
            .collect();
        for id in stale {
            model.finish_task(id, Status::Failure, now.unix_timestamp(), true, now);
        }
        for job in &mut model.jobs {
            if matches!(job.status, Status::Waiting | Status::Blocked) && now - job.updated > Duration::from_secs(86_400) {
                job.status = Status::Cancelled;
            }
        }
    }

    /// A runner, if registered (and not deleted).
    pub fn runner(&self, uuid: &str) -> Option<RunnerView> {
        self.shared.model().runners.get(uuid).map(|r| RunnerView {
            id: r.id,
            uuid: r.uuid.clone(),
            name: r.name.clone(),
            version: r.version.clone(),
            labels: r.labels.clone(),
            ephemeral: r.ephemeral,
        })
    }

    /// Every registered runner's UUID.
    pub fn runner_uuids(&self) -> Vec<String> {
        self.shared.model().runners.keys().cloned().collect()
    }

    /// A runner's liveness by Forgejo's thresholds (1 min offline, 10 s active).
    pub fn runner_status(&self, uuid: &str) -> RunnerStatus {
        let now = self.shared.now();
        let model = self.shared.model();
        let Some(runner) = model.runners.get(uuid) else { return RunnerStatus::Offline };
        match (runner.last_online, runner.last_active) {
            (Some(online), _) if now - online > Duration::from_secs(60) => RunnerStatus::Offline,
            (None, _) => RunnerStatus::Offline,
            (_, Some(active)) if now - active <= Duration::from_secs(10) => RunnerStatus::Active,
            _ => RunnerStatus::Idle,
        }
    }

    /// While on, every call answers 503 `unavailable`.
    pub fn set_unavailable(&self, on: bool) {
        self.shared.faults().unavailable = on;
    }

    /// The next `count` calls of `procedure` fail with `code`.
    pub fn fail_next(&self, procedure: Procedure, count: u32, code: ConnectCode) {
        self.shared.faults().fail_next.push((procedure, count, code));
    }

    /// Every call of `procedure` waits `delay` before it is handled.
    pub fn delay(&self, procedure: Procedure, delay: Duration) {
        self.shared.faults().delays.insert(procedure, delay);
    }

    /// The next `count` `FetchTask` calls are handled (tasks get assigned) but answered
    /// with 503, as if the answer was lost on the way.
    pub fn lose_fetch_answers(&self, count: u32) {
        self.shared.faults().lose_fetches += count;
    }

    /// Publishes `keys` (OpenSSH public key lines) as `user`'s keys at
    /// `INSTANCE/USER.keys`, as Forgejo does; replaces what was registered for `user`
    /// before. An empty list is a user without keys; a user never registered gets 404.
    pub fn set_user_keys(&self, user: &str, keys: &[&str]) {
        lock(&self.shared.user_keys).insert(user.to_owned(), keys.iter().map(|k| (*k).to_owned()).collect());
    }

    /// The user names whose keys were asked for at `INSTANCE/USER.keys`, in order
    /// (registered or not).
    pub fn key_requests(&self) -> Vec<String> {
        lock(&self.shared.key_requests).clone()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Requests of one procedure.
    pub fn requests_of(&self, procedure: Procedure) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).iter().filter(|r| r.procedure == procedure).cloned().collect()
    }

    /// Waits (polling every 10 ms) until `condition` holds or `timeout` passes; returns
    /// whether it held.
    pub async fn wait_until(&self, timeout: Duration, mut condition: impl FnMut(&Self) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if condition(self) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until a job's task is final and the runner closed its log and reported
    /// its final state; returns the task.
    pub async fn wait_job_done(&self, job: usize, timeout: Duration) -> Option<TaskView> {
        let done = self
            .wait_until(timeout, |fake| {
                fake.job_task(job).and_then(|id| fake.task(id)).is_some_and(|t| t.status.is_done() && t.archived)
            })
            .await;
        if done { self.job_task(job).and_then(|id| self.task(id)) } else { None }
    }
}
