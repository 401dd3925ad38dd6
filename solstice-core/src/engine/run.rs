//! Running one job: provision, steps in order, destroy — whatever happens.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::condition::{JobStatus, evaluate_condition, interpolate};
use super::emit::Emitter;
use super::EngineInner;
use crate::{
    error_chain, JobEventKind, JobRequest, JobResult, LogSink, LogStream, Machine, MachineRequest, ScriptRun,
    StepAction, StepCommand, StepExit,
};

/// Steps that still run after a cancellation (`if: always()` or `cancelled()`) get at
/// most this long, so a cancelled job cannot be held up indefinitely.
const CLEANUP_STEP_LIMIT: Duration = Duration::from_secs(5 * 60);

/// Lines in flight between an executor and the event stream.
const LOG_BUFFER: usize = 1024;

/// Why the job's token fired.
#[derive(Debug, Default)]
struct JobDeadline {
    timed_out: std::sync::atomic::AtomicBool,
}

pub(crate) async fn run_job(
    engine: &EngineInner,
    job: &JobRequest,
    emitter: &mut Emitter,
    cancel: CancellationToken,
) -> JobResult {
    emitter.emit(JobEventKind::Accepted { orchestrator: engine.name.clone() }).await;
    engine.metrics.job_started();
    let accepted_at = Instant::now();

    // The job's own token: fires on outside cancellation or when the job times out.
    let job_cancel = cancel.child_token();
    let deadline = Arc::new(JobDeadline::default());
    let timer = {
        let job_cancel = job_cancel.clone();
        let deadline = deadline.clone();
        let limit = job.timeout;
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(limit) => {
                    deadline.timed_out.store(true, std::sync::atomic::Ordering::SeqCst);
                    job_cancel.cancel();
                }
                _ = job_cancel.cancelled() => {}
            }
        })
    };

    let result = provision_and_run(engine, job, emitter, &job_cancel, &deadline).await;
    timer.abort();
    let result = match result {
        _ if deadline.timed_out.load(std::sync::atomic::Ordering::SeqCst) => {
            emitter
                .log(
                    None,
                    LogStream::System,
                    &format!(
                        "##[error]The job ran longer than its limit of {} and was stopped.",
                        human_duration(job.timeout)
                    ),
                )
                .await;
            JobResult::Failure
        }
        other => other,
    };
    engine.metrics.job_finished(result, accepted_at.elapsed());
    emitter.emit(JobEventKind::JobFinished { result }).await;
    result
}

