//! Running one job: provision, steps in order, destroy — whatever happens.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::commands::{self, CommandSettings, JobCommands, StepCommands};
use super::condition::{JobStatus, evaluate_condition, interpolate};
use super::contexts::{JobContexts, event_path, event_payload, job_env, process_env};
use super::debug::{Declined, DebugKeeper, OnDestroyed, Reservation, authorized_keys, install_script};
use super::debug_slot::{SharedSlot, SlotRefused};
use super::emit::Emitter;
use super::EngineInner;
use crate::{
    JobEventKind, JobId, JobRequest, JobResult, LogSink, LogStream, Machine, OutputLine, MachineAccess, MachineRequest,
    ProvisionContext, ScriptRun, StepAction, StepCommand, StepExit,
};
use crate::support::error_chain;

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
    let (console, console_rx) = LogSink::channel(LOG_BUFFER);
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
        engine.hypervisor.provision(&request, &ProvisionContext::new(&console, cancel).with_journal(journal)).await
    };
    // The boot console goes to the job's log as it comes, so a slow boot (minutes for
    // some guests under TCG) or one that hangs shows its progress.
    let provisioned = log_while(provision, console_rx, emitter, None).await;
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

    // A failed job that opted in may keep its machine for debug SSH; then the keeper
    // destroys it later, and the store's record of it goes with it.
    // The machine also leaves the `machines_running` gauge then, not when the job ends.
    let metrics = engine.metrics.clone();
    let forget_later = || -> Option<OnDestroyed> {
        #[cfg(feature = "_store")]
        let forget = store_journal.as_ref().and_then(|journal| journal.forget_later());
        #[cfg(not(feature = "_store"))]
        let forget: Option<OnDestroyed> = None;
        Some(Box::pin(async move {
            if let Some(forget) = forget {
                forget.await;
            }
            metrics.machine_gone();
        }))
    };
    let (machine, forget_after_destroy) = match keep_for_debug(engine, job, machine, result, emitter, forget_later).await {
        Debug::Kept => return result,
        Debug::Destroy(machine, forget) => (*machine, forget),
    };

    match engine.hypervisor.destroy(&machine).await {
        Ok(()) => {
            match forget_after_destroy {
                Some(forget) => forget.await,
                None => engine.metrics.machine_gone(),
            }
            #[cfg(feature = "_store")]
            if let Some(journal) = &store_journal {
                journal.forget().await;
            }
            emitter.log(None, LogStream::System, &format!("Machine {} destroyed", machine.id)).await;
        }
        Err(e) => {
            engine.metrics.machine_gone();
            tracing::error!(job_id = %job.id, machine = %machine.id, error = %error_chain(&e), "could not destroy machine");
            emitter
                .log(None, LogStream::System, &format!("##[warning]Could not fully remove machine {}", machine.id))
                .await;
        }
    }
    result
}

/// What happens to a finished job's machine.
enum Debug {
    /// The debug keeper holds it now.
    Kept,
    /// Destroy it now; then run the future, if any (the store record to forget).
    Destroy(Box<Machine>, Option<OnDestroyed>),
}

/// How long installing the user's keys may take before debug SSH is given up.
const KEY_INSTALL_LIMIT: Duration = Duration::from_secs(60);

