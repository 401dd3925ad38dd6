//! Expressions evaluated when the job and each step run, with the contexts of that
//! moment, and the environment layered as GitHub layers it; through the planner and the
//! host executor, as `solstice run --host` runs a workflow.

use serde_json::json;
use solstice_core::{Engine, HostExecutor, HostHypervisor, JobEvent, JobEventKind, JobOrigin, JobResult, job_request_from_plan};
use solstice_workflow::{PlanOptions, plan_workflow};

use crate::support::*;

async fn run_workflow(yaml: &str) -> (JobResult, Vec<JobEvent>, String) {
    let scratch = tempfile::tempdir().expect("tempdir");
    let hv = HostHypervisor::new().in_dir(scratch.path());
    let engine = Engine::builder().hypervisor(hv).executor(HostExecutor::new()).build().expect("engine");
    let options = PlanOptions::new().context("github", json!({ "sha": "0123abcd", "repository": "octo/demo", "workspace": "" }));
    let plan = plan_workflow(yaml, "ci.yml", &options).expect("plans");
    let job = job_request_from_plan(&plan.jobs[0], JobOrigin::default());
    let (result, events) = engine.run_job_collect(job).await;
    (result, events, scratch.path().to_string_lossy().into_owned())
}

/// GitHub: `github.workspace` and `runner.*` are known when the job runs, not when the
/// workflow is read; `working-directory`, `env` (job and step) and `run` are evaluated
/// then ("Contexts" docs: `github.workspace`, and the context availability table, where
/// `jobs.<job_id>.steps.working-directory` may use `runner`).
#[tokio::test]
async fn the_workspace_and_the_runner_are_known_when_the_job_runs() {
    let yaml = r#"
on: push
jobs:
  build:
    runs-on: host
    env:
      OUT: ${{ github.workspace }}/out
    steps:
      - run: mkdir -p build && echo "JOB=$OUT"
      - working-directory: ${{ github.workspace }}/build
        env:
          WHERE: ${{ runner.os }}:${{ github.sha }}
        run: echo "PWD=$PWD WHERE=$WHERE SCRIPT=${{ github.workspace }}"
"#;
    let (result, events, scratch) = run_workflow(yaml).await;
    assert_eq!(result, JobResult::Success, "{:#?}", log_lines(&events));
    let job_line = step_lines(&events, 0).into_iter().find(|l| l.starts_with("JOB=")).expect("JOB line");
    assert!(job_line.starts_with(&format!("JOB={scratch}")) && job_line.ends_with("/out"), "{job_line}");
    let line = step_lines(&events, 1).into_iter().find(|l| l.starts_with("PWD=")).expect("PWD line");
    let workspace = job_line.trim_start_matches("JOB=").trim_end_matches("/out");
    assert_eq!(line, format!("PWD={workspace}/build WHERE={}:0123abcd SCRIPT={workspace}", solstice_core::RunnerInfo::host_os()));
}

/// GitHub: a `$GITHUB_ENV` write overrides the job's and the workflow's `env:` for the
/// steps after it, but a step's own `env:` still wins, and `GITHUB_*` defaults cannot
/// be overwritten ("Store information in variables": "You can't overwrite the value of
/// the default environment variables named `GITHUB_*` and `RUNNER_*`").
#[tokio::test]
async fn github_env_writes_override_the_job_env_and_step_env_overrides_them() {
    let yaml = r#"
on: push
env:
  LEVEL: workflow
jobs:
  build:
    runs-on: host
    env:
      MODE: job
    steps:
      - run: |
          echo "LEVEL=from-file" >> "$GITHUB_ENV"
          echo "MODE=from-file" >> "$GITHUB_ENV"
          echo "GITHUB_SHA=forged" >> "$GITHUB_ENV"
      - env:
          MODE: step
        run: echo "LEVEL=$LEVEL MODE=$MODE SHA=$GITHUB_SHA CTX=${{ env.LEVEL }}/${{ env.MODE }}"
      - run: echo "AFTER=$MODE"
"#;
    let (result, events, _) = run_workflow(yaml).await;
    assert_eq!(result, JobResult::Success, "{:#?}", log_lines(&events));
    assert!(
        step_lines(&events, 1).contains(&"LEVEL=from-file MODE=step SHA=0123abcd CTX=from-file/step".to_owned()),
        "{:#?}",
        step_lines(&events, 1)
    );
    assert!(step_lines(&events, 2).contains(&"AFTER=from-file".to_owned()), "{:#?}", step_lines(&events, 2));
}

