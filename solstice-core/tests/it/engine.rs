//! The engine with scripted fakes: ordering, conditions, timeouts, cancellation,
//! masking and clean-up on every path.

use std::time::Duration;

use solstice_core::testing::{CountingHypervisor, ScriptedExecutor};
use solstice_core::{Engine, JobEventKind, JobRequest, JobResult, Secret, StepCommand};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::support::*;

fn engine(hv: &CountingHypervisor, ex: &ScriptedExecutor) -> Engine {
    Engine::builder().hypervisor(hv.clone()).executor(ex.clone()).build().expect("engine")
}

fn job(steps: Vec<StepCommand>) -> JobRequest {
    JobRequest::new("test", vec!["fake".into()], steps)
}

#[tokio::test]
async fn steps_run_in_order_and_the_machine_is_destroyed() {
    let (hv, ex) = (CountingHypervisor::new(), ScriptedExecutor::new());
    let steps = vec![
        StepCommand::run("one", "echo first"),
        StepCommand::run("two", "echo second\nwarn on stderr"),
        StepCommand::run("three", "echo third"),
    ];
    let (result, events) = engine(&hv, &ex).run_job_collect(job(steps)).await;
    assert_eq!(result, JobResult::Success);
    assert_well_formed(&events);
    assert_eq!(step_lines(&events, 0).first().map(String::as_str), Some("first"));
    assert_eq!(&step_lines(&events, 1)[..2], ["second", "on stderr"]);
    assert_eq!(step_lines(&events, 2).first().map(String::as_str), Some("third"));
    let started: Vec<usize> = events
        .iter()
        .filter_map(|e| match e.kind {
            JobEventKind::StepStarted { index, .. } => Some(index),
            _ => None,
        })
        .collect();
    assert_eq!(started, [0, 1, 2]);
    assert_eq!((hv.provisioned(), hv.destroyed()), (1, 1));
}

#[tokio::test]
async fn a_failed_step_skips_the_rest_but_not_failure_or_always_steps() {
    let (hv, ex) = (CountingHypervisor::new(), ScriptedExecutor::new());
    let steps = vec![
        StepCommand::run("fails", "echo going down\nexit 3"),
        StepCommand::run("skipped", "echo must not run"),
        step_if("on failure", "echo cleanup", "failure()"),
        step_if("always", "echo always", "${{ always() }}"),
        step_if("on success", "echo nope", "success()"),
    ];
    let (result, events) = engine(&hv, &ex).run_job_collect(job(steps)).await;
    assert_eq!(result, JobResult::Failure);
    assert_eq!(
        step_results(&events),
        [
            (0, JobResult::Failure, JobResult::Failure),
            (1, JobResult::Skipped, JobResult::Skipped),
            (2, JobResult::Success, JobResult::Success),
            (3, JobResult::Success, JobResult::Success),
            (4, JobResult::Skipped, JobResult::Skipped),
        ]
    );
    assert!(log_lines(&events).iter().any(|l| l.contains("exit code 3")));
    assert!(!log_lines(&events).iter().any(|l| l == "must not run" || l == "nope"));
    assert_eq!(ex.steps_run(), 3);
    assert_eq!(hv.destroyed(), 1);
}

#[tokio::test]
async fn continue_on_error_keeps_the_job_green() {
    let (hv, ex) = (CountingHypervisor::new(), ScriptedExecutor::new());
    let mut flaky = StepCommand::run("flaky", "exit 1");
    flaky.continue_on_error = true;
    let steps = vec![flaky, StepCommand::run("next", "echo still running")];
    let (result, events) = engine(&hv, &ex).run_job_collect(job(steps)).await;
    assert_eq!(result, JobResult::Success);
    assert_eq!(
        step_results(&events),
        [(0, JobResult::Failure, JobResult::Success), (1, JobResult::Success, JobResult::Success)]
    );
}