async fn provision_and_run(
    engine: &EngineInner,
    job: &JobRequest,
    emitter: &mut Emitter,
    cancel: &CancellationToken,
    deadline: &JobDeadline,
) -> JobResult {
    let request = MachineRequest {
        job_id: job.id,
        label: job.route_label().to_owned(),
        debug_ssh: job.debug_ssh,
    };
    if cancel.is_cancelled() {
        // Cancelled before it started (for example while it waited in the queue).
        emitter.log(None, LogStream::System, "The job was cancelled before it started.").await;
        return JobResult::Cancelled;
    }
    let started = Instant::now();
    emitter
        .log(None, LogStream::System, &format!("Preparing a machine for `{}`", request.label))
        .await;
    let (console, mut console_rx) = LogSink::channel(LOG_BUFFER);
    #[cfg(feature = "_store")]
    let store_journal = engine.store.as_ref().map(|store| super::orphans::StoreJournal::new(store, job.id, &engine.name));
    #[cfg(feature = "_store")]
    let journal: &dyn crate::MachineJournal = match &store_journal {
        Some(journal) => journal,
        None => &crate::NoJournal,
    };
    #[cfg(not(feature = "_store"))]
    let journal = &crate::NoJournal;
    let provision = async {
        let console = console;
        engine.hypervisor.provision_recorded(&request, &console, cancel, journal).await
    };
    let forward = async {
        let mut lines = Vec::new();
        while let Some(line) = console_rx.recv().await {
            lines.push(line);
        }
        lines
    };
    // Console lines are collected while the machine boots and logged after, because
    // the emitter is not shared between the two futures.
    let (provisioned, console_lines) = tokio::join!(provision, forward);
    for line in console_lines {
        emitter.log(None, line.stream, &line.line).await;
    }
    let machine = match provisioned {
        Ok(machine) => machine,
        Err(e) => {
            #[cfg(feature = "_store")]
            if let Some(journal) = &store_journal {
                journal.forget().await;
            }
            if cancel.is_cancelled() {
                return JobResult::Cancelled;
            }
            engine.metrics.provision_failed();
            let message = error_chain(&e);
            emitter
                .log(None, LogStream::System, &format!("##[error]Could not prepare a machine: {message}"))
                .await;
            return JobResult::Failure;
        }
    };
    engine.metrics.machine_ready(started.elapsed());
    emitter
        .log(
            None,
            LogStream::System,
            &format!("Machine {} ready in {:.1} s", machine.id, started.elapsed().as_secs_f64()),
        )
        .await;

    // Steps run behind catch_unwind so that a panicking executor still leaves the
    // machine to be destroyed below.
    let steps = AssertUnwindSafe(run_steps(engine, job, &machine, emitter, cancel, deadline));
    let result = match steps.catch_unwind().await {
        Ok(result) => result,
        Err(_) => {
            emitter
                .log(None, LogStream::System, "##[error]The step executor failed unexpectedly (panic).")
                .await;
            JobResult::Failure
        }
    };

    match engine.hypervisor.destroy(&machine).await {
        Ok(()) => {
            #[cfg(feature = "_store")]
            if let Some(journal) = &store_journal {
                journal.forget().await;
            }
            emitter.log(None, LogStream::System, &format!("Machine {} destroyed", machine.id)).await;
        }
        Err(e) => {
            tracing::error!(job_id = %job.id, machine = %machine.id, error = %error_chain(&e), "could not destroy machine");
            emitter
                .log(None, LogStream::System, &format!("##[warning]Could not fully remove machine {}", machine.id))
                .await;
        }
    }
    result
}