/// Hands a failed, opted-in job's machine to the debug keeper, after making the
/// triggering user's public keys the only ones the machine accepts and opening the
/// forward; the job log then ends with the connection command. Every other job's
/// machine (and one the keeper declines) comes back to be destroyed at once, with a
/// log line saying why debug SSH was not given when the job asked for it.
async fn keep_for_debug(
    engine: &EngineInner,
    job: &JobRequest,
    machine: Machine,
    result: JobResult,
    emitter: &mut Emitter,
    forget_later: impl FnOnce() -> Option<OnDestroyed>,
) -> Debug {
    if !job.debug_ssh || result != JobResult::Failure {
        return Debug::Destroy(Box::new(machine), None);
    }
    let mut say = async |line: String| emitter.log(None, LogStream::System, &line).await;
    let Some(keeper) = &engine.debug else {
        say("##[warning]Debug SSH: this job asked for it, but this orchestrator does not offer debug SSH. The machine is removed now.".to_owned()).await;
        return Debug::Destroy(Box::new(machine), None);
    };
    let MachineAccess::Ssh(access) = &machine.access else {
        say("##[warning]Debug SSH: this job ran directly on the host, not in a virtual machine, so there is nothing to log in to.".to_owned()).await;
        return Debug::Destroy(Box::new(machine), None);
    };
    let keys = authorized_keys(&job.debug_keys);
    if keys.is_empty() {
        say("##[warning]Debug SSH: the forge publishes no public SSH key of the user who started this run (or it could not be fetched), so nobody could log in. Add a key to your forge account and run the job again. The machine is removed now.".to_owned()).await;
        return Debug::Destroy(Box::new(machine), None);
    }
    // Without a known repository, the job's source stands in for it: still one
    // machine at a time for whatever the jobs have in common.
    let repository = job.origin.repository.clone().unwrap_or_else(|| job.origin.source.clone());
    let (mut reservation, slot) = match reserve_debug_slot(engine, keeper, &repository, job.id).await {
        Ok(held) => held,
        Err(why) => {
            say(why).await;
            return Debug::Destroy(Box::new(machine), None);
        }
    };
    let port = match reservation.bind().await {
        Ok(port) => port,
        Err(e) => {
            tracing::error!(job_id = %job.id, error = %error_chain(&e), "no debug SSH port");
            slot.release().await;
            say("##[warning]Debug SSH is unavailable right now (no free port on the orchestrator). The machine is removed now.".to_owned()).await;
            return Debug::Destroy(Box::new(machine), None);
        }
    };

    // The keys go in through the executor like a step, as the login user, replacing
    // authorized_keys: from here on the job's own ephemeral key no longer opens the
    // machine, only the user's keys do.
    let install = ScriptRun {
        index: job.steps.len(),
        script: install_script(&keys),
        shell: "sh -e {0}".to_owned(),
        env: BTreeMap::new(),
        working_directory: None,
        path: Vec::new(),
    };
    let (sink, rx) = LogSink::channel(64);
    let cancel = CancellationToken::new();
    let run = async {
        let sink = sink;
        tokio::time::timeout(KEY_INSTALL_LIMIT, engine.executor.run_script(&machine, &install, &sink, &cancel)).await
    };
    let (installed, lines) = tokio::join!(run, collect_lines(rx));
    cancel.cancel();
    for line in lines {
        say(format!("Debug SSH: {}", line.line)).await;
    }
    let failure = match installed {
        Ok(Ok(exit)) if exit.succeeded() => None,
        Ok(Ok(exit)) => Some(format!("exit code {:?}", exit.exit_code)),
        Ok(Err(e)) => Some(error_chain(&e)),
        Err(_) => Some(format!("no answer within {}", human_duration(KEY_INSTALL_LIMIT))),
    };
    if let Some(why) = failure {
        tracing::warn!(job_id = %job.id, machine = %machine.id, %why, "could not install debug SSH keys");
        slot.release().await;
        say(format!("##[warning]Debug SSH: the keys could not be installed in the machine ({why}). The machine is removed now.")).await;
        return Debug::Destroy(Box::new(machine), None);
    }

    let target = access.addr;
    let user = access.user.clone();
    let host_key = access.host_key.clone();
    // Once the machine is gone (at the end of its time, or at once if keeping fails),
    // its records go, and then the repository's slot.
    let forget = forget_later();
    let on_destroyed: OnDestroyed = Box::pin(async move {
        if let Some(forget) = forget {
            forget.await;
        }
        slot.release().await;
    });
    let kept = match reservation.keep(machine, target, engine.hypervisor.clone(), Some(on_destroyed)) {
        Ok(kept) => kept,
        Err(refused) => {
            let (machine, forget) = *refused;
            say("##[warning]Debug SSH is unavailable right now (the orchestrator is stopping, or the port forward could not start). The machine is removed now.".to_owned()).await;
            return Debug::Destroy(Box::new(machine), forget);
        }
    };
    debug_assert_eq!(kept.port, port);
    let until = kept
        .expires_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| kept.expires_at.to_string());
    let n = keys.len();
    // Nothing secret below: a port, a host, a user name and public keys. These are the
    // job log's last lines, so the command is what a reader finds at its end.
    say(format!(
        "Debug SSH: this job failed and asked for debug access, so its machine is kept for {} (until {until}), then removed; the time cannot be extended.",
        human_duration(kept.ttl)
    ))
    .await;
    // What holds, and no more (issue #16): the job ran as root in this machine before it
    // was kept, so it may have left keys, an `sshd` of its own or any other backdoor
    // after `authorized_keys` was replaced. See docs/debug-ssh.md, "Security notes".
    say(format!(
        "Debug SSH: root's authorized_keys now holds the {n} public key(s) the forge publishes for the user who started this run; nothing else checks who logs in."
    ))
    .await;
    say("Debug SSH: the job ran as root in this machine before it was kept and may have left keys or a backdoor of its own: treat the machine as controlled by whoever wrote the job (no agent forwarding, no credentials of yours).".to_owned()).await;
    say(format!("Debug SSH: the machine's host key is {host_key}")).await;
    say("Debug SSH: connect with".to_owned()).await;
    say(format!("ssh -p {} {user}@{}", kept.port, kept.host)).await;
    Debug::Kept
}