#[tokio::test]
async fn a_step_that_overruns_its_timeout_is_stopped_and_fails_the_job() {
    let (hv, ex) = (CountingHypervisor::new(), ScriptedExecutor::new());
    let mut slow = StepCommand::run("slow", "echo start\nsleep 60000\necho never");
    slow.timeout = Some(Duration::from_millis(200));
    let steps = vec![slow, StepCommand::run("after", "echo skipped")];
    let started = std::time::Instant::now();
    let (result, events) = engine(&hv, &ex).run_job_collect(job(steps)).await;
    assert!(started.elapsed() < Duration::from_secs(10), "timeout was not enforced");
    assert_eq!(result, JobResult::Failure);
    assert_eq!(
        step_results(&events),
        [(0, JobResult::Failure, JobResult::Failure), (1, JobResult::Skipped, JobResult::Skipped)]
    );
    assert!(log_lines(&events).iter().any(|l| l.contains("longer than its limit")));
    assert_eq!(hv.destroyed(), 1);
}

#[tokio::test]
async fn the_job_timeout_stops_the_job_as_a_failure() {
    let (hv, ex) = (CountingHypervisor::new(), ScriptedExecutor::new());
    let mut j = job(vec![StepCommand::run("slow", "sleep 60000")]);
    j.timeout = Duration::from_millis(300);
    let (result, events) = engine(&hv, &ex).run_job_collect(j).await;
    assert_eq!(result, JobResult::Failure);
    assert!(log_lines(&events).iter().any(|l| l.contains("job ran longer")));
    assert_eq!(hv.destroyed(), 1);
}

#[tokio::test]
async fn cancellation_stops_the_step_runs_cleanup_and_reports_cancelled() {
    let (hv, ex) = (CountingHypervisor::new(), ScriptedExecutor::new());
    let steps = vec![
        StepCommand::run("long", "echo working\nsleep 60000"),
        StepCommand::run("next", "echo not after cancel"),
        step_if("cleanup", "echo cleaning up", "cancelled()"),
    ];
    let engine = engine(&hv, &ex);
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(64);
    let j = job(steps);
    let run = engine.run_job(&j, tx, cancel.clone());
    let watch = async {
        let mut events = Vec::new();
        while let Some(event) = rx.recv().await {
            if matches!(&event.kind, JobEventKind::Log { line, .. } if line == "working") {
                cancel.cancel();
            }
            events.push(event);
        }
        events
    };
    let (result, events) = tokio::join!(run, watch);
    assert_eq!(result, JobResult::Cancelled);
    assert_well_formed(&events);
    assert_eq!(
        step_results(&events),
        [
            (0, JobResult::Cancelled, JobResult::Cancelled),
            (1, JobResult::Skipped, JobResult::Skipped),
            (2, JobResult::Success, JobResult::Success),
        ]
    );
    assert!(log_lines(&events).iter().any(|l| l == "cleaning up"));
    assert_eq!(hv.destroyed(), 1);
}

#[tokio::test]
async fn cancelling_during_provisioning_leaves_nothing_to_destroy() {
    let hv = CountingHypervisor::new().with_delay(Duration::from_secs(60));
    let ex = ScriptedExecutor::new();
    let engine = engine(&hv, &ex);
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(64);
    let j = job(vec![StepCommand::run("never", "echo no")]);
    let canceller = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cancel.cancel();
    };
    let collect = async {
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
        events
    };
    let (result, (), events) = tokio::join!(engine.run_job(&j, tx, cancel.clone()), canceller, collect);
    assert_eq!(result, JobResult::Cancelled);
    assert_well_formed(&events);
    assert_eq!((hv.provisioned(), hv.destroyed(), ex.steps_run()), (0, 0, 0));
}

#[tokio::test]
async fn a_panicking_executor_fails_the_job_and_the_machine_is_still_destroyed() {
    let (hv, ex) = (CountingHypervisor::new(), ScriptedExecutor::new());
    let steps = vec![StepCommand::run("boom", "echo before\npanic"), StepCommand::run("after", "echo x")];
    let (result, events) = engine(&hv, &ex).run_job_collect(job(steps)).await;
    assert_eq!(result, JobResult::Failure);
    assert_well_formed(&events);
    assert!(log_lines(&events).iter().any(|l| l.contains("panic")));
    assert_eq!((hv.provisioned(), hv.destroyed()), (1, 1));
}

