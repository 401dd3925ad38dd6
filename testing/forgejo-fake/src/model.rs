//! The fake's server-side model: registration tokens, runners, jobs, tasks, tasks
//! versions, logs. Plain synchronous data; the HTTP layer locks it per request.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde_json::Value;
use solstice_forgejo::proto::runner::v1 as pb;
use time::OffsetDateTime;

use crate::log::LogStore;

/// Who a registration token, a runner or a tasks-version counter belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The whole instance.
    Instance,
    /// A user or organization.
    Owner(String),
    /// One repository, `owner/name`.
    Repo(String),
}

impl Scope {
    /// Whether a job of `repository` (`owner/name`) is in this scope.
    pub fn covers(&self, repository: &str) -> bool {
        match self {
            Self::Instance => true,
            Self::Owner(owner) => repository.split('/').next() == Some(owner.as_str()),
            Self::Repo(repo) => repo == repository,
        }
    }
}

/// Status of a job or task, numbered like Forgejo's (0..4 are the wire results).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not known.
    Unknown,
    /// Finished successfully.
    Success,
    /// Failed.
    Failure,
    /// Cancelled.
    Cancelled,
    /// Skipped.
    Skipped,
    /// Ready for a runner.
    Waiting,
    /// Assigned to a runner.
    Running,
    /// Waiting for its needs.
    Blocked,
}

impl Status {
    /// Whether the status is final.
    pub fn is_done(self) -> bool {
        matches!(self, Self::Success | Self::Failure | Self::Cancelled | Self::Skipped)
    }

    pub(crate) fn from_wire(result: i32) -> Self {
        match pb::Result::try_from(result) {
            Ok(pb::Result::Success) => Self::Success,
            Ok(pb::Result::Failure) => Self::Failure,
            Ok(pb::Result::Cancelled) => Self::Cancelled,
            Ok(pb::Result::Skipped) => Self::Skipped,
            _ => Self::Unknown,
        }
    }

    pub(crate) fn wire(self) -> pb::Result {
        match self {
            Self::Success => pb::Result::Success,
            Self::Failure => pb::Result::Failure,
            Self::Cancelled => pb::Result::Cancelled,
            Self::Skipped => pb::Result::Skipped,
            _ => pb::Result::Unspecified,
        }
    }
}

/// A job to enqueue: one single-job workflow payload as Forgejo stores it per job (and
/// per matrix combination), with the run it belongs to.
#[derive(Debug, Clone)]
#[must_use]
pub struct JobSpec {
    pub(crate) job_id: String,
    pub(crate) payload: String,
    pub(crate) runs_on: Vec<String>,
    pub(crate) needs: Vec<String>,
    pub(crate) run_id: i64,
    pub(crate) repository: String,
    pub(crate) sha: String,
    pub(crate) git_ref: String,
    pub(crate) event_name: String,
    pub(crate) event: Value,
    pub(crate) workflow: String,
    pub(crate) secrets: BTreeMap<String, String>,
    pub(crate) vars: BTreeMap<String, String>,
    pub(crate) priority: i64,
    pub(crate) actor: String,
}

impl JobSpec {
    /// A job `job_id` (its YAML key) with a single-job workflow `payload`, run on
    /// `host` in run 1 of `owner/repo`. `runs-on` must be given as Forgejo evaluates it.
    pub fn new(job_id: &str, payload: &str) -> Self {
        Self {
            job_id: job_id.to_owned(),
            payload: payload.to_owned(),
            runs_on: vec!["host".to_owned()],
            needs: Vec::new(),
            run_id: 1,
            repository: "owner/repo".to_owned(),
            sha: "0123456789abcdef0123456789abcdef01234567".to_owned(),
            git_ref: "refs/heads/main".to_owned(),
            event_name: "push".to_owned(),
            event: serde_json::json!({}),
            workflow: "ci.yml".to_owned(),
            secrets: BTreeMap::new(),
            vars: BTreeMap::new(),
            priority: 0,
            actor: "tester".to_owned(),
        }
    }

    /// The evaluated `runs-on` labels. Default: `["host"]`.
    pub fn runs_on<I: IntoIterator<Item = S>, S: Into<String>>(mut self, labels: I) -> Self {
        self.runs_on = labels.into_iter().map(Into::into).collect();
        self
    }

    /// Job ids of the same run this job needs. Default: none.
    pub fn needs<I: IntoIterator<Item = S>, S: Into<String>>(mut self, needs: I) -> Self {
        self.needs = needs.into_iter().map(Into::into).collect();
        self
    }

    /// The run id. Default: 1.
    pub fn run(mut self, run_id: i64) -> Self {
        self.run_id = run_id;
        self
    }

    /// The repository, `owner/name`. Default: `owner/repo`.
    pub fn repository(mut self, repository: &str) -> Self {
        self.repository = repository.to_owned();
        self
    }

