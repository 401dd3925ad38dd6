//! Running a whole workflow: its jobs in `needs` order, each through a [`LocalSource`] and
//! a queue to an engine, as `solstice run` does.

mod needs;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value};
use solstice_workflow::{JobPlan, PendingJob, PlanOptions, WorkflowPlan, evaluate_condition};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    CheckoutSource, JobEvent, JobOrigin, JobQueue, JobResult, LocalSource, QueueError, Secret, StepsContext,
    job_request_from_plan, serve_source,
};
use needs::{Finished, ancestor_status, needs_context};

/// Something that happened while a [`WorkflowRun`] ran, in order. The events of one job
/// come between its [`WorkflowEvent::JobStarted`] and its `JobFinished` job event.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum WorkflowEvent {
    /// A job (one matrix combination) is handed to the engine.
    JobStarted {
        /// The job's key under `jobs:`.
        job: String,
        /// Its display name.
        name: String,
        /// The names of its steps, in order.
        steps: Vec<String>,
    },
    /// An event of the running job.
    Job(JobEvent),
    /// A job was not run: its `if:` is false (a job it needs did not succeed, or the
    /// condition says so), the run was cancelled, or no matrix combination passed the
    /// matrix filter. Its result is `reason`'s [`JobResult`].
    JobNotRun {
        /// The job's key under `jobs:`.
        job: String,
        /// Its display name.
        name: String,
        /// Skipped, cancelled or failed.
        result: JobResult,
        /// Why, for the user.
        reason: String,
    },
    /// No machine serves the label a job is routed by: the job failed without running.
    JobUnroutable {
        /// The job's key under `jobs:`.
        job: String,
        /// Its display name.
        name: String,
        /// The label ([`crate::JobRequest::route_label`]).
        label: String,
    },
    /// A job's output could not be evaluated and is left out of `needs.<job>.outputs`.
    OutputNotEvaluated {
        /// The job's key under `jobs:`.
        job: String,
        /// The output's name.
        output: String,
        /// Why.
        reason: String,
    },
}

/// The result of every job a [`WorkflowRun`] ran or skipped, in the order they ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkflowOutcome {
    /// `(display name, result)` of each job and matrix combination.
    pub jobs: Vec<(String, JobResult)>,
}

impl WorkflowOutcome {
    /// How many jobs failed or were cancelled: the run succeeded when there are none.
    pub fn not_succeeded(&self) -> usize {
        self.jobs.iter().filter(|(_, r)| matches!(r, JobResult::Failure | JobResult::Cancelled)).count()
    }
}

/// What can stop a [`WorkflowRun`] from being built or from running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkflowRunError {
    /// The job given to [`WorkflowRunBuilder::job`] is not in the workflow.
    #[error("the workflow has no job with id `{0}`")]
    UnknownJob(String),
    /// The queue between the run and the engine failed.
    #[error("the job queue failed")]
    Queue(#[from] QueueError),
}

/// A workflow's jobs run one after another in `needs` order, each job's matrix expanded
/// (for a [`PendingJob`], once the jobs it needs finished), its `if:` evaluated with the
/// results of the jobs before it, and its `outputs:` passed to later jobs as
/// `needs.<job>.outputs`. Jobs go through a [`LocalSource`] to a [`JobQueue`] that an
/// [`Engine`](crate::Engine) serves; their events come out of a channel as
/// [`WorkflowEvent`]s.
///
/// ```
/// use std::sync::Arc;
/// use solstice_core::{Engine, HostExecutor, HostHypervisor, JobQueue, MemoryQueue, WorkflowRun};
/// use solstice_workflow::{PlanOptions, plan_workflow};
/// use tokio_util::sync::CancellationToken;
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let source = "on: push\njobs:\n  a:\n    runs-on: host\n    outputs:\n      word: ${{ steps.w.outputs.word }}\n    steps:\n      - id: w\n        run: echo word=hello >> $GITHUB_OUTPUT\n  b:\n    needs: a\n    runs-on: host\n    steps:\n      - run: echo ${{ needs.a.outputs.word }}\n";
/// let options = PlanOptions::new();
/// let plan = plan_workflow(source, "ci.yml", &options)?;
/// let engine = Engine::builder().hypervisor(HostHypervisor::new()).executor(HostExecutor::new()).build()?;
/// let queue: Arc<dyn JobQueue> = Arc::new(MemoryQueue::new());
/// let (stop, abort) = (CancellationToken::new(), CancellationToken::new());
/// let serving = tokio::spawn({
///     let (engine, queue, stop, abort) = (engine.clone(), queue.clone(), stop.clone(), abort.clone());
///     async move { engine.serve(queue, &["host".to_owned()], stop, abort).await }
/// });
/// let (events, mut received) = tokio::sync::mpsc::channel(256);
/// let drain = tokio::spawn(async move { while received.recv().await.is_some() {} });
/// let outcome = WorkflowRun::builder(plan, options).build()?.run(queue, events, abort).await?;
/// assert_eq!(outcome.not_succeeded(), 0);
/// stop.cancel();
/// serving.await??;
/// drain.await?;
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(run()).unwrap();
/// ```
#[derive(Debug)]
pub struct WorkflowRun {
    plan: WorkflowPlan,
    options: PlanOptions,
    source: String,
    labels: Option<Vec<String>>,
    fallback_label: Option<String>,
    only: Option<String>,
    matrix_filter: BTreeMap<String, Vec<String>>,
    checkout: Option<CheckoutSource>,
    secrets: BTreeMap<String, Secret>,
    env: BTreeMap<String, String>,
}

