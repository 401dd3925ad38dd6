//! A native Forgejo Actions runner for Solstice CI.
//!
//! `solstice-forgejo` speaks Forgejo's runner protocol (`runner.v1` over Connect unary
//! HTTP, protobuf bodies) so that a Forgejo administrator registers Solstice CI like
//! `forgejo-runner`, and jobs show up in Forgejo's UI with live logs, step states and
//! results.
//!
//! # Brief overview
//!
//! * [`ForgejoClient`]: the protocol client (`Ping`, `Register`, `Declare`, `FetchTask`,
//!   `UpdateTask`, `UpdateLog`), with typed [`ForgeError`]s (`is_transient`, `is_auth`,
//!   `is_unimplemented`). [`connect`] is the pure wire format; [`proto`] the messages.
//! * [`register`] trades a registration token for a [`RunnerFile`] (saved with mode 0600).
//! * [`ForgejoSource`] is a [`solstice_core::JobSource`]: it polls for tasks, translates
//!   each task's single-job workflow with `solstice-workflow` (with the task's `github`
//!   context, `vars`, `needs`, `secrets`), and reports job events back as log rows, step
//!   states and outputs. A task it cannot run is reported failed with the reason and the
//!   position in the workflow.
//! * [`run_service`] runs a source into a queue, optionally with an in-process engine
//!   (the all-in-one mode of `solstice-forgejo-runner`), and shuts down gracefully.
//!
//! The runner's configuration is plain data the binaries load (`[forgejo]` of
//! `solstice_config::ServiceConfig`); this crate reads no file or variable.
//!
//! # Registering and declaring
//!
//! ```
//! use std::time::Duration;
//! use solstice_core::Secret;
//! use solstice_forgejo::{ForgejoClient, ForgejoSource, LabelSpec, Registration};
//! use solstice_forgejo_fake::{FakeForgejo, Scope};
//! use tokio_util::sync::CancellationToken;
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let forgejo = FakeForgejo::start().await?; // a real instance URL in production
//! let client = ForgejoClient::builder(forgejo.url()).build()?;
//! let registration = Registration {
//!     name: "illumos-1".into(),
//!     token: Secret::new(forgejo.registration_token(Scope::Instance)),
//!     labels: vec![LabelSpec::parse("omnios")?, LabelSpec::parse("local:host")?],
//!     ephemeral: false,
//! };
//! let runner = solstice_forgejo::register(&client, &registration, Duration::from_secs(5), &CancellationToken::new()).await?;
//! assert_eq!(runner.labels, ["omnios", "local:host"]);
//!
//! let source = ForgejoSource::builder(client.with_credentials(runner.credentials()))
//!     .labels(vec!["omnios".into(), "local".into()])
//!     .build()?;
//! let declared = source.declare().await?.expect("Forgejo >= 1.21 knows Declare");
//! assert_eq!(declared.labels, ["omnios", "local"]);
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(run()).unwrap();
//! ```
//!
//! # Optional features
//!
//! None. The fake Forgejo server used in tests is the separate `solstice-forgejo-fake`
//! package (`testing/forgejo-fake`).
#![warn(missing_docs, missing_debug_implementations)]

mod client;
mod daemon;
pub mod connect;
mod error;
mod labels;
mod progress;
mod register;
pub mod proto;
mod runner_file;
mod source;
mod translate;

pub use client::{CallOptions, Credentials, ForgejoClient, ForgejoClientBuilder, RUNNER_VERSION};
pub use connect::{Codec, CodecError, ConnectCode, Procedure};
pub use error::ForgeError;
pub use labels::{LabelError, LabelScheme, LabelSpec, label_names};
pub use runner_file::{RunnerFile, RunnerFileError};
pub use source::{ForgejoSource, ForgejoSourceBuilder};
pub use daemon::{DaemonError, Service, run_service};
pub use register::{RegisterError, Registration, register};
