//! The RPCs, as Forgejo answers them.

use std::collections::HashMap;

use serde_json::{Value, json};
use solstice_forgejo::ConnectCode;
use solstice_forgejo::proto::json_to_struct;
use solstice_forgejo::proto::runner::v1 as pb;
use time::OffsetDateTime;

use crate::model::{Model, Status, Step, Task, random_hex40};

/// A Connect error to answer with.
pub(crate) type Failure = (ConnectCode, String);

fn fail(code: ConnectCode, message: &str) -> Failure {
    (code, message.to_owned())
}

/// Which runner made an authenticated call.
pub(crate) type RunnerId = String;

impl Model {
    pub(crate) fn authenticate(
        &mut self,
        uuid: Option<&str>,
        token: Option<&str>,
        active: bool,
        now: OffsetDateTime,
    ) -> Result<RunnerId, Failure> {
        let unregistered = || fail(ConnectCode::Unauthenticated, "unregistered runner");
        let runner = uuid.and_then(|u| self.runners.get_mut(u)).ok_or_else(unregistered)?;
        if token != Some(runner.token.as_str()) {
            return Err(unregistered());
        }
        runner.last_online = Some(now);
        if active {
            runner.last_active = Some(now);
        }
        Ok(runner.uuid.clone())
    }

    pub(crate) fn register(&mut self, req: pb::RegisterRequest) -> Result<pb::RegisterResponse, Failure> {
        if req.token.is_empty() || req.name.is_empty() {
            return Err(fail(ConnectCode::InvalidArgument, "missing runner token, name"));
        }
        let Some((_, scope, active)) = self.registration_tokens.iter().find(|(t, _, _)| *t == req.token) else {
            return Err(fail(ConnectCode::InvalidArgument, "runner registration token not found"));
        };
        if !active {
            return Err(fail(
                ConnectCode::InvalidArgument,
                "runner registration token has been invalidated, please use the latest one",
            ));
        }
        let mut name = req.name;
        while name.len() > 255 {
            name.pop();
        }
        let runner = crate::model::Runner {
            id: self.next_runner_id,
            uuid: uuid::Uuid::new_v4().to_string(),
            token: random_hex40(),
            name,
            version: req.version,
            labels: req.labels,
            ephemeral: req.ephemeral,
            scope: scope.clone(),
            last_online: None,
            last_active: None,
            had_task: false,
        };
        self.next_runner_id += 1;
        let message = runner.message(true);
        self.runners.insert(runner.uuid.clone(), runner);
        Ok(pb::RegisterResponse { runner: Some(message) })
    }

    pub(crate) fn declare(&mut self, runner: &str, req: pb::DeclareRequest) -> Result<pb::DeclareResponse, Failure> {
        let runner = self.runners.get_mut(runner).ok_or_else(|| fail(ConnectCode::Unauthenticated, "unregistered runner"))?;
        runner.labels = req.labels;
        runner.version = req.version;
        Ok(pb::DeclareResponse { runner: Some(runner.message(false)) })
    }