/// Settings of a [`WorkflowRun`]; see [`WorkflowRun::builder`].
#[derive(Debug)]
#[must_use]
pub struct WorkflowRunBuilder {
    run: WorkflowRun,
}

impl WorkflowRun {
    /// A run of `plan`, which was planned with `options`; a [`PendingJob`] is planned with
    /// the same options plus the `needs` context.
    pub fn builder(plan: WorkflowPlan, options: PlanOptions) -> WorkflowRunBuilder {
        WorkflowRunBuilder {
            run: WorkflowRun {
                plan,
                options,
                source: "workflow-run".to_owned(),
                labels: None,
                fallback_label: None,
                only: None,
                matrix_filter: BTreeMap::new(),
                checkout: None,
                secrets: BTreeMap::new(),
                env: BTreeMap::new(),
            },
        }
    }
}

impl WorkflowRunBuilder {
    /// The name of the [`LocalSource`] the jobs come from (their `origin.source`).
    /// Default: `workflow-run`.
    pub fn source_name(mut self, name: impl Into<String>) -> Self {
        self.run.source = name.into();
        self
    }

    /// The labels the engine serves: a job routed to another label fails at once, with a
    /// [`WorkflowEvent::JobNotRun`], instead of waiting in the queue. Default: not checked.
    pub fn labels(mut self, labels: Vec<String>) -> Self {
        self.run.labels = Some(labels);
        self
    }

    /// A served label that takes the jobs whose own label is not served (their `runs_on`
    /// becomes this one label), instead of failing them. `solstice run --host` uses it for
    /// jobs whose labels are only known once their matrix is expanded. Default: none.
    pub fn fallback_label(mut self, label: impl Into<String>) -> Self {
        self.run.fallback_label = Some(label.into());
        self
    }

    /// Runs only the job with this id and the jobs it needs, directly or not (as `act -j`
    /// does). Default: every job.
    pub fn job(mut self, id: impl Into<String>) -> Self {
        self.run.only = Some(id.into());
        self
    }

    /// Runs only the matrix combinations whose `key` is one of the values given for it
    /// (values compared as the text `${{ matrix.key }}` gives); combinations without that
    /// key are not filtered. Call again to allow more values. Default: no filter.
    pub fn matrix(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.run.matrix_filter.entry(key.into()).or_default().push(value.into());
        self
    }

    /// Where the built-in checkout gets the repository. Default: none.
    pub fn checkout(mut self, source: CheckoutSource) -> Self {
        self.run.checkout = Some(source);
        self
    }

    /// A secret: in the `secrets` context of every job and masked in its logs. Default: none.
    pub fn secret(mut self, name: impl Into<String>, value: Secret) -> Self {
        self.run.secrets.insert(name.into(), value);
        self
    }

    /// A variable every job gets under its own `env:` (the forge's runner's variables,
    /// such as Forgejo's `FORGEJO_ACTIONS`); a workflow or job `env:` of the same name
    /// wins. Default: none.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.run.env.insert(name.into(), value.into());
        self
    }

    /// The run.
    ///
    /// # Errors
    /// [`WorkflowRunError::UnknownJob`] when [`WorkflowRunBuilder::job`] names no job.
    pub fn build(self) -> Result<WorkflowRun, WorkflowRunError> {
        if let Some(id) = &self.run.only {
            let known = self.run.plan.jobs.iter().any(|j| &j.id == id) || self.run.plan.pending.iter().any(|p| &p.id == id);
            if !known {
                return Err(WorkflowRunError::UnknownJob(id.clone()));
            }
        }
        Ok(self.run)
    }
}