#[tokio::test]
async fn a_machine_that_cannot_be_provisioned_fails_the_job_with_the_reason() {
    let (hv, ex) = (CountingHypervisor::failing(), ScriptedExecutor::new());
    let (result, events) = engine(&hv, &ex).run_job_collect(job(vec![StepCommand::run("x", "echo x")])).await;
    assert_eq!(result, JobResult::Failure);
    assert!(log_lines(&events).iter().any(|l| l.contains("told to fail")));
    assert_eq!(ex.steps_run(), 0);
}

#[tokio::test]
async fn secrets_and_add_mask_values_never_leave_the_engine() {
    let (hv, ex) = (CountingHypervisor::new(), ScriptedExecutor::new());
    let steps = vec![
        StepCommand::run("leak", "echo token is hunter2!\nwarn hunter2\noutput out=hunter2"),
        StepCommand::run("mask", "echo ::add-mask::runtime-value\necho saw runtime-value here"),
        StepCommand::run("multi", "echo line-b of a multi-line secret"),
    ];
    let mut j = job(steps);
    j.steps[0].id = Some("leak".into());
    j.secrets = vec![Secret::new("hunter2"), Secret::new("line-a\nline-b")];
    let (result, events) = engine(&hv, &ex).run_job_collect(j).await;
    assert_eq!(result, JobResult::Success);
    let all = format!("{events:?}");
    assert!(!all.contains("hunter2"), "a secret leaked: {all}");
    assert!(!all.contains("runtime-value"), "an add-mask value leaked");
    assert!(!all.contains("line-b"), "a line of a multi-line secret leaked");
    let lines = log_lines(&events);
    assert!(lines.contains(&"token is ***!".to_owned()));
    assert!(lines.contains(&"saw *** here".to_owned()));
}

#[tokio::test]
async fn outputs_and_exported_env_reach_later_steps() {
    let (hv, ex) = (CountingHypervisor::new(), ScriptedExecutor::new());
    let mut first = StepCommand::run("produce", "output answer=42\nexport FROM_STEP=yes");
    first.id = Some("produce".into());
    let mut with_env = StepCommand::run("env expression", "env ANSWER");
    with_env.env.insert("ANSWER".into(), "got ${{ steps.produce.outputs.answer }}".into());
    let steps = vec![
        first,
        StepCommand::run("consume", "env FROM_STEP"),
        with_env,
        step_if("conditional", "echo ran because of output", "steps.produce.outputs.answer == '42'"),
    ];
    let (result, events) = engine(&hv, &ex).run_job_collect(job(steps)).await;
    assert_eq!(result, JobResult::Success);
    assert_eq!(step_lines(&events, 1).first().map(String::as_str), Some("yes"));
    assert_eq!(step_lines(&events, 2).first().map(String::as_str), Some("got 42"));
    assert!(step_lines(&events, 3).contains(&"ran because of output".to_owned()));
}

/// The boot console reaches the job's log while the machine is still booting, not
/// once it is ready: a guest that takes minutes to boot (or never comes up) shows its
/// progress as it happens.
#[tokio::test(start_paused = true)]
async fn the_boot_console_streams_while_the_machine_boots() {
    const BOOT: Duration = Duration::from_secs(30);
    let (hv, ex) = (
        CountingHypervisor::new().with_delay(BOOT),
        ScriptedExecutor::new(),
    );
    let engine = engine(&hv, &ex);
    let (tx, mut rx) = mpsc::channel(64);
    let started = tokio::time::Instant::now();
    let run = tokio::spawn(async move {
        let job = job(vec![StepCommand::run("one", "echo hi")]);
        engine.run_job(&job, tx, CancellationToken::new()).await
    });
    let mut console_seen_after = None;
    while let Some(event) = rx.recv().await {
        if let JobEventKind::Log { line, .. } = &event.kind
            && line == "fake machine booting"
        {
            console_seen_after = Some(started.elapsed());
        }
    }
    assert_eq!(run.await.expect("the job ran"), JobResult::Success);
    let seen_after = console_seen_after.expect("the console line was logged");
    assert!(
        seen_after < BOOT,
        "the console line arrived after {seen_after:?}, only once the {BOOT:?} boot was over"
    );
}
