//! A native Forgejo Actions runner.
#![warn(missing_docs, missing_debug_implementations)]

mod client;
mod config;
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
pub use config::{EngineSection, QueueSection, RunnerConfig, RunnerSection, seconds};
