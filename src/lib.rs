//! Solstice CI: run GitHub Actions and Forgejo Actions jobs in fresh virtual machines.
//!
//! This facade re-exports the crates most users need together:
//! [`core`] (the model, the seams and the engine) and [`workflow`] (workflow
//! translation and expressions). The QEMU hypervisor (`solstice-vm`) and the forge
//! runners (`solstice-forgejo`, `solstice-github`) are separate crates so that a
//! project pulls in only what it uses.
//!
//! ```
//! use solstice::core::{Engine, HostExecutor, HostHypervisor, JobOrigin, job_request_from_plan};
//! use solstice::workflow::{PlanOptions, plan_workflow};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let yaml = "on: push\njobs:\n  hi:\n    runs-on: host\n    steps:\n      - run: echo hi\n";
//! let plan = plan_workflow(yaml, "ci.yml", &PlanOptions::new())?;
//! let job = job_request_from_plan(&plan.jobs[0], JobOrigin::default());
//! let engine = Engine::builder().hypervisor(HostHypervisor::new()).executor(HostExecutor::new()).build()?;
//! let (result, _events) = engine.run_job_collect(job).await;
//! assert_eq!(result, solstice::core::JobResult::Success);
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(run()).unwrap();
//! ```
//!
//! # Optional features
//! - `sqlite` (default): the job state store on SQLite (`core::Store`).
//! - `postgres`: the job state store on PostgreSQL.
//! - `amqp`: the RabbitMQ job queue (`core::AmqpQueue`).
#![warn(missing_docs)]

pub use solstice_core as core;
pub use solstice_workflow as workflow;
