//! Whole workflows on the host executor: `needs` order, job conditions over the needs
//! chain, needs outputs and matrices built from them.

use std::sync::Arc;

use serde_json::json;
use solstice_core::{
    Engine, HostExecutor, HostHypervisor, JobEventKind, JobQueue, JobResult, MemoryQueue, WorkflowEvent, WorkflowOutcome,
    WorkflowRun, WorkflowRunBuilder,
};
use solstice_workflow::{PlanOptions, plan_workflow};
use tokio_util::sync::CancellationToken;

/// Plans `yaml`, runs it on this host through a memory queue and returns the outcome
/// and every event.
async fn run_workflow(
    yaml: &str,
    options: PlanOptions,
    settings: impl FnOnce(WorkflowRunBuilder) -> WorkflowRunBuilder,
) -> (WorkflowOutcome, Vec<WorkflowEvent>) {
    let plan = plan_workflow(yaml, "ci.yml", &options).expect("the workflow plans");
    let engine = Engine::builder().hypervisor(HostHypervisor::new()).executor(HostExecutor::new()).build().expect("engine");
    let queue: Arc<dyn JobQueue> = Arc::new(MemoryQueue::new());
    let (stop, abort) = (CancellationToken::new(), CancellationToken::new());
    let serving = tokio::spawn({
        let (engine, queue, stop, abort) = (engine.clone(), queue.clone(), stop.clone(), abort.clone());
        async move { engine.serve(queue, &["host".to_owned()], stop, abort).await }
    });
    let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
    let collect = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(event) = rx.recv().await {
            events.push(event);
        }
        events
    });
    let run = settings(WorkflowRun::builder(plan, options).labels(vec!["host".into()])).build().expect("builds");
    let outcome = run.run(queue, tx, abort).await.expect("runs");
    stop.cancel();
    serving.await.expect("joins").expect("serves");
    (outcome, collect.await.expect("joins"))
}

fn result_of<'a>(outcome: &'a WorkflowOutcome, name: &str) -> Option<&'a JobResult> {
    outcome.jobs.iter().find(|(n, _)| n == name).map(|(_, r)| r)
}