/// GitHub's runner fails a step whose `env:` cannot be evaluated (and does not run it);
/// here the message goes to the job log, masked, not to the service log.
#[tokio::test]
async fn a_step_env_that_cannot_be_evaluated_fails_that_step_only_when_it_runs() {
    let yaml = r#"
on: push
jobs:
  build:
    runs-on: host
    steps:
      - if: failure()
        env:
          BAD: ${{ fromJSON('{') }}
        run: echo never
      - env:
          BAD: ${{ fromJSON('{') }}
        run: echo never either
      - if: always()
        run: echo "cleanup ran"
"#;
    let (result, events, _) = run_workflow(yaml).await;
    assert_eq!(result, JobResult::Failure);
    let results = step_results(&events);
    assert_eq!(results[0].1, JobResult::Skipped, "a skipped step's env is not evaluated");
    assert_eq!(results[1].1, JobResult::Failure);
    assert!(step_lines(&events, 1).iter().any(|l| l.starts_with("##[error]The step's env `BAD` could not be evaluated")));
    assert!(!step_lines(&events, 1).iter().any(|l| l.contains("never either")));
    assert!(step_lines(&events, 2).contains(&"cleanup ran".to_owned()));
}

/// A step's display name may read run-time contexts (`steps`, `runner`); it is shown
/// evaluated when the step starts.
#[tokio::test]
async fn step_names_are_evaluated_when_the_step_starts() {
    let yaml = r#"
on: push
jobs:
  build:
    runs-on: host
    steps:
      - id: v
        run: echo "version=1.2" >> "$GITHUB_OUTPUT"
      - name: Release ${{ steps.v.outputs.version }} on ${{ runner.os }}
        run: true
"#;
    let (result, events, _) = run_workflow(yaml).await;
    assert_eq!(result, JobResult::Success);
    let names: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.kind {
            JobEventKind::StepStarted { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(names[1], format!("Release 1.2 on {}", solstice_core::RunnerInfo::host_os()));
}

/// GitHub's docs (default environment variables): `GITHUB_EVENT_PATH` is "the path to the
/// file on the runner that contains the full event webhook payload", and
/// `github.event_path` names the same file; the runner writes it under `RUNNER_TEMP`
/// before the first step (actions/runner `JobExtension.cs`, `_github_workflow/event.json`).
#[tokio::test]
async fn the_event_payload_is_a_file_before_the_first_step() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let hv = HostHypervisor::new().in_dir(scratch.path());
    let engine = Engine::builder().hypervisor(hv).executor(HostExecutor::new()).build().expect("engine");
    let event = json!({ "pull_request": { "number": 42, "title": "it's \"quoted\"\nand multi-line" } });
    let options = PlanOptions::new().context("github", json!({ "event_name": "pull_request", "event": event, "workspace": "" }));
    let yaml = r#"
on: pull_request
jobs:
  build:
    runs-on: host
    steps:
      - run: |
          grep -q '"number":42' "$GITHUB_EVENT_PATH" && echo found-the-number
          test "$GITHUB_EVENT_PATH" = "${{ github.event_path }}" && echo same-path
          case "$GITHUB_EVENT_PATH" in "$RUNNER_TEMP"/*) echo under-runner-temp ;; esac
"#;
    let plan = plan_workflow(yaml, "ci.yml", &options).expect("plans");
    let job = job_request_from_plan(&plan.jobs[0], JobOrigin::default());
    let (result, events) = engine.run_job_collect(job).await;
    assert_eq!(result, JobResult::Success, "{:#?}", log_lines(&events));
    assert_eq!(step_lines(&events, 0)[..3], ["found-the-number", "same-path", "under-runner-temp"]);
}