    /// A secret of the run. `GITHUB_TOKEN`, `GITEA_TOKEN` and `FORGEJO_TOKEN` are
    /// always added.
    pub fn secret(mut self, name: &str, value: &str) -> Self {
        self.secrets.insert(name.to_owned(), value.to_owned());
        self
    }

    /// A configuration variable.
    pub fn var(mut self, name: &str, value: &str) -> Self {
        self.vars.insert(name.to_owned(), value.to_owned());
        self
    }

    /// The trigger: event name and webhook payload. Default: `push`, `{}`.
    pub fn event(mut self, name: &str, payload: Value) -> Self {
        self.event_name = name.to_owned();
        self.event = payload;
        self
    }

    /// The user who started the run (`github.actor`). Default: `tester`.
    pub fn actor(mut self, user: &str) -> Self {
        self.actor = user.to_owned();
        self
    }

    /// Run priority (higher first). Default: 0.
    pub fn priority(mut self, priority: i64) -> Self {
        self.priority = priority;
        self
    }
}

#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) spec: JobSpec,
    pub(crate) status: Status,
    pub(crate) handle: String,
    pub(crate) attempt: i64,
    pub(crate) task_id: i64,
    pub(crate) updated: OffsetDateTime,
    pub(crate) step_names: Vec<String>,
    pub(crate) outputs: BTreeMap<String, String>,
}

#[derive(Debug)]
pub(crate) struct Runner {
    pub(crate) id: i64,
    pub(crate) uuid: String,
    pub(crate) token: String,
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) labels: Vec<String>,
    pub(crate) ephemeral: bool,
    pub(crate) scope: Scope,
    pub(crate) last_online: Option<OffsetDateTime>,
    pub(crate) last_active: Option<OffsetDateTime>,
    pub(crate) had_task: bool,
}