/// One workflow job: its planned combinations, or the job waiting for its needs.
enum Unit {
    Planned(Vec<JobPlan>),
    Pending(Box<PendingJob>),
}

impl Unit {
    fn id(&self) -> &str {
        match self {
            Unit::Planned(jobs) => jobs.first().map_or("", |j| j.id.as_str()),
            Unit::Pending(p) => &p.id,
        }
    }

    fn needs(&self) -> &[String] {
        match self {
            Unit::Planned(jobs) => jobs.first().map_or(&[], |j| j.needs.as_slice()),
            Unit::Pending(p) => &p.needs,
        }
    }

    fn name(&self) -> &str {
        match self {
            Unit::Planned(jobs) => jobs.first().map_or("", |j| j.name.as_str()),
            Unit::Pending(p) => &p.name,
        }
    }

    /// The `if:` and the contexts it is evaluated with (before `needs` is added).
    fn condition(&self) -> (String, Map<String, Value>) {
        match self {
            Unit::Planned(jobs) => jobs.first().map(|j| (j.condition.clone(), j.contexts.clone())).unwrap_or_default(),
            Unit::Pending(p) => (p.condition.clone(), p.contexts.clone()),
        }
    }
}

impl WorkflowRun {
    /// Runs the jobs, sending what happens to `events`, and returns every job's result.
    /// Once `abort` fires, the jobs not yet started end as cancelled (the engine serving
    /// `queue` cancels the running one when given the same token). A job whose matrix
    /// cannot be expanded, whose `if:` cannot be evaluated, or whose label no machine
    /// serves fails without running; the others still run.
    ///
    /// # Errors
    /// [`WorkflowRunError::Queue`] when the queue fails.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropping the future abandons the running job in the queue; fire
    /// `abort` instead.
    pub async fn run(
        self,
        queue: Arc<dyn JobQueue>,
        events: mpsc::Sender<WorkflowEvent>,
        abort: CancellationToken,
    ) -> Result<WorkflowOutcome, WorkflowRunError> {
        let mut units = self.units();
        let needs_of: HashMap<String, Vec<String>> =
            units.iter().map(|u| (u.id().to_owned(), u.needs().to_vec())).collect();
        let mut finished: HashMap<String, Finished> = HashMap::new();
        let mut outcome = WorkflowOutcome::default();
        // In file order, the first job whose needs have all finished; the planner has
        // rejected cycles and unknown needs, so there always is one.
        while let Some(next) = units.iter().position(|u| u.needs().iter().all(|n| finished.contains_key(n))) {
            let unit = units.remove(next);
            let id = unit.id().to_owned();
            let done = self.run_unit(&unit, &needs_of, &finished, &queue, &events, &abort, &mut outcome).await?;
            finished.insert(id, done);
        }
        Ok(outcome)
    }

