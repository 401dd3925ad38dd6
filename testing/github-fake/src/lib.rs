//! A fake GitHub Actions service for tests of self-hosted runners.
//!
//! One HTTP server on `127.0.0.1` plays every GitHub host a runner talks to, under path
//! prefixes: the REST API (`/api/v3`), the tenant (`/tenant`: connectionData, pools,
//! agents, sessions, encrypted messages, job requests, timeline, feed, logs, plan
//! events), the token service (`/token`), the broker (`/broker`), the run service
//! (`/run`), the results service (`/results`), blob storage (`/blob`) and users' public
//! SSH keys (`/USER.keys`, registered with [`FakeGithub::set_user_keys`]). Tests enqueue
//! jobs with [`FakeJob`], choose classic or broker delivery, and read back what the
//! runner reported with [`FakeGithub::job`].
//!
//! It checks what the real service checks: RemoteAuth registration tokens, JWT client
//! assertions (RS256 or PS256, audience, issuer, lifetime ≤ 5 min, no replay), bearer
//! tokens with `WWW-Authenticate: Bearer` on 401, one session per runner, one job per
//! runner, job tokens for job-scoped calls, and signed blob URLs without
//! `Authorization`.
//!
//! ```
//! # async fn run() {
//! use solstice_github_fake::{FakeConfig, FakeGithub, FakeJob};
//! let fake = FakeGithub::start(FakeConfig::default()).await.expect("bind");
//! let job = fake.enqueue(FakeJob::new("build").run("echo hello")).await;
//! assert_eq!(fake.job(&job).await.expect("job").state, "queued");
//! # }
//! # tokio::runtime::Runtime::new().expect("runtime").block_on(run());
//! ```
#![warn(missing_docs)]
// Handlers return an axum `Response` as their error: it is what the client must see.
#![allow(clippy::result_large_err)]

mod api;
mod crypto;
mod feed;
mod jobs;
mod model;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::routing::{delete, get, patch, post, put};
use serde_json::{Value, json};
use tokio::sync::{Mutex, Notify};

pub use model::RequestRecord;
use model::{Data, Job, JobState, PoolMessage};

/// How a job reaches the runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// An encrypted `PipelineAgentJobRequest` on the pool; classic reporting.
    #[default]
    Pool,
    /// `BrokerMigration` on the pool, then a `RunnerJobRequest` from the broker,
    /// `acquirejob`, results-service reporting and `completejob` (github.com today).
    Broker,
}

/// What the signed log URLs claim to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlobStorage {
    /// Azure: uploads must carry `x-ms-blob-type`.
    #[default]
    Azure,
    /// Unspecified: no `x-ms-*` headers needed.
    Unspecified,
}

/// Settings of the fake.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// How long a message poll waits before answering 204. Default: 1 s.
    pub poll_window: Duration,
    /// Lifetime of runner access tokens. Default: 1 h.
    pub token_lifetime: Duration,
    /// Agents get `RequireFipsCryptography = true`: assertions must be PS256. Default: false.
    pub require_fips: bool,
    /// Session keys are wrapped with OAEP-SHA-256 (and `useFipsEncryption: true`) instead
    /// of SHA-1. Default: false.
    pub fips_session_keys: bool,
    /// Lock duration handed out on renewal. Default: 10 min.
    pub lock_duration: Duration,
    /// The registration token `register` must present. Default: `AREGTOKEN`.
    pub registration_token: String,
    /// The removal token. Default: `AREMOVETOKEN`.
    pub removal_token: String,
    /// Storage type of signed log URLs. Default: Azure.
    pub blob_storage: BlobStorage,
    /// Prefix decrypted pool message bodies with a UTF-8 BOM. Default: true.
    pub bom_in_messages: bool,
    /// Write some job-message keys in PascalCase. Default: true.
    pub pascal_case_messages: bool,
    /// The classic plan routes (timeline, logs, events) also take the OAuth token of the
    /// runner a job is assigned to, not only the job's token (github-act-runner completes
    /// a job left over from a crash that way). Off: only job tokens. Default: true.
    pub plan_routes_take_runner_tokens: bool,
    /// Sessions not polled for this long expire (a runner that died without deleting
    /// its session blocks a new one until then). Default: 60 s.
    pub session_timeout: Duration,
    /// Answer `runner-registration` with `use_v2_flow: true`, so runners register through
    /// the runner-admin API and talk to the broker directly. Default: false.
    pub use_v2_flow: bool,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            poll_window: Duration::from_secs(1),
            token_lifetime: Duration::from_secs(3600),
            require_fips: false,
            fips_session_keys: false,
            lock_duration: Duration::from_secs(600),
            registration_token: "AREGTOKEN".into(),
            removal_token: "AREMOVETOKEN".into(),
            blob_storage: BlobStorage::Azure,
            bom_in_messages: true,
            pascal_case_messages: true,
            plan_routes_take_runner_tokens: true,
            session_timeout: Duration::from_secs(60),
            use_v2_flow: false,
        }
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct FakeJob {
    name: String,
    labels: Vec<String>,
    delivery: Delivery,
    steps: Vec<Value>,
    env: Vec<(String, Value)>,
    secrets: Vec<(String, String)>,
    masks: Vec<String>,
    github: Vec<(String, Value)>,
    outputs: Option<Value>,
    container: Option<Value>,
    repository: String,
    sha: String,
    github_token: String,
}