impl Runner {
    pub(crate) fn message(&self, with_token: bool) -> pb::Runner {
        pb::Runner {
            id: self.id,
            uuid: self.uuid.clone(),
            token: if with_token { self.token.clone() } else { String::new() },
            name: self.name.clone(),
            version: self.version.clone(),
            labels: self.labels.clone(),
            ephemeral: self.ephemeral,
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Step {
    pub(crate) name: String,
    pub(crate) status: Option<Status>,
    pub(crate) log_index: i64,
    pub(crate) log_length: i64,
    pub(crate) started: i64,
    pub(crate) stopped: i64,
}

#[derive(Debug)]
pub(crate) struct Task {
    pub(crate) id: i64,
    pub(crate) job: usize,
    pub(crate) runner: String,
    pub(crate) status: Status,
    pub(crate) token: String,
    pub(crate) runtime_token: String,
    pub(crate) started: OffsetDateTime,
    pub(crate) stopped: Option<i64>,
    pub(crate) updated: OffsetDateTime,
    pub(crate) steps: Vec<Step>,
    pub(crate) log: LogStore,
    pub(crate) archived: bool,
    pub(crate) outputs: BTreeMap<String, String>,
    /// `Some(true)` when the log was closed (`no_more`) before the final `UpdateTask`.
    pub(crate) log_closed_first: Option<bool>,
}

/// Settings fixed when the fake starts.
#[derive(Debug, Clone, Default)]
pub(crate) struct Options {
    pub(crate) legacy: bool,
    pub(crate) unknown_task_not_found: bool,
    pub(crate) log_dir: Option<PathBuf>,
    pub(crate) record_bodies: bool,
    pub(crate) first_task_id: i64,
}

/// Everything the fake knows.
#[derive(Debug)]
pub(crate) struct Model {
    pub(crate) options: Options,
    pub(crate) base_url: String,
    pub(crate) registration_tokens: Vec<(String, Scope, bool)>,
    pub(crate) runners: HashMap<String, Runner>,
    pub(crate) next_runner_id: i64,
    pub(crate) jobs: Vec<Job>,
    pub(crate) tasks: BTreeMap<i64, Task>,
    pub(crate) next_task_id: i64,
    pub(crate) versions: HashMap<Scope, i64>,
    pub(crate) request_keys: HashMap<(String, String), Vec<i64>>,
}

/// 40 lowercase hex characters, like Forgejo's tokens.
pub(crate) fn random_hex40() -> String {
    let mut hex = uuid::Uuid::new_v4().simple().to_string();
    hex.push_str(&uuid::Uuid::new_v4().simple().to_string()[..8]);
    hex
}

impl Model {
    pub(crate) fn new(options: Options, base_url: String) -> Self {
        let next_task_id = options.first_task_id.max(1);
        Self {
            options,
            base_url,
            registration_tokens: Vec::new(),
            runners: HashMap::new(),
            next_runner_id: 1,
            jobs: Vec::new(),
            tasks: BTreeMap::new(),
            next_task_id,
            versions: HashMap::new(),
            request_keys: HashMap::new(),
        }
    }

    /// Bumps every tasks-version counter that covers `repository`.
    pub(crate) fn bump_versions(&mut self, repository: &str) {
        let owner = repository.split('/').next().unwrap_or("").to_owned();
        for scope in [Scope::Instance, Scope::Owner(owner), Scope::Repo(repository.to_owned())] {
            *self.versions.entry(scope).or_insert(0) += 1;
        }
    }

    /// The current tasks version of a scope, created at 1 if missing (0 is never used).
    pub(crate) fn latest_version(&mut self, scope: &Scope) -> i64 {
        let v = self.versions.entry(scope.clone()).or_insert(1);
        if *v == 0 {
            *v = 1;
        }
        *v
    }

    pub(crate) fn enqueue(&mut self, spec: JobSpec, now: OffsetDateTime) -> usize {
        let step_names = solstice_workflow::parse_workflow(&spec.payload, "payload")
            .ok()
            .and_then(|w| w.jobs.into_iter().next())
            .map(|job| {
                job.steps
                    .iter()
                    .map(|s| {
                        s.name.clone().or_else(|| s.uses.clone()).unwrap_or_else(|| {
                            format!("Run {}", s.run.as_deref().unwrap_or("").lines().next().unwrap_or(""))
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let blocked = !spec.needs.is_empty();
        let repository = spec.repository.clone();
        self.jobs.push(Job {
            spec,
            status: if blocked { Status::Blocked } else { Status::Waiting },
            handle: uuid::Uuid::new_v4().to_string(),
            attempt: 1,
            task_id: 0,
            updated: now,
            step_names,
            outputs: BTreeMap::new(),
        });
        self.release_blocked(now);
        if !blocked {
            self.bump_versions(&repository);
        }
        self.jobs.len() - 1
    }

    /// Blocked jobs whose needs are all done become waiting.
    pub(crate) fn release_blocked(&mut self, now: OffsetDateTime) {
        let mut released = Vec::new();
        for i in 0..self.jobs.len() {
            let job = &self.jobs[i];
            if job.status != Status::Blocked {
                continue;
            }
            let ready = job.spec.needs.iter().all(|need| {
                let siblings: Vec<_> =
                    self.jobs.iter().filter(|j| j.spec.run_id == job.spec.run_id && &j.spec.job_id == need).collect();
                !siblings.is_empty() && siblings.iter().all(|j| j.status.is_done())
            });
            if ready {
                released.push(i);
            }
        }
        for i in released {
            self.jobs[i].status = Status::Waiting;
            self.jobs[i].updated = now;
            let repository = self.jobs[i].spec.repository.clone();
            self.bump_versions(&repository);
        }
    }

    /// `needs` of a job: aggregate result and merged outputs of each needed job id.
    pub(crate) fn needs_of(&self, job: &Job) -> HashMap<String, pb::TaskNeed> {
        job.spec
            .needs
            .iter()
            .map(|need| {
                let siblings: Vec<_> =
                    self.jobs.iter().filter(|j| j.spec.run_id == job.spec.run_id && &j.spec.job_id == need).collect();
                let result = if siblings.iter().any(|j| j.status == Status::Failure) {
                    Status::Failure
                } else if siblings.iter().any(|j| j.status == Status::Cancelled) {
                    Status::Cancelled
                } else if siblings.iter().all(|j| j.status == Status::Skipped) {
                    Status::Skipped
                } else {
                    Status::Success
                };
                let mut outputs = HashMap::new();
                for sibling in &siblings {
                    for (k, v) in &sibling.outputs {
                        if !v.is_empty() || !outputs.contains_key(k) {
                            outputs.insert(k.clone(), v.clone());
                        }
                    }
                }
                (need.clone(), pb::TaskNeed { outputs, result: result.wire() as i32 })
            })
            .collect()
    }

    /// Ends a task (and its job) with `status`, closing unfinished steps.
    pub(crate) fn finish_task(&mut self, task_id: i64, status: Status, stopped: i64, archive: bool, now: OffsetDateTime) {
        let Some(task) = self.tasks.get_mut(&task_id) else { return };
        if task.status.is_done() {
            return;
        }
        task.status = status;
        task.stopped = Some(stopped);
        for step in &mut task.steps {
            if !step.status.is_some_and(Status::is_done) {
                step.status = Some(status);
            }
        }
        if archive {
            task.archived = true;
            task.log.archive();
        }
        let (job_index, runner) = (task.job, task.runner.clone());
        let outputs = task.outputs.clone();
        if let Some(job) = self.jobs.get_mut(job_index) {
            job.status = status;
            job.updated = now;
            job.outputs = outputs;
        }
        if self.runners.get(&runner).is_some_and(|r| r.ephemeral) {
            self.runners.remove(&runner);
        }
        self.release_blocked(now);
    }

    pub(crate) fn new_log(&self, task_id: i64) -> LogStore {
        match &self.options.log_dir {
            Some(dir) => LogStore::file(dir.join(format!("task-{task_id}.log"))).unwrap_or_else(|_| LogStore::memory()),
            None => LogStore::memory(),
        }
    }
}
