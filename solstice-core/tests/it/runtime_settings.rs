//! `continue-on-error` and `timeout-minutes` written as expressions over run-time contexts
//! (`steps`, `env`), evaluated by the engine when the step runs, as GitHub's runner does
//! (actions/runner `src/Runner.Worker/StepsRunner.cs`, `RunStepAsync`: the timeout is
//! evaluated before the step starts, `continue-on-error` once the step has failed; an
//! evaluation error is reported as an error, and the step then has no timeout of its own,
//! or stays failed). Through the planner and the host executor.

use serde_json::json;
use solstice_core::{Engine, HostExecutor, HostHypervisor, JobEvent, JobOrigin, JobResult, job_request_from_plan};
use solstice_workflow::{PlanOptions, plan_workflow};

use crate::support::*;

async fn run_workflow(yaml: &str) -> (JobResult, Vec<JobEvent>) {
    let scratch = tempfile::tempdir().expect("tempdir");
    let hv = HostHypervisor::new().in_dir(scratch.path());
    let engine = Engine::builder().hypervisor(hv).executor(HostExecutor::new()).build().expect("engine");
    let options = PlanOptions::new().context("github", json!({ "workspace": "" }));
    let plan = plan_workflow(yaml, "ci.yml", &options).expect("plans");
    let job = job_request_from_plan(&plan.jobs[0], JobOrigin::default());
    engine.run_job_collect(job).await
}

/// GitHub's docs (workflow syntax, `jobs.<job_id>.steps[*].continue-on-error`) and context
/// availability table: the value may read `steps` and `env`, so it is known only while the
/// job runs. A forgiven step has outcome `failure` and conclusion `success`.
#[tokio::test]
async fn continue_on_error_reads_the_steps_and_env_of_that_moment() {
    let yaml = r#"
on: push
jobs:
  build:
    runs-on: host
    env:
      FORGIVE: "false"
    steps:
      - id: probe
        run: echo flaky=yes >> "$GITHUB_OUTPUT"
      - continue-on-error: ${{ steps.probe.outputs.flaky == 'yes' }}
        run: exit 3
      - continue-on-error: ${{ fromJSON(env.FORGIVE) }}
        run: exit 4
"#;
    let (result, events) = run_workflow(yaml).await;
    let results = step_results(&events);
    assert_eq!(results[1], (1, JobResult::Failure, JobResult::Success), "{:#?}", log_lines(&events));
    assert_eq!(results[2], (2, JobResult::Failure, JobResult::Failure), "{:#?}", log_lines(&events));
    assert_eq!(result, JobResult::Failure, "the unforgiven step fails the job");
}

/// actions/runner `PipelineTemplateConverter.ConvertToStepContinueOnError` asserts a
/// boolean: the string `'true'` is not one, so the step stays failed and the error says why.
#[tokio::test]
async fn continue_on_error_that_is_not_a_boolean_leaves_the_step_failed_and_says_why() {
    let yaml = r#"
on: push
jobs:
  build:
    runs-on: host
    steps:
      - continue-on-error: ${{ env.NOPE || 'true' }}
        run: exit 1
"#;
    let (result, events) = run_workflow(yaml).await;
    assert_eq!(result, JobResult::Failure);
    assert_eq!(step_results(&events)[0], (0, JobResult::Failure, JobResult::Failure));
    let lines = step_lines(&events, 0);
    assert!(
        lines.iter().any(|l| l.starts_with("##[error]The step failed and an error occurred when attempting to determine whether to continue on error")
            && l.contains("must be a boolean (true or false), not 'true'")),
        "{lines:#?}"
    );
}

/// actions/runner `StepsRunner.RunStepAsync`: a `timeout-minutes` that cannot be determined
/// is reported ("An error occurred when attempting to determine the step timeout.") and the
/// step runs without a limit of its own; `PipelineTemplateConverter.ConvertToStepTimeout`
/// asserts a number, so the string from `env` is refused while `fromJSON(env.T)` is a number.
#[tokio::test]
async fn timeout_minutes_is_evaluated_when_the_step_starts() {
    let yaml = r#"
on: push
jobs:
  build:
    runs-on: host
    steps:
      - run: echo T=5 >> "$GITHUB_ENV"
      - timeout-minutes: ${{ env.T }}
        run: echo ran-without-a-limit
      - timeout-minutes: ${{ fromJSON(env.T) }}
        run: echo ran-with-a-limit
"#;
    let (result, events) = run_workflow(yaml).await;
    assert_eq!(result, JobResult::Success, "{:#?}", log_lines(&events));
    let refused = step_lines(&events, 1);
    assert!(
        refused.iter().any(|l| l.starts_with("##[error]An error occurred when attempting to determine the step timeout")
            && l.contains("must be a number of minutes, not '5'")),
        "{refused:#?}"
    );
    assert!(refused.iter().any(|l| l == "ran-without-a-limit"), "{refused:#?}");
    let accepted = step_lines(&events, 2);
    assert!(!accepted.iter().any(|l| l.contains("##[error]")), "{accepted:#?}");
    assert!(accepted.iter().any(|l| l == "ran-with-a-limit"), "{accepted:#?}");
}
