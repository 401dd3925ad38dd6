//! The exit-code table of every Solstice CI program, and the one mapping from typed
//! errors to it.

use std::error::Error as StdError;
use std::process::ExitCode;

use solstice_config::ConfigError;
use solstice_core::SourceError;
use solstice_forgejo::{DaemonError, ForgeError, LabelError, RegisterError, RunnerFileError};
use solstice_github::GithubError;

use crate::ServiceError;

/// How a program ended, as its exit status. The same table for every binary; each
/// states it in its `--help` ([`EXIT_CODES_HELP`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Exit {
    /// 0: done (a service stopped cleanly, the jobs succeeded).
    Success = 0,
    /// 1: a job failed or was cancelled.
    JobFailed = 1,
    /// 2: invalid input: a workflow, a configuration file or environment override, a
    /// registration the configuration points to that is missing or unreadable.
    InvalidInput = 2,
    /// 3: usage: bad command-line arguments.
    Usage = 3,
    /// 4: the forge refused the runner (a bad registration token, a deleted
    /// registration).
    Refused = 4,
    /// 5: a service or an operation failed at run time (the queue, store or forge
    /// unreachable, VM setup failed, a download failed).
    Failed = 5,
}

/// The table, for the `after_help` of every binary.
pub const EXIT_CODES_HELP: &str = "Exit codes: 0 ok; 1 a job failed or was cancelled; 2 invalid input (a workflow, a \
configuration file or environment variable, a missing registration); 3 bad command-line arguments; 4 the forge refused \
the runner (bad registration token, registration deleted); 5 a service or operation failed at run time (queue, store or \
forge unreachable, VM setup or a download failed).";

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// Errors a program raises itself, each with its place in the table. Library errors
/// are classified by their type ([`Exit::of`]); these are for what only the program
/// knows.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProgramError {
    /// Jobs ran and some did not succeed: the summary, printed as it is. Exit 1.
    #[error("{0}")]
    JobsFailed(String),
    /// The workflow is invalid; its errors were printed already. Exit 2.
    #[error("the workflow is invalid")]
    InvalidWorkflow,
    /// Input the program was given is invalid (a file, a value). Exit 2.
    #[error(transparent)]
    Invalid(Box<dyn StdError + Send + Sync>),
    /// A command-line argument's value is bad (found only once it is used). Exit 3.
    #[error(transparent)]
    Usage(Box<dyn StdError + Send + Sync>),
    /// An operation failed at run time. Exit 5.
    #[error(transparent)]
    Failed(Box<dyn StdError + Send + Sync>),
}

impl ProgramError {
    /// `error` is invalid input (exit 2); its message and causes are kept.
    pub fn invalid(error: impl Into<anyhow::Error>) -> Self {
        Self::Invalid(error.into().into())
    }

    /// `error` is a bad command-line argument (exit 3); its message and causes are kept.
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Self::Usage(error.into().into())
    }

    /// `error` is a failure at run time (exit 5); its message and causes are kept.
    pub fn failed(error: impl Into<anyhow::Error>) -> Self {
        Self::Failed(error.into().into())
    }
}

impl Exit {
    /// The exit code of `error`: the first cause, from the outermost in, whose type
    /// says; [`Exit::Failed`] when none does.
    pub fn of(error: &anyhow::Error) -> Exit {
        error.chain().find_map(classify).unwrap_or(Exit::Failed)
    }
}