    /// The jobs to run, grouped by workflow job, in file order (pending jobs last).
    fn units(&self) -> Vec<Unit> {
        let mut units: Vec<Unit> = Vec::new();
        for job in &self.plan.jobs {
            match units.last_mut() {
                Some(Unit::Planned(jobs)) if jobs.first().is_some_and(|j| j.id == job.id) => jobs.push(job.clone()),
                _ => units.push(Unit::Planned(vec![job.clone()])),
            }
        }
        units.extend(self.plan.pending.iter().map(|p| Unit::Pending(Box::new(p.clone()))));
        if let Some(only) = &self.only {
            let mut wanted = vec![only.clone()];
            let mut i = 0;
            while let Some(id) = wanted.get(i).cloned() {
                let needs = units.iter().find(|u| u.id() == id).map(|u| u.needs().to_vec()).unwrap_or_default();
                wanted.extend(needs.into_iter().filter(|n| !wanted.contains(n)).collect::<Vec<_>>());
                i += 1;
            }
            units.retain(|u| wanted.iter().any(|w| w == u.id()));
        }
        units
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_unit(
        &self,
        unit: &Unit,
        needs_of: &HashMap<String, Vec<String>>,
        finished: &HashMap<String, Finished>,
        queue: &Arc<dyn JobQueue>,
        events: &mpsc::Sender<WorkflowEvent>,
        abort: &CancellationToken,
        outcome: &mut WorkflowOutcome,
    ) -> Result<Finished, WorkflowRunError> {
        let mut done = Finished::default();
        let not_run = |result: JobResult, reason: String, done: &mut Finished, outcome: &mut WorkflowOutcome| {
            done.results.push(result);
            outcome.jobs.push((unit.name().to_owned(), result));
            WorkflowEvent::JobNotRun { job: unit.id().to_owned(), name: unit.name().to_owned(), result, reason }
        };
        if abort.is_cancelled() {
            let event = not_run(JobResult::Cancelled, "the run was cancelled".into(), &mut done, outcome);
            let _ = events.send(event).await;
            return Ok(done);
        }
        let needs = needs_context(unit.needs(), finished);
        let (condition, mut contexts) = unit.condition();
        contexts.insert("needs".into(), needs.clone());
        let status = ancestor_status(unit.needs(), needs_of, finished);
        let condition = if condition.trim().is_empty() { "success()" } else { condition.as_str() };
        let verdict = match evaluate_condition(condition, &contexts, status) {
            Ok(true) => None,
            Ok(false) => Some((JobResult::Skipped, format!("its condition `{condition}` is false (a job it needs did not succeed, or the condition says so)"))),
            Err(e) => Some((JobResult::Failure, format!("its `if:` could not be evaluated: {e}"))),
        };
        if let Some((result, reason)) = verdict {
            let event = not_run(result, reason, &mut done, outcome);
            let _ = events.send(event).await;
            return Ok(done);
        }
        let plans = match unit {
            Unit::Planned(jobs) => jobs.clone(),
            Unit::Pending(pending) => match pending.plan(&self.options.clone().context("needs", needs.clone())) {
                Ok(jobs) => jobs,
                Err(errors) => {
                    let event = not_run(JobResult::Failure, format!("its matrix could not be expanded: {errors}"), &mut done, outcome);
                    let _ = events.send(event).await;
                    return Ok(done);
                }
            },
        };
        let plans: Vec<JobPlan> = plans.into_iter().filter(|p| self.matrix_allows(p)).collect();
        if plans.is_empty() {
            let event = not_run(JobResult::Skipped, "no matrix combination passes the matrix filter".into(), &mut done, outcome);
            let _ = events.send(event).await;
            return Ok(done);
        }
        // The combinations run one at a time, so `max-parallel` always holds. With
        // `fail-fast` (the default), a failed combination cancels the ones not yet run:
        // GitHub "cancels all in-progress and queued jobs in the matrix if any job in the
        // matrix fails" (workflow syntax, `jobs.<job_id>.strategy.fail-fast`); a failure
        // forgiven by the job's `continue-on-error` does not count.
        let mut failed: Option<String> = None;
        for plan in &plans {
            if let Some(first) = failed.as_ref().filter(|_| plan.fail_fast) {
                let reason = format!("`{first}` failed and the matrix is fail-fast (strategy.fail-fast)");
                let _ = events
                    .send(WorkflowEvent::JobNotRun { job: plan.id.clone(), name: plan.name.clone(), result: JobResult::Cancelled, reason })
                    .await;
                done.results.push(JobResult::Cancelled);
                outcome.jobs.push((plan.name.clone(), JobResult::Cancelled));
                continue;
            }
            let result = if abort.is_cancelled() {
                JobResult::Cancelled
            } else {
                self.run_job(plan, &needs, queue, events, &mut done.outputs).await?
            };
            if result == JobResult::Failure {
                failed.get_or_insert_with(|| plan.name.clone());
            }
            done.results.push(result);
            outcome.jobs.push((plan.name.clone(), result));
        }
        Ok(done)
    }

    fn matrix_allows(&self, plan: &JobPlan) -> bool {
        let Some(matrix) = &plan.matrix else { return true };
        self.matrix_filter.iter().all(|(key, allowed)| match matrix.get(key) {
            None => true,
            Some(value) => {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                allowed.contains(&text)
            }
        })
    }

    /// Runs one combination; its outputs are added to `outputs`.
    async fn run_job(
        &self,
        plan: &JobPlan,
        needs: &Value,
        queue: &Arc<dyn JobQueue>,
        events: &mpsc::Sender<WorkflowEvent>,
        outputs: &mut BTreeMap<String, String>,
    ) -> Result<JobResult, WorkflowRunError> {
        let mut request = job_request_from_plan(plan, JobOrigin { source: self.source.clone(), ..JobOrigin::default() });
        request.contexts.insert("needs".into(), needs.clone());
        let continue_on_error = match job_settings(plan, &request.contexts) {
            Ok((timeout, continue_on_error)) => {
                request.timeout = timeout;
                continue_on_error
            }
            Err(reason) => {
                let event = WorkflowEvent::JobNotRun { job: plan.id.clone(), name: plan.name.clone(), result: JobResult::Failure, reason };
                let _ = events.send(event).await;
                return Ok(JobResult::Failure);
            }
        };
        let secrets: Map<String, Value> =
            self.secrets.iter().map(|(k, v)| (k.clone(), Value::String(v.expose().to_owned()))).collect();
        request.contexts.insert("secrets".into(), Value::Object(secrets));
        request.secrets = self.secrets.values().cloned().collect();
        for (name, value) in &self.env {
            request.env.entry(name.clone()).or_insert_with(|| value.clone());
        }
        request.checkout = self.checkout.clone();
        let served = |label: &str| self.labels.as_ref().is_none_or(|labels| labels.iter().any(|l| l == label));
        if !served(request.route_label())
            && let Some(fallback) = &self.fallback_label
        {
            request.runs_on = vec![fallback.clone()];
        }
        if !served(request.route_label()) {
            let label = request.route_label().to_owned();
            let _ = events.send(WorkflowEvent::JobUnroutable { job: plan.id.clone(), name: plan.name.clone(), label }).await;
            return Ok(JobResult::Failure);
        }
        let _ = events
            .send(WorkflowEvent::JobStarted {
                job: plan.id.clone(),
                name: plan.name.clone(),
                steps: request.steps.iter().map(|s| s.name.clone()).collect(),
            })
            .await;

        let id = request.id;
        let mut steps = StepsContext::for_job(&request);
        let contexts = request.contexts.clone();
        let (tx, mut rx) = mpsc::channel(1024);
        let source = Arc::new(LocalSource::new(self.source.clone(), vec![request], tx));
        let serving = async move {
            // The source ends once its job finished; dropping it closes the channel.
            let served = serve_source(source.clone(), queue.clone(), CancellationToken::new()).await;
            let result = source.results().get(&id).copied().unwrap_or(JobResult::Failure);
            drop(source);
            served.map(|()| result)
        };
        let forwarding = async {
            while let Some(event) = rx.recv().await {
                steps.record(&event.kind);
                let _ = events.send(WorkflowEvent::Job(event)).await;
            }
        };
        let (result, ()) = tokio::join!(serving, forwarding);
        let result = match result? {
            // A failed job with `continue-on-error` lets the run succeed and shows as
            // `success` in `needs.<job>.result` (GitHub's behaviour, actions/runner#1161).
            JobResult::Failure if continue_on_error => JobResult::Success,
            other => other,
        };
        // Outputs are evaluated whatever the job's result, as GitHub's runner does when
        // it finalizes a job, so an `always()` job after it can read them.
        for (output, value) in steps.job_outputs(&plan.outputs, &contexts, result.as_str()) {
            match value {
                Ok(value) => {
                    outputs.insert(output, value);
                }
                Err(e) => {
                    let event = WorkflowEvent::OutputNotEvaluated { job: plan.id.clone(), output, reason: e.to_string() };
                    let _ = events.send(event).await;
                }
            }
        }
        Ok(result)
    }
}

/// The job's time limit and `continue-on-error`, evaluating the ones that waited for the
/// `needs` context (GitHub allows `github`, `needs`, `strategy`, `matrix`, `vars` and
/// `inputs` there). A value that cannot be evaluated, or has the wrong type, fails the job
/// with the reason.
fn job_settings(plan: &JobPlan, contexts: &Map<String, Value>) -> Result<(std::time::Duration, bool), String> {
    let timeout = match &plan.timeout_minutes_expression {
        None => plan.timeout_minutes,
        Some(text) => solstice_workflow::timeout_minutes_at_run_time(text, contexts)
            .map_err(|e| format!("its {}", crate::support::error_chain(&e)))?
            .unwrap_or(solstice_workflow::DEFAULT_TIMEOUT_MINUTES),
    };
    let continue_on_error = match &plan.continue_on_error_expression {
        None => plan.continue_on_error,
        Some(text) => solstice_workflow::continue_on_error_at_run_time(text, contexts)
            .map_err(|e| format!("its {}", crate::support::error_chain(&e)))?,
    };
    Ok((std::time::Duration::from_secs(timeout.saturating_mul(60)), continue_on_error))
}