async fn run_steps(
    engine: &EngineInner,
    job: &JobRequest,
    machine: &Machine,
    emitter: &mut Emitter,
    cancel: &CancellationToken,
    deadline: &JobDeadline,
) -> JobResult {
    let mut status = JobStatus::Success;
    let mut steps_context = Map::new();
    let mut added_env: BTreeMap<String, String> = BTreeMap::new();
    let mut added_path: Vec<String> = Vec::new();

    for (index, step) in job.steps.iter().enumerate() {
        if cancel.is_cancelled() && status != JobStatus::Cancelled {
            status = if deadline.timed_out.load(std::sync::atomic::Ordering::SeqCst) {
                JobStatus::Failure
            } else {
                JobStatus::Cancelled
            };
        }
        emitter.emit(JobEventKind::StepStarted { index, name: step.name.clone() }).await;

        // The step's own env values may hold run-time expressions (`steps.x.outputs.y`):
        // they are evaluated against the env without them, as on GitHub.
        let base_env = step_env(job, machine, &added_env);
        let base_contexts = contexts(job, machine, &steps_context, &base_env, status);
        let mut env = base_env;
        for (name, value) in &step.env {
            let value = interpolate(value, &base_contexts).unwrap_or_else(|e| {
                tracing::warn!(job_id = %job.id, step = index, variable = %name, error = %e, "env expression failed");
                String::new()
            });
            env.insert(name.clone(), value);
        }
        let contexts = contexts(job, machine, &steps_context, &env, status);
        let run = match evaluate_condition(step.condition.as_deref(), status, &contexts) {
            Ok(run) => run,
            Err(message) => {
                emitter
                    .log(Some(index), LogStream::System, &format!("##[error]The step's `if:` could not be evaluated: {message}"))
                    .await;
                false_with_failure(&mut status);
                finish_step(emitter, &mut steps_context, step, index, JobResult::Failure, JobResult::Failure, None, BTreeMap::new()).await;
                continue;
            }
        };
        if !run {
            finish_step(emitter, &mut steps_context, step, index, JobResult::Skipped, JobResult::Skipped, None, BTreeMap::new()).await;
            continue;
        }

        // A step that runs after the job was cancelled (always(), cancelled()) gets a
        // fresh token with a bounded time; otherwise the step shares the job's token.
        let step_cancel = if cancel.is_cancelled() { CancellationToken::new() } else { cancel.child_token() };
        let limit = match (step.timeout, cancel.is_cancelled()) {
            (Some(t), true) => Some(t.min(CLEANUP_STEP_LIMIT)),
            (None, true) => Some(CLEANUP_STEP_LIMIT),
            (t, false) => t,
        };

        let started = Instant::now();
        let (exit, timed_out) =
            execute_step(engine, job, machine, step, index, env, &added_path, &contexts, emitter, step_cancel.clone(), limit).await;
        let elapsed = started.elapsed();

        let outcome = match &exit {
            Some(exit) if exit.succeeded() => JobResult::Success,
            _ if cancel.is_cancelled() && !timed_out && !deadline.timed_out.load(std::sync::atomic::Ordering::SeqCst) => JobResult::Cancelled,
            _ => JobResult::Failure,
        };
        if timed_out {
            if let Some(limit) = limit {
                emitter
                    .log(Some(index), LogStream::System, &format!("##[error]The step ran longer than its limit of {} and was stopped.", human_duration(limit)))
                    .await;
            }
        } else if let Some(code) = exit.as_ref().and_then(|e| e.exit_code).filter(|c| *c != 0) {
            emitter
                .log(Some(index), LogStream::System, &format!("##[error]Process completed with exit code {code}."))
                .await;
        }
        let conclusion = if outcome == JobResult::Failure && step.continue_on_error { JobResult::Success } else { outcome };
        match conclusion {
            JobResult::Failure if status == JobStatus::Success => status = JobStatus::Failure,
            JobResult::Cancelled => status = JobStatus::Cancelled,
            _ => {}
        }
        let exit_code = exit.as_ref().and_then(|e| e.exit_code);
        let outputs = exit.map(|e| {
            added_env.extend(e.env);
            added_path.extend(e.path);
            e.outputs
        });
        emitter
            .log(Some(index), LogStream::System, &format!("Step finished: {outcome} in {:.1} s", elapsed.as_secs_f64()))
            .await;
        finish_step(emitter, &mut steps_context, step, index, outcome, conclusion, exit_code, outputs.unwrap_or_default()).await;
    }
    match status {
        JobStatus::Success => JobResult::Success,
        JobStatus::Failure => JobResult::Failure,
        JobStatus::Cancelled => JobResult::Cancelled,
    }
}

fn false_with_failure(status: &mut JobStatus) {
    if *status == JobStatus::Success {
        *status = JobStatus::Failure;
    }
}

#[allow(clippy::too_many_arguments)]
async fn finish_step(
    emitter: &mut Emitter,
    steps_context: &mut Map<String, Value>,
    step: &StepCommand,
    index: usize,
    outcome: JobResult,
    conclusion: JobResult,
    exit_code: Option<i32>,
    outputs: BTreeMap<String, String>,
) {
    let outputs: BTreeMap<String, String> =
        outputs.into_iter().map(|(k, v)| (k, emitter.mask(&v))).collect();
    if let Some(id) = &step.id {
        steps_context.insert(
            id.clone(),
            json!({ "outputs": outputs, "outcome": outcome.as_str(), "conclusion": conclusion.as_str() }),
        );
    }
    emitter.emit(JobEventKind::StepFinished { index, outcome, conclusion, exit_code, outputs }).await;
}

