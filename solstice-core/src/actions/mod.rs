//! The [`ActionFetcher`] seam: where the files of a remote `uses:` action come from.
//!
//! The engine runs action steps ([`crate::StepAction::Action`]). A local action
//! (`uses: ./path`) is already in the machine's workspace; a remote one
//! (`owner/repo[/path]@ref`) is fetched on the runner's host by an [`ActionFetcher`], then
//! copied into the machine.

use std::path::PathBuf;

use async_trait::async_trait;
use solstice_workflow::ActionReference;
use tokio_util::sync::CancellationToken;

use crate::JobRequest;

/// A remote action's repository, fetched onto the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedAction {
    /// The root of the repository's files at the resolved commit, on the host. The
    /// fetcher owns it (a cache entry): callers read and copy it, never change it.
    pub dir: PathBuf,
    /// The commit the ref resolved to, when the forge or the fetch told it.
    pub commit: Option<String>,
}

/// Why a remote action could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActionFetchError {
    /// The forge answered that the action (or its ref) does not exist or may not be read.
    #[error("the action {action} could not be found: {reason}")]
    NotFound {
        /// `owner/repo@ref` as written.
        action: String,
        /// The forge's answer.
        reason: String,
    },
    /// The action is not in the cache and the fetcher may not go to the network.
    #[error("the action {action} is not in the action cache and fetching is off (offline mode)")]
    Offline {
        /// `owner/repo@ref` as written.
        action: String,
    },
    /// The fetch failed after its retries (network, forge error, bad archive).
    #[error("could not fetch the action {action}")]
    Fetch {
        /// `owner/repo@ref` as written.
        action: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The reference names no remote action (a local or `docker://` one).
    #[error("{0} is not a remote action")]
    NotRemote(String),
}

/// Fetches remote actions onto the runner's host.
///
/// # Contract
/// - `fetch` returns a directory holding the action repository's files at the commit
///   `reference`'s ref names, whole (the action may live in a sub-directory, see
///   [`ActionReference::Remote::path`]).
/// - It fetches from the forge `job` came from (the job's origin and contexts say which),
///   retries transient errors with backoff, and honours `cancel`.
/// - The same reference at the same commit may be served from a cache.
#[async_trait]
pub trait ActionFetcher: Send + Sync + 'static {
    /// Fetches `reference`'s repository for `job`.
    ///
    /// # Errors
    /// [`ActionFetchError`] naming the action and the reason.
    async fn fetch(
        &self,
        reference: &ActionReference,
        job: &JobRequest,
        cancel: &CancellationToken,
    ) -> Result<FetchedAction, ActionFetchError>;
}
