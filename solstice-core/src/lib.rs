//! The core of Solstice CI: the job model, the four seams, and the engine that runs jobs.
//!
//! A [`JobSource`] (a forge, a local workflow) yields [`JobRequest`]s; a [`JobQueue`]
//! carries them to an orchestrator's [`Engine`], which asks a [`Hypervisor`] for a
//! machine, runs each step with a [`StepExecutor`], and sends [`JobEvent`]s back the same
//! way. Everything else in Solstice CI implements one of these seams; the helpers an
//! implementation outside this crate shares with the ones inside it are in [`support`].
//!
//! ```
//! use solstice_core::{Engine, HostExecutor, HostHypervisor, JobRequest, MemoryQueue, StepCommand};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::builder()
//!     .hypervisor(HostHypervisor::new())
//!     .executor(HostExecutor::new())
//!     .build()?;
//! let job = JobRequest::new("hello", vec!["host".into()], vec![StepCommand::run("greet", "echo hello")]);
//! let (result, events) = engine.run_job_collect(job).await;
//! assert_eq!(result, solstice_core::JobResult::Success);
//! assert!(events.iter().any(|e| matches!(&e.kind, solstice_core::JobEventKind::Log { line, .. } if line == "hello")));
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(run()).unwrap();
//! ```
//!
//! # Optional features
//! - `sqlite` (default): the job state [`Store`] on SQLite, the embedded default.
//! - `postgres`: the same store on PostgreSQL, chosen by URL.
//! - `amqp`: the RabbitMQ [`JobQueue`].
//! - `testing`: scripted fakes of the seams for tests of code built on this crate.
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod actions;
mod backoff;
mod dispatch;
mod engine;
mod error_chain;
mod executor;
mod git;
mod host;
mod local;
mod machine;
mod mask;
mod metrics;
mod model;
mod outputs;
mod queue;
mod reap;
mod route;
mod service;
mod sink;
mod source;
mod translate;
mod workflow;
mod workspace;
#[cfg(feature = "_store")]
mod store;
pub mod support;
#[cfg(feature = "testing")]
pub mod testing;

pub use actions::{ActionFetchError, ActionFetcher, FetchedAction};
pub use dispatch::serve_source;
pub use engine::{
    DEFAULT_DEBUG_PORTS, DEFAULT_DEBUG_TTL, DebugKeeper, DebugKeeperBuilder, DebugSshError, Engine, EngineBuilder, EngineError,
};
#[cfg(feature = "_store")]
pub use engine::ReapedMachine;
pub use executor::{CommandFiles, ExecError, ScriptRun, StepExecutor, StepExit};
pub use host::{HostExecutor, HostHypervisor};
pub use local::LocalSource;
pub use machine::{
    Hypervisor, HypervisorError, Machine, MachineAccess, MachineFootprint, MachineJournal, MachineRequest, NoJournal,
    ProvisionContext, RunnerInfo, SshAccess,
};
pub use metrics::EngineMetrics;
pub use model::*;
pub use outputs::StepsContext;
#[cfg(feature = "amqp")]
pub use queue::{AmqpQueue, AmqpQueueBuilder, DeadLetter, JobQueueKind};
pub use queue::{
    Acker, CancelConsumer, EventConsumer, EventDelivery, JobConsumer, JobDelivery, JobQueue,
    MemoryQueue, QueueError,
};
pub use route::{ExecutorByAccess, HypervisorSet};
pub use service::{NOT_STARTED_MESSAGE, RunnerService, RunnerServiceBuilder, ServiceError, Shutdown};
pub use sink::{LineSplitter, LogSink, MAX_LINE_BYTES, OutputLine};
pub use source::{JobSource, ReportOutcome, SourceError, SourceMessage};
pub use translate::job_request_from_plan;
pub use workflow::{WorkflowEvent, WorkflowOutcome, WorkflowRun, WorkflowRunBuilder, WorkflowRunError};
#[cfg(feature = "_store")]
pub use store::{Claim, JobRecord, LeaseRenewal, Store, StoreError, VmRecord};