/// Runs one step; returns its exit (`None` if it could not run) and whether its own
/// time limit stopped it.
#[allow(clippy::too_many_arguments)]
async fn execute_step(
    engine: &EngineInner,
    job: &JobRequest,
    machine: &Machine,
    step: &StepCommand,
    index: usize,
    env: BTreeMap<String, String>,
    added_path: &[String],
    contexts: &Map<String, Value>,
    emitter: &mut Emitter,
    cancel: CancellationToken,
    limit: Option<Duration>,
) -> (Option<StepExit>, bool) {
    let (sink, mut rx) = LogSink::channel(LOG_BUFFER);
    let timed_out = std::sync::atomic::AtomicBool::new(false);
    let timer = async {
        match limit {
            Some(limit) => {
                tokio::select! {
                    _ = tokio::time::sleep(limit) => {
                        timed_out.store(true, std::sync::atomic::Ordering::SeqCst);
                        cancel.cancel();
                    }
                    _ = cancel.cancelled() => {}
                }
            }
            None => cancel.cancelled().await,
        }
    };
    let exec = async {
        let sink = sink;
        let result = match &step.action {
            StepAction::Run { script, shell } => match interpolate(script, contexts) {
                Ok(script) => {
                    let run = ScriptRun {
                        index,
                        script,
                        shell: shell.clone(),
                        env,
                        working_directory: step.working_directory.clone(),
                        path: added_path.to_vec(),
                    };
                    engine.executor.run_script(machine, &run, &sink, cancel.clone()).await.map_err(|e| error_chain(&e))
                }
                Err(e) => Err(format!("the step's script has an expression that could not be evaluated: {e}")),
            },
            StepAction::Checkout(checkout) => match &job.checkout {
                Some(source) => engine
                    .executor
                    .checkout(machine, source, checkout, &sink, cancel.clone())
                    .await
                    .map_err(|e| error_chain(&e)),
                None => Err("this job has no repository to check out".to_owned()),
            },
        };
        // Stop the timer once the step is over.
        cancel.cancel();
        result
    };
    let forward = async {
        while let Some(line) = rx.recv().await {
            emitter.log(Some(index), line.stream, &line.line).await;
        }
    };
    let (result, (), ()) = tokio::join!(exec, forward, timer);
    let timed_out = timed_out.load(std::sync::atomic::Ordering::SeqCst);
    match result {
        Ok(exit) => (Some(exit), timed_out),
        Err(message) => {
            emitter.log(Some(index), LogStream::System, &format!("##[error]{message}")).await;
            (None, timed_out)
        }
    }
}

/// The environment of a step before its own `env:`: GitHub's default variables, then
/// the job's, then what earlier steps exported.
fn step_env(job: &JobRequest, machine: &Machine, added: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("CI".to_owned(), "true".to_owned());
    env.insert("GITHUB_ACTIONS".to_owned(), "true".to_owned());
    env.insert("GITHUB_WORKSPACE".to_owned(), machine.workspace.clone());
    env.insert("SOLSTICE_JOB_ID".to_owned(), job.id.to_string());
    env.insert("SOLSTICE_MACHINE".to_owned(), machine.id.clone());
    env.extend(job.env.clone());
    env.extend(added.clone());
    env
}

fn contexts(
    job: &JobRequest,
    machine: &Machine,
    steps: &Map<String, Value>,
    env: &BTreeMap<String, String>,
    status: JobStatus,
) -> Map<String, Value> {
    let mut contexts = job.contexts.clone();
    contexts.insert("steps".into(), Value::Object(steps.clone()));
    contexts.insert("env".into(), json!(env));
    let status = match status {
        JobStatus::Success => "success",
        JobStatus::Failure => "failure",
        JobStatus::Cancelled => "cancelled",
    };
    contexts.insert("job".into(), json!({ "status": status }));
    contexts
        .entry("runner")
        .or_insert_with(|| json!({ "os": "Linux", "name": machine.id, "workspace": machine.workspace }));
    contexts
}

fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 && secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}
