//! Helpers for implementors of the seams: code that a [`JobSource`](crate::JobSource),
//! [`JobQueue`](crate::JobQueue) or [`StepExecutor`](crate::StepExecutor) outside this
//! crate shares with the ones inside it, so that every backend behaves the same.
//!
//! A program that only composes the seams (builds an [`Engine`](crate::Engine) or a
//! [`RunnerService`](crate::RunnerService)) needs none of them. When you need each:
//! - [`Backoff`] and [`retry_while_unavailable`]: a source or queue that retries an
//!   unreachable forge, broker or database with capped exponential backoff.
//! - [`error_chain`]: logging an error with its causes on one line (`a: b: c`).
//! - [`ShellCommand`] and [`shell_command`]: a step executor that turns a step's shell line
//!   (`bash --noprofile --norc -eo pipefail {0}`) into an argument vector and a script file
//!   name, as the host and SSH executors do.
//! - [`Masker`]: anything that emits job log lines itself and must hide the job's secrets
//!   as the engine does.
//! - [`checkout_dir`], [`working_dir`] and [`resolve_path`]: a step executor that must
//!   keep checkout `path:` and `working-directory` inside the job's directories (then
//!   checks symbolic links on its machine, which only it can see); [`resolve_working_dir`]
//!   where the machine goes with the job and any directory in it will do.
//! - [`GitFetch`]: a step executor that fetches a repository with git, the token kept
//!   out of every command line.

pub use crate::backoff::{Backoff, retry_while_unavailable};
pub use crate::error_chain::error_chain;
pub use crate::executor::{ShellCommand, shell_command};
pub use crate::git::{GitFetch, MIN_GIT_VERSION, check_git_version};
pub use crate::mask::Masker;
pub use crate::workspace::{checkout_dir, is_within, job_dirs, resolve_path, resolve_working_dir, working_dir};
