//! A native GitHub Actions self-hosted runner for Solstice CI.
//!
//! `solstice-github` speaks the Actions runner protocol — registration, OAuth client
//! assertions, pool sessions with encrypted messages, the broker, the run service and the
//! results service — and implements [`solstice_core::JobSource`] on it, so GitHub's jobs
//! run on Solstice's engine and their logs, step states and results show up in GitHub.
//!
//! # Overview
//! - [`register`] adds a runner to a repository or organisation with a registration
//!   token (through the tenant, or the runner-admin API when GitHub asks for it); [`RunnerStore`] keeps its three files (`.runner`, `.credentials`,
//!   `.credentials_rsaparams`, mode 0600); [`unregister`] removes it.
//! - [`GithubSource`] is the registered runner at work: it long-polls for jobs (following
//!   GitHub's move to the broker), acquires them, renews their locks, translates the job
//!   message into a [`JobRequest`](solstice_core::JobRequest), and reports the job's
//!   events back (timeline, feed and logs on the classic path; results service and
//!   `completejob` on the broker path, with the live console over the `FeedStreamUrl`
//!   websocket). With [`GithubSourceBuilder::state_dir`] it records each job in flight,
//!   so that a restart after a crash completes the job as failed.
//! - [`serve_all_in_one`] runs a source with an in-process queue and an
//!   [`Engine`](solstice_core::Engine).
//!
//! ```
//! use solstice_github::{RegistrationConfig, api_url_for};
//! # fn run() -> Result<(), solstice_github::GithubError> {
//! let config = RegistrationConfig {
//!     url: "https://github.com/octo/demo".into(),
//!     name: "omnios-1".into(),
//!     labels: vec!["omnios".into()],
//!     ..Default::default()
//! };
//! // Registration talks to the REST API host that belongs to the URL.
//! assert_eq!(api_url_for(&config.url)?, "https://api.github.com");
//! # Ok(()) }
//! # run().unwrap();
//! ```
//!
//! # Secrets
//! The runner's OAuth tokens, job tokens and private key are held in
//! [`Secret`](solstice_core::Secret)s, never logged, and written only to the credential
//! files.
//!
//! # Optional features
//! None.
#![warn(missing_docs, missing_debug_implementations)]

mod crypto;
mod error;
mod http;
mod json;
mod protocol;
mod recovery;
mod registration;
mod report;
mod runner;
mod source;
mod store;
mod translate;

pub use crypto::{PublicKeyParams, RunnerKey, decrypt_message_body};
pub use error::GithubError;
pub use registration::{RegistrationConfig, api_url_for, default_labels, register, register_with_key, unregister};
pub use runner::{serve_all_in_one, serve_with_queue};
pub use source::{GithubSource, GithubSourceBuilder};
pub use store::{CredentialData, OAuthData, RunnerConfig, RunnerSettings, RunnerStore};

/// The runner version reported to GitHub. It stays above the minimum the service accepts;
/// self-updates are always disabled.
pub const RUNNER_VERSION: &str = "3.0.0";
