//! Runs a small workflow on this host with the SDK, printing every event.
//!
//! `cargo run --example host_job`

use solstice::core::{Engine, HostExecutor, HostHypervisor, JobOrigin, job_request_from_plan};
use solstice::workflow::{PlanOptions, plan_workflow};

const WORKFLOW: &str = r#"
on: push
jobs:
  greet:
    runs-on: host
    strategy:
      matrix:
        who: [world, illumos]
    steps:
      - run: echo "hello ${{ matrix.who }}"
"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let plan = plan_workflow(WORKFLOW, "example.yml", &PlanOptions::new())?;
    let engine = Engine::builder().hypervisor(HostHypervisor::new()).executor(HostExecutor::new()).build()?;
    for job in &plan.jobs {
        let request = job_request_from_plan(job, JobOrigin::default());
        let (result, events) = engine.run_job_collect(request).await;
        for event in &events {
            println!("{} #{} {:?}", job.name, event.seq, event.kind);
        }
        println!("{}: {result}", job.name);
    }
    Ok(())
}