impl FakeJob {
    /// A job named `name` for runners labelled `self-hosted`, with no steps.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            labels: vec!["self-hosted".into()],
            delivery: Delivery::Pool,
            steps: Vec::new(),
            env: Vec::new(),
            secrets: Vec::new(),
            masks: Vec::new(),
            github: Vec::new(),
            outputs: None,
            container: None,
            repository: "octo/demo".into(),
            sha: "0123456789abcdef0123456789abcdef01234567".into(),
            github_token: format!("ghs_{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// The `runs-on` labels (all must be on the runner).
    pub fn labels(mut self, labels: &[&str]) -> Self {
        self.labels = labels.iter().map(|l| (*l).to_owned()).collect();
        self
    }

    /// Classic or broker delivery.
    pub fn delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = delivery;
        self
    }

    fn step_id(&self) -> String {
        uuid::Uuid::new_v4().to_string()
    }

    /// A `run:` step with a literal script.
    pub fn run(self, script: &str) -> Self {
        let inputs = json!({"type": 2, "map": [{"Key": "script", "Value": script}]});
        self.script_step(inputs, None, None)
    }

    /// A `run:` step whose script is an expression (as GitHub sends `run: echo ${{ x }}`:
    /// `format('echo {0}', x)`).
    pub fn run_expr(self, expression: &str) -> Self {
        let inputs = json!({"type": 2, "map": [{"Key": "script", "Value": {"type": 3, "expr": expression}}]});
        self.script_step(inputs, None, None)
    }

    /// A `run:` step with an `id:`, a `name:` and an `if:`.
    pub fn run_named(self, id: &str, name: &str, script: &str, condition: Option<&str>) -> Self {
        let inputs = json!({"type": 2, "map": [{"Key": "script", "Value": script}]});
        let mut step = self.script_step(inputs, Some(id), condition);
        if let Some(last) = step.steps.last_mut() {
            last["displayNameToken"] = json!(name);
        }
        step
    }

    fn script_step(mut self, inputs: Value, id: Option<&str>, condition: Option<&str>) -> Self {
        let n = self.steps.len();
        let name = if n == 0 { "__run".to_owned() } else { format!("__run_{}", n + 1) };
        let step = json!({
            "type": "action", "id": self.step_id(), "name": name, "contextName": id.unwrap_or(&name),
            "reference": {"type": "script"}, "condition": condition.unwrap_or("success()"), "inputs": inputs,
        });
        self.steps.push(step);
        self
    }

    /// Any step, as raw job-message JSON (the `id` is filled in when missing).
    pub fn step(mut self, mut step: Value) -> Self {
        if step.get("id").is_none() {
            step["id"] = json!(self.step_id());
        }
        self.steps.push(step);
        self
    }

    /// A `uses:` step (`actions/checkout` is the only one a run-only runner supports).
    pub fn uses(self, action: &str, git_ref: &str) -> Self {
        let step = json!({"type": "action", "name": "__action", "reference": {"type": "repository", "name": action,
            "ref": git_ref, "repositoryType": "GitHub", "path": ""}, "inputs": {"type": 2, "map": []}, "condition": "success()"});
        self.step(step)
    }

