//! The service kit of the Solstice CI programs: `solstice-orchestrator`,
//! `solstice-forgejo-runner`, `solstice-github-runner` and `solstice serve` are each a
//! thin `main` over it.
//!
//! It sits between the binaries and the libraries: it turns a
//! [`ServiceConfig`](solstice_config::ServiceConfig) (which only binaries load) into
//! runtime objects, composes them into the four services, and, being the binaries' own
//! code, waits for signals and picks exit codes. It is not a published library crate.
//!
//! # Overview
//! - Configuration to runtime objects: [`open_queue`] (`[queue]`: in-process or
//!   RabbitMQ), [`open_store`] (`[store]`), [`LabelPlan`] (which labels run on this host
//!   and which in VMs of which image, from `[engine]` plus a runner's labels) and
//!   [`machines`] (the hypervisor and executor for a plan), [`start_engine`] (the
//!   engine and the debug keeper, reaping what a previous run left; the
//!   [`Orchestrator`] it returns holds both), [`MetricsEndpoint`] (`/metrics` and
//!   `/healthz`; [`parse_metrics_text`] reads a scrape back, for the services' tests).
//! - One stop behaviour: [`Shutdown`] (the first SIGTERM/SIGINT stops taking jobs;
//!   after `shutdown_grace` or at a second signal running jobs are cancelled), over
//!   [`shutdown_signal`].
//! - The services: [`run_orchestrator`], [`run_forgejo_runner`], [`run_github_runner`],
//!   [`run_serve`]; the runners' set-up commands [`register_forgejo`],
//!   [`register_github`], [`remove_github`].
//! - What every `main` does: [`run_main`] (parse with a usage error as exit 3, a tokio
//!   runtime, `error: {e:#}` and the exit code), [`ServiceArgs`] (`--config`, `--log`,
//!   `--log-format`) with [`load_config`], and the exit-code table [`Exit`], stated in
//!   every `--help` as [`EXIT_CODES_HELP`] and mapped from typed errors by [`Exit::of`].
//!
//! # Example
//! The machines for an orchestrator's labels, plus one a runner asks for:
//! ```
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use solstice_config::ServiceConfig;
//! use solstice_service::{LabelPlan, machines};
//!
//! let mut config = ServiceConfig::default();
//! config.engine.host_labels = vec!["trusted".into()];
//! config.engine.cache_dir = Some(std::env::temp_dir().join("solstice-doc-cache"));
//! let mut plan = LabelPlan::from_config(&config, &[]);
//! plan.host("linux-host");
//! let machines = machines(&config, &plan).await?;
//! assert_eq!(machines.labels, ["trusted", "linux-host"]);
//! # Ok(())
//! # }
//! # tokio::runtime::Runtime::new().expect("runtime").block_on(run()).expect("host machines");
//! ```
#![warn(missing_docs, missing_debug_implementations)]

mod backend;
mod engine;
mod error;
mod exit;
mod forgejo;
mod github;
mod http;
mod machines;
mod orchestrator;
mod program;
mod runner;
mod serve;
mod signal;

pub use backend::{open_queue, open_store};
pub use engine::{EngineSetupError, Orchestrator, debug_keeper, start_engine};
pub use error::ServiceError;
pub use exit::{EXIT_CODES_HELP, Exit, ProgramError, report};
pub use forgejo::{ForgejoRegistration, register_forgejo, run_forgejo_runner};
pub use github::{register_github, remove_github, run_github_runner, with_github_dir};
pub use http::{EndpointError, MetricsEndpoint, MetricsTextError, parse_metrics_text, serve_metrics};
pub use machines::{LabelPlan, MachinesError, machines};
pub use orchestrator::run_orchestrator;
pub use program::{ServiceArgs, check_config_text, init_logging, load_config, run_main};
pub use serve::run_serve;
pub use signal::{Shutdown, shutdown_signal};
