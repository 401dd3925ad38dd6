//! The composition `solstice-orchestrator` and `solstice serve` share.
//!
//! Both programs run the same orchestrator: machines for the labels of the
//! configuration, an [`Engine`](solstice_core::Engine) on a state store with an optional
//! [`DebugKeeper`](solstice_core::DebugKeeper), machines a crashed run left reaped
//! before any job is taken, a `/metrics` and `/healthz` endpoint, and SIGTERM/SIGINT as
//! the stop signal. They differ only in where jobs come from (RabbitMQ or the
//! in-process queue fed by runner services), so that much lives here once, as a library
//! target of the `solstice-orchestrator` package that the `solstice` command depends
//! on. It is not one of the published library crates: it sits between the binaries and
//! the libraries, builds runtime objects from [`OrchestratorConfig`] (which only
//! binaries load), and, being the binaries' own code, may wait for signals.
//!
//! # Overview
//! - [`LabelPlan`] says which labels run on this host and which in VMs of which image;
//!   [`machines`] turns it into the hypervisor and executor.
//! - [`start_engine`] builds the engine and the debug keeper from the configuration
//!   and reaps what a previous run left; the [`Orchestrator`] it returns holds both.
//! - [`MetricsEndpoint`] binds and serves `/metrics` and `/healthz`
//!   ([`serve_metrics`] serves a listener the caller bound); [`parse_metrics_text`]
//!   reads a scrape back, for the services' tests.
//! - [`shutdown_signal`] resolves on SIGINT or SIGTERM.
//!
//! # Example
//! The machines for an orchestrator's labels, plus one a runner asks for:
//! ```
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use solstice_config::OrchestratorConfig;
//! use solstice_orchestrator::{LabelPlan, machines};
//!
//! let config = OrchestratorConfig { host_labels: vec!["trusted".into()], ..OrchestratorConfig::default() };
//! let mut plan = LabelPlan::from_config(&config);
//! plan.host("linux-host");
//! let cache = std::env::temp_dir().join("solstice-doc-cache");
//! let machines = machines(&config, cache, &plan).await?;
//! assert_eq!(machines.labels, ["trusted", "linux-host"]);
//! # Ok(())
//! # }
//! # tokio::runtime::Runtime::new().expect("runtime").block_on(run()).expect("host machines");
//! ```
//!
//! [`OrchestratorConfig`]: solstice_config::OrchestratorConfig
#![warn(missing_docs, missing_debug_implementations)]

mod engine;
mod http;
mod machines;
mod signal;

pub use engine::{EngineSetupError, Orchestrator, debug_keeper, start_engine};
pub use http::{EndpointError, MetricsEndpoint, MetricsTextError, parse_metrics_text, serve_metrics};
pub use machines::{LabelPlan, MachinesError, machines};
pub use signal::shutdown_signal;