    /// A job-level `env:` entry (value: a plain string or a token JSON).
    pub fn env(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// A secret variable (goes into the `secrets` context and the mask list).
    pub fn secret(mut self, name: &str, value: &str) -> Self {
        self.secrets.push((name.to_owned(), value.to_owned()));
        self
    }

    /// A `mask[]` regular expression.
    pub fn mask_regex(mut self, regex: &str) -> Self {
        self.masks.push(regex.to_owned());
        self
    }

    /// An extra entry of the `github` context.
    pub fn github(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.github.push((key.to_owned(), value.into()));
        self
    }

    /// `jobOutputs` (a mapping token).
    pub fn outputs(mut self, outputs: Value) -> Self {
        self.outputs = Some(outputs);
        self
    }

    /// `jobContainer` (a token).
    pub fn container(mut self, container: Value) -> Self {
        self.container = Some(container);
        self
    }

    /// The `GITHUB_TOKEN` the job carries.
    pub fn github_token(&self) -> &str {
        &self.github_token
    }
}

/// What the fake knows about a job, for assertions.
#[derive(Debug, Clone)]
pub struct JobView {
    /// GitHub's job id.
    pub id: String,
    /// `queued`, `offered`, `assigned` or `completed`.
    pub state: String,
    /// The reported result (`succeeded`, `failed`, `canceled`, …).
    pub result: Option<String>,
    /// Classic: timeline records by id, merged as the service merges them.
    pub records: BTreeMap<String, Value>,
    /// Live feed lines by step record id, in line order (classic: the REST feed; broker:
    /// the `FeedStreamUrl` websocket).
    pub feed: BTreeMap<String, Vec<String>>,
    /// Broker: batches received on the live console websocket.
    pub feed_messages: u32,
    /// Broker: the largest websocket frame payload received (the official runner
    /// fragments at 1024 bytes).
    pub feed_max_frame: usize,
    /// Classic: uploaded logs by path (`logs\<recordId>`).
    pub logs: BTreeMap<String, String>,
    /// Broker: the latest results-service state of each step, by external id.
    pub step_states: BTreeMap<String, Value>,
    /// Broker: step log blobs by step id.
    pub step_logs: BTreeMap<String, String>,
    /// Broker: `line_count` from each step's log metadata.
    pub step_log_lines: BTreeMap<String, i64>,
    /// Broker: the job log blob.
    pub job_log: Option<String>,
    /// The `completejob` body or the `JobCompleted` event.
    pub completion: Option<Value>,
    /// How often the lock was renewed.
    pub renewals: u32,
    /// The job's `GITHUB_TOKEN`.
    pub github_token: String,
}

impl JobView {
    /// Every log text the runner uploaded, joined (both paths).
    pub fn all_logs(&self) -> String {
        let mut out = String::new();
        for text in self.logs.values().chain(self.step_logs.values()).chain(self.job_log.iter()) {
            out.push_str(text);
        }
        for lines in self.feed.values() {
            for line in lines {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// The log of the step whose name is `name` (classic: by record; broker: by step).
    pub fn step_log(&self, name: &str) -> Option<String> {
        let id = self
            .records
            .iter()
            .find(|(_, r)| r.get("name").and_then(Value::as_str) == Some(name))
            .map(|(id, _)| id.clone())
            .or_else(|| {
                self.step_states.iter().find(|(_, s)| s.get("name").and_then(Value::as_str) == Some(name)).map(|(id, _)| id.clone())
            })?;
        self.logs
            .iter()
            .find(|(path, _)| path.ends_with(&id))
            .map(|(_, text)| text.clone())
            .or_else(|| self.step_logs.get(&id).cloned())
    }

    /// Step names with their final result, in order (classic `result` strings, broker
    /// conclusion codes mapped to the same names).
    pub fn step_results(&self) -> Vec<(String, String)> {
        let mut steps: Vec<(i64, String, String)> = Vec::new();
        for r in self.records.values().filter(|r| r.get("type").and_then(Value::as_str) == Some("Task")) {
            steps.push((
                r.get("order").and_then(Value::as_i64).unwrap_or(0),
                r.get("name").and_then(Value::as_str).unwrap_or("").to_owned(),
                r.get("result").and_then(Value::as_str).unwrap_or("").to_owned(),
            ));
        }
        for s in self.step_states.values() {
            let result = match s.get("conclusion").and_then(Value::as_i64) {
                Some(2) => "succeeded",
                Some(3) => "failed",
                Some(4) => "canceled",
                Some(7) => "skipped",
                _ => "",
            };
            steps.push((
                s.get("number").and_then(Value::as_i64).unwrap_or(0),
                s.get("name").and_then(Value::as_str).unwrap_or("").to_owned(),
                result.to_owned(),
            ));
        }
        steps.sort();
        steps.into_iter().map(|(_, n, r)| (n, r)).collect()
    }
}

pub(crate) struct SharedState {
    pub config: FakeConfig,
    pub base: OnceLock<String>,
    /// `ws://127.0.0.1:PORT` of the live console listener.
    pub feed_base: OnceLock<String>,
    /// Bumped to drop every open live console connection.
    pub feed_drops: tokio::sync::watch::Sender<u64>,
    pub data: Mutex<Data>,
    pub notify: Notify,
}

impl SharedState {
    pub fn base(&self) -> String {
        self.base.get().cloned().unwrap_or_default()
    }

    pub fn feed_base(&self) -> String {
        self.feed_base.get().cloned().unwrap_or_default()
    }
}

pub(crate) type Shared = Arc<SharedState>;

/// A running fake GitHub. The server stops when this is dropped.
pub struct FakeGithub {
    state: Shared,
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
    feed_server: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FakeGithub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGithub").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Drop for FakeGithub {
    fn drop(&mut self) {
        self.server.abort();
        self.feed_server.abort();
    }
}

async fn log_request(
    axum::extract::State(s): axum::extract::State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let headers = request.headers().clone();
    let header = |name: axum::http::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let record = RequestRecord {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
        query: request.uri().query().unwrap_or("").to_owned(),
        accept: header(axum::http::header::ACCEPT),
        auth_scheme: Some(header(axum::http::header::AUTHORIZATION))
            .filter(|a| !a.is_empty())
            .map(|a| a.split(' ').next().unwrap_or("").to_owned()),
    };
    s.data.lock().await.requests.push(record);
    next.run(request).await
}

fn router(state: Shared) -> Router {
    const PLAN: &str = "/tenant/{scope}/_apis/distributedtask/hubs/{hub}/plans/{plan}";
    Router::new()
        .route("/api/v3/actions/runner-registration", post(api::runner_registration))
        .route("/{user_keys}", get(api::user_keys))
        .route("/tenant/_apis/connectionData", get(api::connection_data))
        .route("/tenant/_apis/distributedtask/pools", get(api::pools))
        .route("/tenant/_apis/distributedtask/pools/{pool}/agents", get(api::list_agents).post(api::add_agent))
        .route("/tenant/_apis/distributedtask/pools/{pool}/agents/{id}", put(api::replace_agent).delete(api::delete_agent))
        .route("/token/{client}", post(api::token))
        .route("/tenant/_apis/distributedtask/pools/{pool}/sessions", post(api::create_session))
        .route("/tenant/_apis/distributedtask/pools/{pool}/sessions/{id}", delete(api::delete_session))
        .route("/tenant/_apis/distributedtask/pools/{pool}/messages", get(api::get_message))
        .route("/tenant/_apis/distributedtask/pools/{pool}/messages/{id}", delete(api::delete_message))
        .route("/tenant/_apis/distributedtask/pools/{pool}/jobrequests/{id}", patch(api::job_request))
        .route("/api/v3/actions/runners/register", post(api::admin_register))
        .route("/api/v3/repos/{owner}/{repo}/actions/runner-groups", get(api::admin_groups))
        .route("/api/v3/orgs/{org}/actions/runner-groups", get(api::admin_groups))
        .route("/api/v3/repos/{owner}/{repo}/actions/runners", get(api::admin_runners))
        .route("/api/v3/orgs/{org}/actions/runners", get(api::admin_runners))
        .route("/api/v3/repos/{owner}/{repo}/actions/runners/{id}", delete(api::admin_delete_repo))
        .route("/api/v3/orgs/{org}/actions/runners/{id}", delete(api::admin_delete_org))
        .route("/broker/session", post(api::broker_session).delete(api::delete_broker_session))
        .route("/broker/message", get(jobs::broker_message))
        .route("/broker/acknowledge", post(jobs::acknowledge))
        .route("/run/acquirejob", post(jobs::acquire))
        .route("/run/renewjob", post(jobs::renew))
        .route("/run/completejob", post(jobs::complete))
        .route("/results/twirp/{*method}", post(jobs::twirp))
        .route("/blob/{job}/{name}", put(jobs::put_blob))
        .route(&format!("{PLAN}/timelines/{{tid}}/records"), patch(jobs::records))
        .route(&format!("{PLAN}/timelines/{{tid}}/records/{{record}}/feed"), post(jobs::feed))
        .route(&format!("{PLAN}/logs"), post(jobs::create_log))
        .route(&format!("{PLAN}/logs/{{id}}"), post(jobs::upload_log))
        .route(&format!("{PLAN}/events"), post(jobs::events))
        .layer(axum::middleware::from_fn_with_state(state.clone(), log_request))
        .with_state(state)
}

impl FakeGithub {
    /// Starts the fake on `127.0.0.1` with a free port.
    ///
    /// # Errors
    /// The I/O error if no port can be bound.
    pub async fn start(config: FakeConfig) -> std::io::Result<FakeGithub> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        // The live console websocket listens on a port of its own (its URL is handed
        // out absolute, as `FeedStreamUrl`).
        let feed_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let feed_addr = feed_listener.local_addr()?;
        let state = Arc::new(SharedState {
            config,
            base: OnceLock::new(),
            feed_base: OnceLock::new(),
            feed_drops: tokio::sync::watch::Sender::new(0),
            data: Mutex::new(Data::default()),
            notify: Notify::new(),
        });
        let _ = state.base.set(format!("http://{addr}"));
        let _ = state.feed_base.set(format!("ws://{feed_addr}"));
        let app = router(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let feed_server = tokio::spawn(feed::serve(feed_listener, state.clone()));
        Ok(FakeGithub { state, addr, server, feed_server })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.state.base()
    }

    /// The URL a runner is registered for: `http://127.0.0.1:PORT/octo/demo`.
    pub fn repo_url(&self) -> String {
        format!("{}/octo/demo", self.url())
    }

    /// The settings.
    pub fn config(&self) -> &FakeConfig {
        &self.state.config
    }

    /// Queues a job; returns GitHub's job id.
    pub async fn enqueue(&self, job: FakeJob) -> String {
        let mut data = self.state.data.lock().await;
        let request_id = data.next();
        let job = Job::new(job, request_id);
        let id = job.id.clone();
        data.job_order.push(id.clone());
        data.jobs.insert(id.clone(), job);
        drop(data);
        self.state.notify.notify_waiters();
        id
    }

    /// Asks every registered runner to shut down, with a `RunnerShutdown` pool message
    /// (`{"reason": …}`), as GitHub does for hosted runners. The official runner exits
    /// without deleting that message or its session.
    pub async fn request_runner_shutdown(&self, reason: &str) {
        let mut data = self.state.data.lock().await;
        let agents: Vec<i64> = data.agents.keys().copied().collect();
        for agent in agents {
            let id = data.next();
            let body = json!({ "reason": reason }).to_string();
            let message = PoolMessage { id, message_type: "RunnerShutdown".to_owned(), body, job: None };
            data.pool_messages.entry(agent).or_default().push(message);
        }
        drop(data);
        self.state.notify.notify_waiters();
    }

    /// Requests cancellation of a job (delivered as `JobCancellation`).
    pub async fn cancel(&self, job: &str) {
        let mut data = self.state.data.lock().await;
        if let Some(j) = data.jobs.get_mut(job) {
            j.cancel_requested = true;
        }
        drop(data);
        self.state.notify.notify_waiters();
    }

    /// Publishes `keys` (OpenSSH public key lines) as `user`'s keys at `/USER.keys`, as
    /// github.com does; replaces what was registered for `user` before. An empty list
    /// is a user without keys; a user never registered gets 404.
    pub async fn set_user_keys(&self, user: &str, keys: &[&str]) {
        let keys = keys.iter().map(|k| (*k).to_owned()).collect();
        self.state.data.lock().await.user_keys.insert(user.to_owned(), keys);
    }

    /// Invalidates every runner access token (the next call gets 401).
    pub async fn expire_tokens(&self) {
        self.state.data.lock().await.access_tokens.clear();
    }

    /// How many access tokens the token service issued.
    pub async fn tokens_issued(&self) -> u32 {
        self.state.data.lock().await.tokens_issued
    }

    /// Makes the next `n` message polls (pool or broker) fail with 502, as a proxy
    /// dropping the long-poll would.
    pub async fn fail_polls(&self, n: u32) {
        self.state.data.lock().await.faults.fail_polls = n;
    }

    /// Makes the next `n` live console websocket handshakes answer 503.
    pub async fn refuse_feed(&self, n: u32) {
        self.state.data.lock().await.faults.refuse_feed = n;
    }

    /// Drops every open live console websocket connection (without a close frame, as a
    /// proxy cutting it would).
    pub fn drop_feed_connections(&self) {
        self.state.feed_drops.send_modify(|n| *n += 1);
    }

    /// How many live console websocket handshakes (with a valid job token) arrived.
    pub async fn feed_handshakes(&self) -> u32 {
        self.state.data.lock().await.faults.feed_handshakes
    }

    /// Makes the next `n` session creations answer 409.
    pub async fn session_conflicts(&self, n: u32) {
        self.state.data.lock().await.faults.session_conflicts = n;
    }

    /// Drops every session (the next poll gets `TaskAgentSessionExpiredException`).
    pub async fn expire_sessions(&self) {
        self.state.data.lock().await.sessions.clear();
        self.state.notify.notify_waiters();
    }

    /// The number of live sessions.
    pub async fn session_count(&self) -> usize {
        self.state.data.lock().await.sessions.len()
    }

    /// The registered runners' names and labels.
    pub async fn agents(&self) -> Vec<(String, Vec<String>)> {
        self.state.data.lock().await.agents.values().map(|a| (a.name.clone(), a.labels.clone())).collect()
    }

    /// Every bearer token the fake handed out (tenant, runner and job tokens), for leak
    /// checks.
    pub async fn issued_tokens(&self) -> Vec<String> {
        let data = self.state.data.lock().await;
        let mut out: Vec<String> = data.tenant_tokens.iter().cloned().collect();
        out.extend(data.issued.iter().cloned());
        out.extend(data.jobs.values().map(|j| j.token.clone()));
        out
    }

    /// Every request received so far.
    pub async fn requests(&self) -> Vec<RequestRecord> {
        self.state.data.lock().await.requests.clone()
    }

    /// A snapshot of a job.
    pub async fn job(&self, id: &str) -> Option<JobView> {
        self.state.data.lock().await.jobs.get(id).map(view)
    }

    /// Waits until the job is completed, or `limit` passed; returns its last state.
    pub async fn wait_completed(&self, id: &str, limit: Duration) -> Option<JobView> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.state.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let data = self.state.data.lock().await;
                let job = data.jobs.get(id).map(view);
                if job.as_ref().is_none_or(|j| j.state == "completed") || tokio::time::Instant::now() >= deadline {
                    return job;
                }
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    /// Waits until `check` holds for the job, or `limit` passed.
    pub async fn wait_for(&self, id: &str, limit: Duration, check: impl Fn(&JobView) -> bool) -> Option<JobView> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let job = { self.state.data.lock().await.jobs.get(id).map(view) };
            if job.as_ref().is_some_and(&check) || tokio::time::Instant::now() >= deadline {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn view(job: &Job) -> JobView {
    JobView {
        id: job.id.clone(),
        state: match job.state {
            JobState::Queued => "queued",
            JobState::Offered(_) => "offered",
            JobState::Assigned(_) => "assigned",
            JobState::Completed => "completed",
        }
        .to_owned(),
        result: job.result.clone(),
        records: job.records.clone(),
        feed: job.feed.iter().map(|(k, v)| (k.clone(), v.values().cloned().collect())).collect(),
        feed_messages: job.feed_messages,
        feed_max_frame: job.feed_max_frame,
        logs: job.logs.values().map(|(p, t)| (p.clone(), t.clone())).collect(),
        step_states: job.results_steps.iter().map(|(k, (_, v))| (k.clone(), v.clone())).collect(),
        step_logs: job.blobs.clone(),
        step_log_lines: job.step_log_lines.clone(),
        job_log: job.job_log.clone(),
        completion: job.completion.clone(),
        renewals: job.renewals,
        github_token: job.spec.github_token.clone(),
    }
}
