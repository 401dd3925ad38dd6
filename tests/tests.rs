//! Cross-crate tests: workflows translated by solstice-workflow and run by the engine.

mod docs;

use solstice::core::{Engine, HostExecutor, HostHypervisor, JobEventKind, JobOrigin, JobResult, job_request_from_plan};
use solstice::workflow::{PlanOptions, plan_workflow};

async fn run_workflow(yaml: &str) -> Vec<(String, JobResult, Vec<String>)> {
    let plan = plan_workflow(yaml, "test.yml", &PlanOptions::new()).expect("plan");
    let engine = Engine::builder().hypervisor(HostHypervisor::new()).executor(HostExecutor::new()).build().expect("engine");
    let mut out = Vec::new();
    for job in &plan.jobs {
        let (result, events) = engine.run_job_collect(job_request_from_plan(job, JobOrigin::default())).await;
        let lines = events
            .iter()
            .filter_map(|e| match &e.kind {
                JobEventKind::Log { step: Some(_), line, .. } => Some(line.clone()),
                _ => None,
            })
            .collect();
        out.push((job.name.clone(), result, lines));
    }
    out
}

#[tokio::test]
async fn matrix_env_and_expressions_mean_the_same_as_on_github() {
    let yaml = r#"
on: push
env:
  LEVEL: workflow
jobs:
  build:
    runs-on: host
    strategy:
      matrix:
        os: [omnios, openindiana]
        include:
          - os: omnios
            pkg: ooce
    env:
      JOB_LEVEL: job
    steps:
      - id: meta
        run: |
          echo "os=${{ matrix.os }} pkg=${{ matrix.pkg }} $LEVEL $JOB_LEVEL"
          echo "tag=${{ matrix.os }}-1" >> "$GITHUB_OUTPUT"
      - if: steps.meta.outputs.tag == 'omnios-1'
        run: echo "only on omnios"
      - shell: sh
        env:
          LEVEL: step
        run: echo "sh says $LEVEL"
"#;
    let jobs = run_workflow(yaml).await;
    assert_eq!(jobs.len(), 2);
    let (name, result, lines) = &jobs[0];
    assert_eq!(*result, JobResult::Success, "{lines:?}");
    assert!(name.contains("omnios"), "{name}");
    assert!(lines.contains(&"os=omnios pkg=ooce workflow job".to_owned()), "{lines:?}");
    assert!(lines.contains(&"only on omnios".to_owned()));
    assert!(lines.contains(&"sh says step".to_owned()));
    let (_, result, lines) = &jobs[1];
    assert_eq!(*result, JobResult::Success);
    assert!(lines.contains(&"os=openindiana pkg= workflow job".to_owned()), "{lines:?}");
    assert!(!lines.contains(&"only on omnios".to_owned()));
}

#[tokio::test]
async fn a_python_step_runs_with_the_python_shell() {
    let yaml = "on: push\njobs:\n  py:\n    runs-on: host\n    steps:\n      - shell: python3 {0}\n        run: print(6 * 7)\n";
    let jobs = run_workflow(yaml).await;
    assert_eq!(jobs[0].1, JobResult::Success, "{:?}", jobs[0].2);
    assert!(jobs[0].2.contains(&"42".to_owned()));
}
