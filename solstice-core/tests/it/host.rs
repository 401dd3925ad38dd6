//! The host hypervisor and executor with real processes.

use std::time::Duration;

use solstice_core::{
    Engine, HostExecutor, HostHypervisor, JobRequest, JobResult, LogSink, MachineRequest, JobId,
    Hypervisor, ProvisionContext, ScriptRun, StepCommand, StepExecutor,
};
use tokio_util::sync::CancellationToken;

use crate::support::*;

fn host_engine(hv: &HostHypervisor) -> Engine {
    Engine::builder().hypervisor(hv.clone()).executor(HostExecutor::new()).build().expect("engine")
}

#[tokio::test]
async fn a_host_job_runs_real_processes_in_a_workspace_that_disappears() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let hv = HostHypervisor::new().in_dir(scratch.path());
    let mut produce = StepCommand::run(
        "produce",
        "echo \"in $GITHUB_WORKSPACE\"\necho hello > file.txt\necho 'answer=42' >> \"$GITHUB_OUTPUT\"\necho 'LATER=from-env' >> \"$GITHUB_ENV\"\necho oops >&2",
    );
    produce.id = Some("produce".into());
    let consume = StepCommand::run("consume", "cat file.txt\necho \"$LATER\"\necho \"${{ steps.produce.outputs.answer }}\"");
    let job = JobRequest::new("host job", vec!["host".into()], vec![produce, consume]);
    let (result, events) = host_engine(&hv).run_job_collect(job).await;
    assert_eq!(result, JobResult::Success, "{:#?}", log_lines(&events));
    let first = step_lines(&events, 0);
    assert!(first.iter().any(|l| l.starts_with("in ") && l.contains(&scratch.path().to_string_lossy().into_owned())));
    assert!(first.contains(&"oops".to_owned()));
    assert_eq!(&step_lines(&events, 1)[..3], ["hello", "from-env", "42"]);
    assert_eq!(hv.live_machines(), 0);
    let left: Vec<_> = std::fs::read_dir(scratch.path()).expect("read_dir").collect();
    assert!(left.is_empty(), "workspace left behind: {left:?}");
}

#[tokio::test]
async fn a_failing_command_fails_with_its_exit_code_under_bash_errexit() {
    let hv = HostHypervisor::new();
    let job = JobRequest::new(
        "fails",
        vec!["host".into()],
        vec![StepCommand::run("fail", "false\necho not reached"), StepCommand::run("after", "echo skipped")],
    );
    let (result, events) = host_engine(&hv).run_job_collect(job).await;
    assert_eq!(result, JobResult::Failure);
    let lines = log_lines(&events);
    assert!(lines.iter().any(|l| l.contains("exit code 1")));
    assert!(!lines.contains(&"not reached".to_owned()));
}

#[tokio::test]
async fn a_timed_out_host_step_kills_its_whole_process_group() {
    let hv = HostHypervisor::new();
    let marker = tempfile::tempdir().expect("tempdir");
    let path = marker.path().join("late");
    // A background child that would write the marker after the timeout.
    let script = format!("(sleep 3; touch {}) &\nsleep 60", path.display());
    let mut step = StepCommand::run("slow", script);
    step.timeout = Some(Duration::from_millis(500));
    let job = JobRequest::new("slow", vec!["host".into()], vec![step]);
    let started = std::time::Instant::now();
    let (result, _events) = host_engine(&hv).run_job_collect(job).await;
    assert_eq!(result, JobResult::Failure);
    assert!(started.elapsed() < Duration::from_secs(10));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!path.exists(), "a process of the killed step survived");
}

#[tokio::test]
async fn output_is_streamed_while_the_step_runs() {
    let hv = HostHypervisor::new();
    let request = MachineRequest { job_id: JobId::new(), label: "host".into(), debug_ssh: false };
    let (sink, mut rx) = LogSink::channel(16);
    let cancel = CancellationToken::new();
    let machine = hv.provision(&request, &ProvisionContext::new(&sink, &cancel)).await.expect("machine");
    let step = ScriptRun {
        index: 0,
        script: "echo early\nsleep 2\necho late".into(),
        shell: "sh -e {0}".into(),
        env: Default::default(),
        working_directory: None,
        path: vec![],
    };
    let exec = HostExecutor::new();
    let started = std::time::Instant::now();
    let run = exec.run_script(&machine, &step, &sink, &cancel);
    let first = async {
        let line = rx.recv().await.map(|l| l.line);
        (line, started.elapsed())
    };
    let (exit, (line, at)) = tokio::join!(run, first);
    assert_eq!(line.as_deref(), Some("early"));
    assert!(at < Duration::from_millis(1500), "first line arrived only after {at:?}");
    assert!(exit.expect("exit").succeeded());
    hv.destroy(&machine).await.expect("destroy");
}

/// A job planned from a workflow: the built-in checkout's place is taken by a `run` step
/// here, and an action the runner cannot run yet is guarded by `if:` (issue 15).
fn planned_job(workflow: &str) -> JobRequest {
    let plan = solstice_workflow::plan_workflow(workflow, "ci.yml", &solstice_workflow::PlanOptions::new()).expect("plans");
    solstice_core::job_request_from_plan(&plan.jobs[0], solstice_core::JobOrigin::default())
}

#[tokio::test]
async fn an_action_the_runner_cannot_run_is_skipped_when_its_condition_is_false() {
    let hv = HostHypervisor::new();
    let job = planned_job("on: push\njobs:\n  build:\n    runs-on: host\n    steps:\n      - run: echo built\n      - name: Report\n        if: failure()\n        uses: ./.github/actions/report\n      - run: echo after\n");
    let (result, events) = host_engine(&hv).run_job_collect(job).await;
    assert_eq!(result, JobResult::Success, "{:#?}", log_lines(&events));
    assert_eq!(
        step_results(&events),
        [
            (0, JobResult::Success, JobResult::Success),
            (1, JobResult::Skipped, JobResult::Skipped),
            (2, JobResult::Success, JobResult::Success),
        ]
    );
    assert!(!log_lines(&events).iter().any(|l| l.contains("##[error]")), "{:#?}", log_lines(&events));
}

#[tokio::test]
async fn an_action_the_runner_cannot_run_fails_the_job_with_the_reason_when_it_runs() {
    let hv = HostHypervisor::new();
    let job = planned_job("on: push\njobs:\n  build:\n    runs-on: host\n    steps:\n      - run: echo built\n      - uses: actions/setup-node@v4\n        with:\n          node-version: 20\n      - run: echo not reached\n      - if: failure()\n        run: echo cleaning up\n");
    let (result, events) = host_engine(&hv).run_job_collect(job).await;
    assert_eq!(result, JobResult::Failure);
    assert_eq!(
        step_results(&events),
        [
            (0, JobResult::Success, JobResult::Success),
            (1, JobResult::Failure, JobResult::Failure),
            (2, JobResult::Skipped, JobResult::Skipped),
            (3, JobResult::Success, JobResult::Success),
        ]
    );
    let error = step_lines(&events, 1);
    assert!(
        error.iter().any(|l| l.starts_with("##[error]the action 'actions/setup-node@v4' cannot run on Solstice CI yet")),
        "{error:#?}"
    );
    assert_eq!(step_lines(&events, 3).first().map(String::as_str), Some("cleaning up"));
    assert_eq!(hv.live_machines(), 0);
}