fn log_lines(events: &[WorkflowEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            WorkflowEvent::Job(event) => match &event.kind {
                JobEventKind::Log { line, step: Some(_), .. } => Some(line.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn started(events: &[WorkflowEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            WorkflowEvent::JobStarted { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect()
}

// GitHub: "If a run contains a series of jobs that need each other, a failure or skip
// applies to all jobs in the dependency chain from the point of failure or skip onwards.
// If you would like a job to run even if a job it is dependent on did not succeed, use the
// always() conditional expression" (docs.github.com/actions/writing-workflows/
// workflow-syntax-for-github-actions, `jobs.<job_id>.needs`).
const CHAIN: &str = r#"
on: push
jobs:
  broken:
    runs-on: host
    steps:
      - run: exit 3
  cleanup:
    needs: broken
    if: always()
    runs-on: host
    steps:
      - run: echo cleanup saw ${{ needs.broken.result }}
  after-cleanup:
    needs: cleanup
    runs-on: host
    steps:
      - run: echo must not run
  report:
    needs: after-cleanup
    if: always()
    runs-on: host
    steps:
      - run: echo report runs
"#;

#[tokio::test]
async fn a_failure_up_the_needs_chain_skips_a_job_whose_direct_needs_succeeded() {
    let (outcome, events) = run_workflow(CHAIN, PlanOptions::new(), |b| b).await;
    assert_eq!(result_of(&outcome, "broken"), Some(&JobResult::Failure));
    assert_eq!(result_of(&outcome, "cleanup"), Some(&JobResult::Success), "always() runs after a failure");
    assert_eq!(result_of(&outcome, "after-cleanup"), Some(&JobResult::Skipped), "its ancestor failed");
    assert_eq!(result_of(&outcome, "report"), Some(&JobResult::Success));
    let lines = log_lines(&events);
    assert!(lines.contains(&"cleanup saw failure".to_owned()), "{lines:?}");
    assert!(!lines.iter().any(|l| l == "must not run"));
    assert!(lines.contains(&"report runs".to_owned()));
    assert_eq!(outcome.not_succeeded(), 1);
}

#[tokio::test]
async fn job_outputs_flow_into_needs_of_later_jobs() {
    let yaml = r#"
on: push
jobs:
  consume:
    needs: produce
    runs-on: host
    steps:
      - run: echo "got ${{ needs.produce.outputs.word }} and ${{ needs.produce.outputs.both }}"
  produce:
    runs-on: host
    outputs:
      word: ${{ steps.w.outputs.word }}
      both: ${{ steps.w.outputs.word }}-${{ steps.n.outputs.number }}
    steps:
      - id: w
        run: echo word=hello >> "$GITHUB_OUTPUT"
      - id: n
        run: echo number=7 >> "$GITHUB_OUTPUT"
"#;
    let (outcome, events) = run_workflow(yaml, PlanOptions::new(), |b| b).await;
    assert_eq!(outcome.jobs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["produce", "consume"], "needs order, not file order");
    assert_eq!(outcome.not_succeeded(), 0);
    assert!(log_lines(&events).contains(&"got hello and hello-7".to_owned()), "{:?}", log_lines(&events));
}

// GitHub expands a matrix built from a needed job's outputs once that job finished
// (docs.github.com/actions/writing-workflows/choosing-what-your-workflow-does/
// running-variations-of-jobs-in-a-workflow, "Using an output to define two matrices").
#[tokio::test]
async fn a_matrix_from_needs_outputs_expands_into_one_job_per_combination() {
    let yaml = r#"
on: push
jobs:
  setup:
    runs-on: host
    outputs:
      matrix: ${{ steps.m.outputs.matrix }}
      colours: ${{ steps.m.outputs.colours }}
    steps:
      - id: m
        run: |
          echo 'matrix={"shape":["circle","square","star"]}' >> "$GITHUB_OUTPUT"
          echo 'colours=["red","blue"]' >> "$GITHUB_OUTPUT"
  whole:
    needs: setup
    runs-on: host
    strategy:
      matrix: ${{ fromJSON(needs.setup.outputs.matrix) }}
    steps:
      - run: echo "shape ${{ matrix.shape }} ${{ strategy.job-index }}/${{ strategy.job-total }}"
  by-key:
    needs: setup
    runs-on: host
    strategy:
      matrix:
        colour: ${{ fromJSON(needs.setup.outputs.colours) }}
        size: [1]
    steps:
      - run: echo "colour ${{ matrix.colour }}"
"#;
    let (outcome, events) = run_workflow(yaml, PlanOptions::new(), |b| b).await;
    assert_eq!(outcome.not_succeeded(), 0, "{outcome:?}");
    assert_eq!(
        started(&events),
        ["setup", "whole (circle)", "whole (square)", "whole (star)", "by-key (red, 1)", "by-key (blue, 1)"]
    );
    let lines = log_lines(&events);
    for expected in ["shape circle 0/3", "shape star 2/3", "colour red", "colour blue"] {
        assert!(lines.contains(&expected.to_owned()), "{expected} missing from {lines:?}");
    }
}

#[tokio::test]
async fn a_matrix_that_still_cannot_be_evaluated_fails_the_job_without_running_it() {
    let yaml = r#"
on: push
jobs:
  setup:
    runs-on: host
    steps:
      - run: echo nothing
  test:
    needs: setup
    runs-on: host
    strategy:
      matrix:
        os: ${{ fromJSON(vars.platforms) }}
        from: ${{ fromJSON(needs.setup.outputs.list) }}
    steps:
      - run: echo "unevaluated ${{ matrix.os }}"
  after:
    needs: test
    runs-on: host
    steps:
      - run: echo after
"#;
    let (outcome, events) = run_workflow(yaml, PlanOptions::new(), |b| b).await;
    assert_eq!(result_of(&outcome, "test"), Some(&JobResult::Failure));
    assert_eq!(result_of(&outcome, "after"), Some(&JobResult::Skipped));
    let reason = events
        .iter()
        .find_map(|e| match e {
            WorkflowEvent::JobNotRun { job, reason, .. } if job == "test" => Some(reason.clone()),
            _ => None,
        })
        .expect("the job says why it did not run");
    assert!(reason.contains("vars"), "{reason}");
    assert_eq!(started(&events), ["setup"]);
    assert!(!log_lines(&events).iter().any(|l| l.contains("unevaluated")));
}

#[tokio::test]
async fn a_skipped_job_with_a_pending_matrix_is_skipped_without_expanding_it() {
    let yaml = r#"
on: push
jobs:
  setup:
    runs-on: host
    steps:
      - run: exit 1
  test:
    needs: setup
    runs-on: host
    strategy:
      matrix: ${{ fromJSON(needs.setup.outputs.matrix) }}
    steps:
      - run: echo never
"#;
    let (outcome, _events) = run_workflow(yaml, PlanOptions::new(), |b| b).await;
    assert_eq!(result_of(&outcome, "test"), Some(&JobResult::Skipped));
}

#[tokio::test]
async fn one_job_runs_with_the_jobs_it_needs_and_the_matrix_filter_narrows_it() {
    let yaml = r#"
on: push
jobs:
  base:
    runs-on: host
    outputs:
      greeting: ${{ steps.g.outputs.greeting }}
    steps:
      - id: g
        run: echo greeting=hi >> "$GITHUB_OUTPUT"
  unrelated:
    runs-on: host
    steps:
      - run: echo unrelated
  build:
    needs: base
    runs-on: host
    strategy:
      matrix:
        os: [a, b, c]
        n: [1, 2]
    steps:
      - run: echo "${{ needs.base.outputs.greeting }} ${{ matrix.os }} ${{ matrix.n }} ${{ github.job }} ${{ secrets.TOKEN }}"
"#;
    let options = PlanOptions::new().context("github", json!({"event_name": "push"}));
    let (outcome, events) = run_workflow(yaml, options, |b| {
        b.job("build").matrix("os", "b").matrix("os", "c").matrix("n", "2").secret("TOKEN", solstice_core::Secret::new("s3cr3t"))
    })
    .await;
    assert_eq!(started(&events), ["base", "build (b, 2)", "build (c, 2)"]);
    let lines = log_lines(&events);
    assert!(lines.contains(&"hi b 2 build ***".to_owned()), "secrets reach the job and are masked: {lines:?}");
    assert_eq!(outcome.not_succeeded(), 0);
}

#[tokio::test]
async fn an_unknown_job_is_refused_before_anything_runs() {
    let plan = plan_workflow(CHAIN, "ci.yml", &PlanOptions::new()).expect("plans");
    let err = WorkflowRun::builder(plan, PlanOptions::new()).job("nope").build().expect_err("unknown job");
    assert!(err.to_string().contains("nope"));
}

// GitHub's docs (workflow syntax, `jobs.<job_id>.continue-on-error` and
// `jobs.<job_id>.timeout-minutes`; the context availability table allows `needs` in both):
// a value from a needed job's outputs is known once that job finished. A failed job with
// `continue-on-error` does not fail the run and shows as `success` in `needs.<job>.result`
// (actions/runner#1161, where the runner's maintainers confirm it).
#[tokio::test]
async fn job_continue_on_error_and_timeout_from_needs_are_evaluated_when_the_job_starts() {
    let yaml = r#"
on: push
jobs:
  setup:
    runs-on: host
    outputs:
      lenient: ${{ steps.s.outputs.lenient }}
      minutes: ${{ steps.s.outputs.minutes }}
    steps:
      - id: s
        run: printf 'lenient=true\nminutes=abc\n' >> "$GITHUB_OUTPUT"
  flaky:
    needs: setup
    runs-on: host
    continue-on-error: ${{ fromJSON(needs.setup.outputs.lenient) }}
    timeout-minutes: ${{ fromJSON('10') }}
    steps:
      - run: exit 1
  after:
    needs: flaky
    runs-on: host
    steps:
      - run: echo "flaky was ${{ needs.flaky.result }}"
  strict:
    needs: setup
    runs-on: host
    timeout-minutes: ${{ needs.setup.outputs.minutes }}
    steps:
      - run: echo must not run
"#;
    let (outcome, events) = run_workflow(yaml, PlanOptions::new(), |b| b).await;
    assert_eq!(result_of(&outcome, "flaky"), Some(&JobResult::Success), "{:?}", outcome.jobs);
    assert!(log_lines(&events).contains(&"flaky was success".to_owned()), "{:?}", log_lines(&events));
    assert_eq!(result_of(&outcome, "strict"), Some(&JobResult::Failure));
    let reason = events
        .iter()
        .find_map(|e| match e {
            WorkflowEvent::JobNotRun { job, reason, .. } if job == "strict" => Some(reason.clone()),
            _ => None,
        })
        .expect("the job says why it did not run");
    assert!(reason.contains("`timeout-minutes` must be a number of minutes, not 'abc'"), "{reason}");
    assert!(!log_lines(&events).iter().any(|l| l == "must not run"));
    assert_eq!(outcome.not_succeeded(), 1, "only the strict job");
}

// GitHub's docs (workflow syntax, `jobs.<job_id>.strategy.fail-fast`): "If fail-fast is set
// to true, or its expression evaluates to true, GitHub will cancel all in-progress and
// queued jobs in the matrix if any job in the matrix fails. This property defaults to
// true." With `fail-fast: false` every combination runs.
#[tokio::test]
async fn fail_fast_cancels_the_combinations_not_yet_run_after_a_failure() {
    let workflow = |fail_fast: &str| {
        format!(
            r#"
on: push
jobs:
  test:
    runs-on: host
    strategy:
      {fail_fast}
      matrix:
        n: [1, 2, 3]
    steps:
      - run: echo "leg ${{{{ matrix.n }}}}" && test ${{{{ matrix.n }}}} != 1
"#
        )
    };
    let (outcome, events) = run_workflow(&workflow(""), PlanOptions::new(), |b| b).await;
    assert_eq!(result_of(&outcome, "test (1)"), Some(&JobResult::Failure));
    assert_eq!(result_of(&outcome, "test (2)"), Some(&JobResult::Cancelled), "{:?}", outcome.jobs);
    assert_eq!(result_of(&outcome, "test (3)"), Some(&JobResult::Cancelled));
    assert!(!log_lines(&events).iter().any(|l| l == "leg 2" || l == "leg 3"), "{:?}", log_lines(&events));
    let reason = events
        .iter()
        .find_map(|e| match e {
            WorkflowEvent::JobNotRun { name, reason, .. } if name == "test (2)" => Some(reason.clone()),
            _ => None,
        })
        .expect("the cancelled leg says why");
    assert!(reason.contains("`test (1)` failed") && reason.contains("fail-fast"), "{reason}");

    let (outcome, events) = run_workflow(&workflow("fail-fast: false"), PlanOptions::new(), |b| b).await;
    assert_eq!(outcome.jobs.iter().map(|(_, r)| *r).collect::<Vec<_>>(), [JobResult::Failure, JobResult::Success, JobResult::Success]);
    assert!(log_lines(&events).contains(&"leg 3".to_owned()));
}

// GitHub's docs: a skip "applies to all jobs in the dependency chain from the point of
// failure or skip onwards" unless the dependent uses `always()` (workflow syntax,
// `jobs.<job_id>.needs`), and `failure()` "returns true if any ancestor job fails"
// (evaluate expressions, status check functions): a skipped ancestor is not a failed one.
#[tokio::test]
async fn a_skipped_ancestor_skips_dependents_without_making_failure_true() {
    let yaml = r#"
on: push
jobs:
  never:
    if: false
    runs-on: host
    steps:
      - run: echo never
  plain:
    needs: never
    runs-on: host
    steps:
      - run: echo plain ran
  on-failure:
    needs: never
    if: failure()
    runs-on: host
    steps:
      - run: echo on-failure ran
  always:
    needs: never
    if: always()
    runs-on: host
    steps:
      - run: echo "always ran, never was ${{ needs.never.result }}"
"#;
    let (outcome, events) = run_workflow(yaml, PlanOptions::new(), |b| b).await;
    assert_eq!(result_of(&outcome, "never"), Some(&JobResult::Skipped));
    assert_eq!(result_of(&outcome, "plain"), Some(&JobResult::Skipped), "{:?}", outcome.jobs);
    assert_eq!(result_of(&outcome, "on-failure"), Some(&JobResult::Skipped), "a skipped ancestor is not a failure");
    assert_eq!(result_of(&outcome, "always"), Some(&JobResult::Success));
    let lines = log_lines(&events);
    assert!(lines.contains(&"always ran, never was skipped".to_owned()), "{lines:?}");
    assert!(!lines.iter().any(|l| l == "on-failure ran" || l == "plain ran"), "{lines:?}");
    assert_eq!(outcome.not_succeeded(), 0);
}