/// The repository's one debug machine, claimed for `job` in this orchestrator's keeper
/// and then in the store (the same rule across the orchestrators sharing it); or the
/// line telling the user why not.
async fn reserve_debug_slot(
    engine: &EngineInner,
    keeper: &DebugKeeper,
    repository: &str,
    job: JobId,
) -> Result<(Reservation, SharedSlot), String> {
    let busy = |holder: JobId| {
        format!("##[warning]Debug SSH declined: the repository {repository} already has a machine kept for debugging (job {holder}); only one at a time. This machine is removed now.")
    };
    let reservation = keeper.reserve(repository, job).map_err(|declined| match declined {
        Declined::Busy(holder) => busy(holder),
        Declined::ShuttingDown => {
            "##[warning]Debug SSH declined: the orchestrator is shutting down. The machine is removed now.".to_owned()
        }
    })?;
    let slot = SharedSlot::claim(engine, repository, job, keeper.ttl()).await.map_err(|refused| match refused {
        SlotRefused::Busy(holder) => busy(holder),
        SlotRefused::Unavailable => {
            "##[warning]Debug SSH is unavailable right now (the job state store did not answer). The machine is removed now.".to_owned()
        }
    })?;
    Ok((reservation, slot))
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
    let mut job_contexts = JobContexts::new(job, machine);
    let mut added_env: BTreeMap<String, String> = BTreeMap::new();
    let mut added_path: Vec<String> = Vec::new();
    // The job's `env:` is evaluated once, now that the machine is known (GitHub's runner
    // does it when the job starts; an expression that fails there fails the job).
    let job_env = match job_env(job, &mut job_contexts) {
        Ok(env) => env,
        Err(message) => {
            emitter.log(None, LogStream::System, &format!("##[error]{message}")).await;
            return JobResult::Failure;
        }
    };
    // The event payload is a file before the first step, as on GitHub ("Set up job");
    // a machine where it cannot be written fails the job.
    if let Some(path) = event_path(machine)
        && let Err(e) = engine.executor.write_file(machine, &path, &event_payload(job), cancel).await
    {
        let message = format!("##[error]Could not write the event payload to {path}: {}", error_chain(&e));
        emitter.log(None, LogStream::System, &message).await;
        return JobResult::Failure;
    }
    let mut job_commands = JobCommands::default();

    for (index, step) in job.steps.iter().enumerate() {
        if cancel.is_cancelled() && status != JobStatus::Cancelled {
            status = if deadline.timed_out.load(std::sync::atomic::Ordering::SeqCst) {
                JobStatus::Failure
            } else {
                JobStatus::Cancelled
            };
        }

        // The `env` context before the step's own `env:` (job env, then `$GITHUB_ENV`
        // writes): the step's values are evaluated against it, as on GitHub.
        let mut env = job_env.clone();
        env.extend(added_env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut step_env = BTreeMap::new();
        let mut env_error = None;
        let base_contexts = job_contexts.at(&env, status);
        for (name, value) in &step.env {
            match interpolate(value, base_contexts) {
                Ok(value) => {
                    step_env.insert(name.clone(), value);
                }
                // The message goes to the job log (masked), never to the service log:
                // it may quote a secret.
                Err(e) => {
                    env_error.get_or_insert_with(|| format!("The step's env `{name}` could not be evaluated: {e}"));
                }
            }
        }
        env.extend(step_env);
        let contexts = job_contexts.at(&env, status);
        // Display names may use run-time contexts too; they are masked like log lines.
        let name = interpolate(&step.name, contexts).unwrap_or_else(|_| step.name.clone());
        let name = emitter.mask(&name);
        emitter.emit(JobEventKind::StepStarted { index, name }).await;
        let run = match evaluate_condition(step.condition.as_deref(), status, contexts) {
            Ok(run) => run,
            Err(message) => {
                emitter
                    .log(Some(index), LogStream::System, &format!("##[error]The step's `if:` could not be evaluated: {message}"))
                    .await;
                false_with_failure(&mut status);
                finish_step(emitter, job_contexts.steps_mut(), step, index, JobResult::Failure, JobResult::Failure, None, BTreeMap::new()).await;
                continue;
            }
        };
        if !run {
            finish_step(emitter, job_contexts.steps_mut(), step, index, JobResult::Skipped, JobResult::Skipped, None, BTreeMap::new()).await;
            continue;
        }
        let working_directory = match step.working_directory.as_deref().map(|dir| interpolate(dir, contexts)).transpose() {
            Ok(dir) => dir,
            Err(e) => {
                env_error.get_or_insert_with(|| format!("The step's `working-directory` could not be evaluated: {e}"));
                None
            }
        };
        if let Some(message) = env_error {
            emitter.log(Some(index), LogStream::System, &format!("##[error]{message}")).await;
            let conclusion =
                if continues_on_error(step, index, contexts, emitter).await { JobResult::Success } else { JobResult::Failure };
            if conclusion == JobResult::Failure {
                false_with_failure(&mut status);
            }
            finish_step(emitter, job_contexts.steps_mut(), step, index, JobResult::Failure, conclusion, None, BTreeMap::new()).await;
            continue;
        }
        let env = process_env(job, machine, &env);

        // A step that runs after the job was cancelled (always(), cancelled()) gets a
        // fresh token with a bounded time; otherwise the step shares the job's token.
        let step_cancel = if cancel.is_cancelled() { CancellationToken::new() } else { cancel.child_token() };
        let timeout = step_timeout(step, index, contexts, emitter).await;
        let limit = match (timeout, cancel.is_cancelled()) {
            (Some(t), true) => Some(t.min(CLEANUP_STEP_LIMIT)),
            (None, true) => Some(CLEANUP_STEP_LIMIT),
            (t, false) => t,
        };

        let settings = CommandSettings::new(&env, contexts, &machine.workspace);
        let mut step_commands = job_commands.step(index, settings);
        let started = Instant::now();
        let (exit, timed_out) = execute_step(
            engine, job, machine, step, index, env, working_directory, &added_path, contexts, emitter, &mut step_commands,
            step_cancel.clone(), limit,
        )
        .await;
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
        // The command files count even for a failed step (the runner reads them in a `finally`).
        if let Some(exit) = &exit {
            let shown = step_commands.files(&exit.files);
            commands::send(emitter, Some(index), shown).await;
        }
        let changes = step_commands.finish();
        // A command that could not be processed fails the step (`CommandResult`).
        let outcome = if changes.failed && outcome == JobResult::Success { JobResult::Failure } else { outcome };
        let conclusion = if outcome == JobResult::Failure && continues_on_error(step, index, contexts, emitter).await {
            JobResult::Success
        } else {
            outcome
        };
        match conclusion {
            JobResult::Failure if status == JobStatus::Success => status = JobStatus::Failure,
            JobResult::Cancelled => status = JobStatus::Cancelled,
            _ => {}
        }
        let exit_code = exit.as_ref().and_then(|e| e.exit_code);
        added_env.extend(changes.env);
        for dir in &changes.path {
            commands::add_path(&mut added_path, dir);
        }
        emitter
            .log(Some(index), LogStream::System, &format!("Step finished: {outcome} in {:.1} s", elapsed.as_secs_f64()))
            .await;
        finish_step(emitter, job_contexts.steps_mut(), step, index, outcome, conclusion, exit_code, changes.outputs).await;
    }
    match status {
        JobStatus::Success => JobResult::Success,
        JobStatus::Failure => JobResult::Failure,
        JobStatus::Cancelled => JobResult::Cancelled,
    }
}

/// The step's time limit: `timeout-minutes` as planned, or its run-time expression
/// evaluated now. As GitHub's runner does (actions/runner `StepsRunner.RunStepAsync`), a
/// value that cannot be evaluated, or is not a number, is reported as an error and the
/// step runs without a limit of its own (the job's limit still holds).
async fn step_timeout(step: &StepCommand, index: usize, contexts: &Map<String, Value>, emitter: &mut Emitter) -> Option<Duration> {
    match planned_timeout(step, contexts) {
        Ok(limit) => limit,
        Err(e) => {
            let message = format!("##[error]An error occurred when attempting to determine the step timeout: {}", error_chain(&e));
            emitter.log(Some(index), LogStream::System, &message).await;
            None
        }
    }
}

fn planned_timeout(step: &StepCommand, contexts: &Map<String, Value>) -> Result<Option<Duration>, solstice_workflow::SettingError> {
    let Some(text) = &step.timeout_expression else { return Ok(step.timeout) };
    let minutes = solstice_workflow::timeout_minutes_at_run_time(text, contexts)?;
    Ok(minutes.map(|m| Duration::from_secs(m.saturating_mul(60))))
}

/// Whether a failed step's failure is forgiven: `continue-on-error` as planned, or its
/// run-time expression evaluated now, once the step has failed, as GitHub's runner does
/// (actions/runner `StepsRunner.RunStepAsync`). A value that cannot be evaluated, or is not
/// a boolean, is reported and the step stays failed.
async fn continues_on_error(step: &StepCommand, index: usize, contexts: &Map<String, Value>, emitter: &mut Emitter) -> bool {
    let Some(text) = &step.continue_on_error_expression else { return step.continue_on_error };
    match solstice_workflow::continue_on_error_at_run_time(text, contexts) {
        Ok(forgiven) => forgiven,
        Err(e) => {
            let message = format!(
                "##[error]The step failed and an error occurred when attempting to determine whether to continue on error: {}",
                error_chain(&e)
            );
            emitter.log(Some(index), LogStream::System, &message).await;
            false
        }
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
    working_directory: Option<String>,
    added_path: &[String],
    contexts: &Map<String, Value>,
    emitter: &mut Emitter,
    commands: &mut StepCommands<'_>,
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
                        working_directory,
                        path: added_path.to_vec(),
                    };
                    engine.executor.run_script(machine, &run, &sink, &cancel).await.map_err(|e| error_chain(&e))
                }
                Err(e) => Err(format!("the step's script has an expression that could not be evaluated: {e}")),
            },
            StepAction::Checkout(checkout) => match &job.checkout {
                Some(source) => engine
                    .executor
                    .checkout(machine, source, checkout, &sink, &cancel)
                    .await
                    .map_err(|e| error_chain(&e)),
                None => Err("this job has no repository to check out".to_owned()),
            },
            StepAction::UnsupportedAction { message, .. } => Err(message.clone()),
            // Not yet: the action runtime (issue #17) replaces this arm.
            StepAction::Action(action) => Err(format!("the action '{}' cannot run on Solstice CI yet", action.uses)),
        };
        // Stop the timer once the step is over.
        cancel.cancel();
        result
    };
    // Workflow commands are honoured as the lines come, in order.
    let forward = async {
        while let Some(line) = rx.recv().await {
            let shown = commands.line(line.stream, &line.line);
            commands::send(emitter, Some(index), shown).await;
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

/// Runs `work` while logging, as they come, the lines sent to its sink (as lines of
/// `step`), then the rest until every sender of the sink is gone.
async fn log_while<T>(
    work: impl std::future::Future<Output = T>,
    mut lines: tokio::sync::mpsc::Receiver<OutputLine>,
    emitter: &mut Emitter,
    step: Option<usize>,
) -> T {
    tokio::pin!(work);
    let mut open = true;
    let done = loop {
        tokio::select! {
            // Lines first: what was sent before `work` ended is logged before it ends.
            biased;
            line = lines.recv(), if open => match line {
                Some(line) => emitter.log(step, line.stream, &line.line).await,
                None => open = false,
            },
            done = &mut work => break done,
        }
    };
    while let Some(line) = lines.recv().await {
        emitter.log(step, line.stream, &line.line).await;
    }
    done
}

/// Every line sent to a sink until all its senders are gone.
async fn collect_lines(mut lines: tokio::sync::mpsc::Receiver<OutputLine>) -> Vec<OutputLine> {
    let mut collected = Vec::new();
    while let Some(line) = lines.recv().await {
        collected.push(line);
    }
    collected
}

fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 && secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The limit a step gets from a run-time `timeout-minutes` (the integration tests cannot
    // wait minutes for one to fire): GitHub's runner arms `TimeSpan.FromMinutes(value)`
    // when the value is above 0 (actions/runner `StepsRunner.RunStepAsync`).
    #[test]
    fn a_run_time_timeout_becomes_the_step_limit() {
        let mut step = StepCommand::run("s", "true");
        step.timeout = Some(Duration::from_secs(60));
        step.timeout_expression = Some("${{ fromJSON(env.T) }}".to_owned());
        let contexts = json!({"env": {"T": "7"}}).as_object().cloned().unwrap_or_default();
        assert_eq!(planned_timeout(&step, &contexts).ok(), Some(Some(Duration::from_secs(7 * 60))));
        let zero = json!({"env": {"T": "0"}}).as_object().cloned().unwrap_or_default();
        assert_eq!(planned_timeout(&step, &zero).ok(), Some(None), "0 arms no limit");
        step.timeout_expression = None;
        assert_eq!(planned_timeout(&step, &contexts).ok(), Some(Some(Duration::from_secs(60))), "the planned limit without an expression");
    }
}