    pub(crate) fn fetch_task(
        &mut self,
        runner: &str,
        req: pb::FetchTaskRequest,
        request_key: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<pb::FetchTaskResponse, Failure> {
        if let Some(mut tasks) = self.recover(runner, request_key) {
            let first = if tasks.is_empty() { None } else { Some(tasks.remove(0)) };
            return Ok(pb::FetchTaskResponse { task: first, tasks_version: 0, additional_tasks: tasks });
        }
        let scope = self.runners.get(runner).map(|r| r.scope.clone()).ok_or_else(|| fail(ConnectCode::Unauthenticated, "unregistered runner"))?;
        let latest = self.latest_version(&scope);
        if req.tasks_version == latest {
            return Ok(pb::FetchTaskResponse { task: None, tasks_version: latest, additional_tasks: vec![] });
        }
        let capacity = req.task_capacity.unwrap_or(1).max(1);
        let mut tasks = Vec::new();
        while (tasks.len() as i64) < capacity {
            match self.assign(runner, None, request_key, now) {
                Some(task) => tasks.push(task),
                None => break,
            }
        }
        let first = if tasks.is_empty() { None } else { Some(tasks.remove(0)) };
        Ok(pb::FetchTaskResponse { task: first, tasks_version: latest, additional_tasks: tasks })
    }

    pub(crate) fn fetch_single_task(
        &mut self,
        runner: &str,
        req: pb::FetchSingleTaskRequest,
        request_key: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<pb::FetchSingleTaskResponse, Failure> {
        if let Some(tasks) = self.recover(runner, request_key) {
            if tasks.len() > 1 {
                return Err(fail(ConnectCode::Internal, "more than one task recovered for a single-task fetch"));
            }
            return Ok(pb::FetchSingleTaskResponse { tasks_version: 0, task: tasks.into_iter().next() });
        }
        let scope = self.runners.get(runner).map(|r| r.scope.clone()).ok_or_else(|| fail(ConnectCode::Unauthenticated, "unregistered runner"))?;
        let latest = self.latest_version(&scope);
        let handle = req.handle.filter(|h| !h.is_empty());
        let task = self.assign(runner, handle.as_deref(), request_key, now);
        Ok(pb::FetchSingleTaskResponse { tasks_version: latest, task })
    }

    /// Tasks already handed out for this request key, with fresh tokens.
    fn recover(&mut self, runner: &str, request_key: Option<&str>) -> Option<Vec<pb::Task>> {
        let key = request_key.filter(|k| !k.is_empty())?;
        let ids = self.request_keys.get(&(runner.to_owned(), key.to_owned()))?.clone();
        let mut tasks = Vec::new();
        for id in ids {
            if let Some(task) = self.tasks.get_mut(&id) {
                task.token = random_hex40();
            }
            if let Some(message) = self.task_message(id) {
                tasks.push(message);
            }
        }
        Some(tasks)
    }

    /// Assigns the first suitable waiting job to `runner`, if any.
    fn assign(&mut self, runner_uuid: &str, handle: Option<&str>, request_key: Option<&str>, now: OffsetDateTime) -> Option<pb::Task> {
        let runner = self.runners.get(runner_uuid)?;
        if runner.ephemeral && runner.had_task {
            return None;
        }
        let mut candidates: Vec<usize> = (0..self.jobs.len())
            .filter(|&i| {
                let job = &self.jobs[i];
                job.status == Status::Waiting
                    && job.task_id == 0
                    && runner.scope.covers(&job.spec.repository)
                    && handle.is_none_or(|h| h == job.handle)
                    && !job.spec.runs_on.is_empty()
                    && !runner.labels.is_empty()
                    && job.spec.runs_on.iter().all(|l| runner.labels.contains(l))
            })
            .collect();
        candidates.sort_by_key(|&i| (-self.jobs[i].spec.priority, self.jobs[i].updated, i));
        let index = *candidates.first()?;
        let task_id = self.next_task_id;
        self.next_task_id += 1;
        let job = &mut self.jobs[index];
        job.status = Status::Running;
        job.task_id = task_id;
        job.updated = now;
        let steps = job.step_names.iter().map(|name| Step { name: name.clone(), ..Default::default() }).collect();
        let log = self.new_log(task_id);
        self.tasks.insert(
            task_id,
            Task {
                id: task_id,
                job: index,
                runner: runner_uuid.to_owned(),
                status: Status::Running,
                token: random_hex40(),
                runtime_token: format!("runtime-{}", random_hex40()),
                started: now,
                stopped: None,
                updated: now,
                steps,
                log,
                archived: false,
                outputs: Default::default(),
                log_closed_first: None,
            },
        );
        if let Some(runner) = self.runners.get_mut(runner_uuid) {
            runner.had_task = true;
        }
        if let Some(key) = request_key.filter(|k| !k.is_empty()) {
            self.request_keys.entry((runner_uuid.to_owned(), key.to_owned())).or_default().push(task_id);
        }
        self.task_message(task_id)
    }

    /// The `Task` message for a stored task.
    pub(crate) fn task_message(&self, task_id: i64) -> Option<pb::Task> {
        let task = self.tasks.get(&task_id)?;
        let job = self.jobs.get(task.job)?;
        let spec = &job.spec;
        let server_url = format!("{}/", self.base_url);
        let (owner, _) = spec.repository.split_once('/').unwrap_or((&spec.repository, ""));
        let ref_name = spec.git_ref.rsplit('/').next().unwrap_or("");
        let ref_type = if spec.git_ref.starts_with("refs/tags/") { "tag" } else { "branch" };
        let mut context = json!({
            "event": spec.event,
            "event_name": spec.event_name,
            "actor": spec.actor, "actor_id": "1",
            "repository": spec.repository,
            "repository_owner": owner, "repository_owner_id": "1", "repository_id": "1",
            "repositoryUrl": format!("{server_url}{}", spec.repository),
            "sha": spec.sha,
            "ref": spec.git_ref, "ref_name": ref_name, "ref_type": ref_type, "ref_protected": false,
            "head_ref": "", "base_ref": "",
            "workflow": spec.workflow,
            "workflow_ref": format!("{}/.forgejo/workflows/{}@{}", spec.repository, spec.workflow, spec.git_ref),
            "job": spec.job_id,
            "run_id": spec.run_id.to_string(), "run_number": spec.run_id.to_string(), "run_attempt": job.attempt.to_string(),
            "server_url": server_url,
            "api_url": format!("{server_url}api/v1"),
            "secret_source": "Actions",
            "token": task.token,
            "gitea_runtime_token": task.runtime_token,
            "gitea_default_actions_url": "https://data.forgejo.org",
            "forgejo_server_version": "fake-15.0.0",
        });
        if let Value::Object(map) = &mut context {
            for key in ["event_path", "graphql_url", "workspace", "action", "action_path", "action_ref", "action_repository",
                "action_status", "env", "path", "triggering_actor", "retention_days", "runner_perflog", "runner_tracking_id", "job_name"] {
                map.insert(key.to_owned(), json!(""));
            }
        }
        let Value::Object(context) = context else { return None };
        let mut secrets: HashMap<String, String> = spec.secrets.clone().into_iter().collect();
        for name in ["GITHUB_TOKEN", "GITEA_TOKEN", "FORGEJO_TOKEN"] {
            secrets.insert(name.to_owned(), task.token.clone());
        }
        Some(pb::Task {
            id: task.id,
            workflow_payload: Some(spec.payload.as_bytes().to_vec()),
            context: Some(json_to_struct(&context)),
            secrets,
            machine: String::new(),
            needs: self.needs_of(job),
            vars: spec.vars.clone().into_iter().collect(),
        })
    }

    fn own_task(&self, runner: &str, task_id: i64, what: &str) -> Result<(), Failure> {
        match self.tasks.get(&task_id) {
            None if self.options.unknown_task_not_found => Err(fail(ConnectCode::NotFound, "task does not exist")),
            None => Err((ConnectCode::Internal, format!("{what}: task with id {task_id} does not exist"))),
            Some(task) if task.runner != runner => Err((ConnectCode::Internal, format!("{what}: invalid runner for task"))),
            Some(_) => Ok(()),
        }
    }

    pub(crate) fn update_task(&mut self, runner: &str, req: pb::UpdateTaskRequest, now: OffsetDateTime) -> Result<pb::UpdateTaskResponse, Failure> {
        let state = req.state.unwrap_or_default();
        self.own_task(runner, state.id, "update task")?;
        let mut finished = None;
        if let Some(task) = self.tasks.get_mut(&state.id)
            && !task.status.is_done()
        {
            for (index, step) in task.steps.iter_mut().enumerate() {
                let Some(s) = state.steps.iter().find(|s| s.id == index as i64) else { continue };
                step.log_index = s.log_index;
                step.log_length = s.log_length;
                step.started = s.started_at.map(|t| t.seconds).unwrap_or(0);
                step.stopped = s.stopped_at.map(|t| t.seconds).unwrap_or(0);
                let status = Status::from_wire(s.result);
                if status.is_done() {
                    step.status = Some(status);
                } else if step.started != 0 {
                    step.status = Some(Status::Running);
                }
            }
            let result = Status::from_wire(state.result);
            if result.is_done() {
                if task.log_closed_first.is_none() {
                    task.log_closed_first = Some(task.archived);
                }
                finished = Some((result, state.stopped_at.map(|t| t.seconds).unwrap_or(now.unix_timestamp())));
            } else {
                task.updated = now;
            }
        }
        let task = self.tasks.get_mut(&state.id).ok_or_else(|| fail(ConnectCode::Internal, "task vanished"))?;
        for (key, value) in req.outputs {
            if key.len() <= 255 && value.len() <= 1024 * 1024 && !task.outputs.contains_key(&key) {
                task.outputs.insert(key, value);
            }
        }
        let sent_outputs = task.outputs.keys().cloned().collect();
        if let Some((result, stopped)) = finished {
            self.finish_task(state.id, result, stopped, false, now);
        }
        let task = self.tasks.get(&state.id).ok_or_else(|| fail(ConnectCode::Internal, "task vanished"))?;
        let result = if task.status.is_done() { task.status.wire() } else { pb::Result::Unspecified };
        Ok(pb::UpdateTaskResponse {
            state: Some(pb::TaskState { id: task.id, result: result as i32, ..Default::default() }),
            sent_outputs,
        })
    }

    pub(crate) fn update_log(&mut self, runner: &str, req: pb::UpdateLogRequest) -> Result<pb::UpdateLogResponse, Failure> {
        self.own_task(runner, req.task_id, "update log")?;
        let task = self.tasks.get_mut(&req.task_id).ok_or_else(|| fail(ConnectCode::Internal, "task vanished"))?;
        let ack = task.log.len() as i64;
        let rows = req.rows.len() as i64;
        if rows == 0 || req.index > ack || req.index + rows <= ack {
            return Ok(pb::UpdateLogResponse { ack_index: ack });
        }
        if task.archived {
            return Err(fail(ConnectCode::AlreadyExists, "log file has been archived"));
        }
        let skip = usize::try_from(ack - req.index).unwrap_or(0);
        for row in &req.rows[skip..] {
            task.log.push(row.time, &row.content);
        }
        if req.no_more {
            task.archived = true;
            task.log.archive();
        }
        Ok(pb::UpdateLogResponse { ack_index: task.log.len() as i64 })
    }
}