/// What one cause says about the exit code, if anything.
fn classify(cause: &(dyn StdError + 'static)) -> Option<Exit> {
    if let Some(e) = cause.downcast_ref::<ProgramError>() {
        return Some(match e {
            ProgramError::JobsFailed(_) => Exit::JobFailed,
            ProgramError::InvalidWorkflow | ProgramError::Invalid(_) => Exit::InvalidInput,
            ProgramError::Usage(_) => Exit::Usage,
            ProgramError::Failed(_) => Exit::Failed,
        });
    }
    if let Some(e) = cause.downcast_ref::<ServiceError>() {
        return e.exit();
    }
    if cause.is::<ConfigError>() || cause.is::<LabelError>() || cause.is::<RunnerFileError>() || cause.is::<clap::Error>() {
        return Some(if cause.is::<clap::Error>() { Exit::Usage } else { Exit::InvalidInput });
    }
    if let Some(e) = cause.downcast_ref::<RegisterError>() {
        return match e {
            RegisterError::Refused(_) => Some(Exit::Refused),
            RegisterError::NoLabels => Some(Exit::InvalidInput),
            _ => None,
        };
    }
    if let Some(DaemonError::Declare(e)) = cause.downcast_ref::<DaemonError>() {
        return e.is_auth().then_some(Exit::Refused);
    }
    if let Some(e) = cause.downcast_ref::<ForgeError>() {
        return e.is_auth().then_some(Exit::Refused);
    }
    if let Some(e) = cause.downcast_ref::<GithubError>() {
        return match e {
            GithubError::Config(_) => Some(Exit::InvalidInput),
            e if e.is_auth() => Some(Exit::Refused),
            _ => None,
        };
    }
    if let Some(SourceError::Unauthorized(_)) = cause.downcast_ref::<SourceError>() {
        return Some(Exit::Refused);
    }
    None
}

/// Prints how `error` ended the program on stderr (`error: {e:#}`; a failed jobs'
/// summary as it is; nothing for an invalid workflow, whose errors are printed) and
/// returns its exit code.
pub fn report(error: &anyhow::Error) -> ExitCode {
    match error.chain().find_map(|c| c.downcast_ref::<ProgramError>()) {
        Some(ProgramError::InvalidWorkflow) => {}
        Some(ProgramError::JobsFailed(summary)) => eprintln!("{summary}"),
        _ => eprintln!("error: {error:#}"),
    }
    Exit::of(error).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;
    use solstice_forgejo::{LabelSpec, RunnerFile};

    fn config_error() -> ConfigError {
        solstice_config::parse::<solstice_config::ServiceConfig>("capacity = \"x\"\n", "c.toml").expect_err("invalid")
    }

    fn forge_error(code: solstice_forgejo::ConnectCode) -> ForgeError {
        ForgeError::Rejected { procedure: solstice_forgejo::Procedure::Declare, code, message: "no".into() }
    }

    #[test]
    fn every_kind_of_error_has_its_code() {
        use solstice_forgejo::ConnectCode::{Unauthenticated, Unavailable};
        let label = LabelSpec::parse("x:vmm").expect_err("bad scheme");
        let missing = RunnerFile::load(std::path::Path::new("/nonexistent/.runner")).expect_err("missing");
        let cases: Vec<(anyhow::Error, Exit)> = vec![
            (ProgramError::JobsFailed("1 of 2 jobs did not succeed".into()).into(), Exit::JobFailed),
            (ProgramError::InvalidWorkflow.into(), Exit::InvalidInput),
            (ProgramError::invalid(anyhow::anyhow!("no catalog")).into(), Exit::InvalidInput),
            (ProgramError::failed(anyhow::anyhow!("download")).into(), Exit::Failed),
            (ProgramError::usage(anyhow::anyhow!("invalid --instance")).into(), Exit::Usage),
            (anyhow::Error::new(config_error()).context("loading"), Exit::InvalidInput),
            (anyhow::Error::new(label), Exit::InvalidInput),
            (anyhow::Error::new(missing), Exit::InvalidInput),
            (anyhow::Error::new(RegisterError::Refused(forge_error(Unauthenticated))), Exit::Refused),
            (anyhow::Error::new(RegisterError::NoLabels), Exit::InvalidInput),
            (anyhow::Error::new(RegisterError::Cancelled), Exit::Failed),
            (anyhow::Error::new(DaemonError::Declare(forge_error(Unauthenticated))).context("the forgejo runner failed"), Exit::Refused),
            (anyhow::Error::new(DaemonError::Declare(forge_error(Unavailable))), Exit::Failed),
            (anyhow::Error::new(GithubError::Config("bad".into())), Exit::InvalidInput),
            (anyhow::Error::new(SourceError::Unauthorized(None)), Exit::Refused),
            (anyhow::Error::new(SourceError::Unavailable("down".into())), Exit::Failed),
            (anyhow::Error::new(ServiceError::NoLabels), Exit::InvalidInput),
            (anyhow::anyhow!("the queue is unreachable"), Exit::Failed),
            (Err::<(), _>(std::io::Error::other("disk")).context("writing").expect_err("err"), Exit::Failed),
        ];
        for (error, exit) in cases {
            assert_eq!(Exit::of(&error), exit, "{error:#}");
        }
        let codes: Vec<u8> =
            [Exit::Success, Exit::JobFailed, Exit::InvalidInput, Exit::Usage, Exit::Refused, Exit::Failed].map(|e| e as u8).to_vec();
        assert_eq!(codes, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_wrapped_error_prints_its_own_chain_once() {
        let inner = anyhow::anyhow!("no such file").context("could not read w.yml");
        let error = anyhow::Error::new(ProgramError::invalid(inner));
        assert_eq!(format!("{error:#}"), "could not read w.yml: no such file");
    }
}
