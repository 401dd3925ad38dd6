//! The [`JobSource`] seam: where jobs come from and where their progress goes.

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::{JobEvent, JobId, JobRequest};

/// What a source yields.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SourceMessage {
    /// A new job to run.
    Job(Box<JobRequest>),
    /// The forge cancelled a job this source issued.
    Cancel(JobId),
}

/// What the forge said back to a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutcome {
    /// Carry on.
    Continue,
    /// The forge wants the job stopped (Forgejo answers CANCELLED to `UpdateTask`).
    CancelRequested,
}

/// Why a source failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The forge could not be reached or answered with a server error; retry with backoff.
    #[error("the forge is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The runner's credentials were refused.
    #[error("the forge refused the runner's credentials")]
    Unauthorized(#[source] Option<Box<dyn std::error::Error + Send + Sync>>),
    /// The event is about a job this source does not know (already finished or never issued).
    #[error("job {0} is not known to this source")]
    UnknownJob(JobId),
    /// Anything else.
    #[error("{message}")]
    Other {
        /// What failed.
        message: String,
        /// The cause.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl SourceError {
    /// Whether a retry with backoff may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// A place jobs come from: a forge's runner protocol, a local workflow file, or
/// whatever a user writes.
///
/// # Contract
/// - [`next`](JobSource::next) waits (long-poll or poll) for the next message and returns
///   `Ok(None)` when the source has nothing more to give (a finished local workflow) or
///   `cancel` fired. A job's [`JobId`] must be stable across redelivery of the same
///   forge job ([`JobId::from_external`]).
/// - [`report`](JobSource::report) is called with every event of every job the source
///   issued, in `(attempt, seq)` order; it must be idempotent for an event it has seen
///   (reporters resend after errors). A transient error is retried with backoff by the
///   caller, so nothing is lost.
///
/// # Example
/// ```
/// use async_trait::async_trait;
/// use solstice_core::{JobEvent, JobRequest, JobSource, ReportOutcome, SourceError, SourceMessage};
/// use std::sync::Mutex;
/// use tokio_util::sync::CancellationToken;
///
/// /// Hands out a fixed list of jobs and prints what happens to them.
/// struct ListSource(Mutex<Vec<JobRequest>>);
///
/// #[async_trait]
/// impl JobSource for ListSource {
///     fn name(&self) -> &str { "list" }
///     async fn next(&self, _cancel: &CancellationToken) -> Result<Option<SourceMessage>, SourceError> {
///         let job = self.0.lock().map_err(|_| SourceError::Other { message: "poisoned".into(), source: None })?.pop();
///         Ok(job.map(|job| SourceMessage::Job(Box::new(job))))
///     }
///     async fn report(&self, event: &JobEvent) -> Result<ReportOutcome, SourceError> {
///         println!("{} #{}: {:?}", event.job_id, event.seq, event.kind);
///         Ok(ReportOutcome::Continue)
///     }
/// }
/// ```
#[async_trait]
pub trait JobSource: Send + Sync + 'static {
    /// The source's name; events for its jobs are routed back by it. Unique among the
    /// sources sharing a queue.
    fn name(&self) -> &str;

    /// The next job or cancellation.
    ///
    /// # Errors
    /// [`SourceError`]; transient ones are retried by the caller.
    ///
    /// # Cancel safety
    /// Must be cancel safe: a dropped `next` loses no job.
    async fn next(&self, cancel: &CancellationToken) -> Result<Option<SourceMessage>, SourceError>;

    /// Passes an event of one of this source's jobs to the forge.
    ///
    /// A job that ends [`Cancelled`](crate::JobResult::Cancelled) although this source
    /// never asked for it (no [`SourceMessage::Cancel`], no
    /// [`ReportOutcome::CancelRequested`]) was stopped by the shutdown of the process
    /// running it: report it as the forge's own runner reports a job its shutdown
    /// interrupted.
    ///
    /// # Errors
    /// [`SourceError`]; transient ones are retried by the caller with the same event.
    async fn report(&self, event: &JobEvent) -> Result<ReportOutcome, SourceError>;

    /// Called once by [`RunnerService`](crate::RunnerService) before the first
    /// [`next`](JobSource::next): announce the runner to the forge (Forgejo's
    /// `Declare`), check its credentials. The default does nothing.
    ///
    /// # Errors
    /// [`SourceError`]: transient ones are retried with backoff,
    /// [`SourceError::Unauthorized`] stops the service.
    async fn open(&self) -> Result<(), SourceError> {
        Ok(())
    }

    /// Stops taking new jobs while reporting goes on: afterwards [`next`](JobSource::next)
    /// yields only cancellations of jobs already issued. Returns whether the source can
    /// do that; the default cannot, and the service then stops calling `next` at once
    /// when it stops taking jobs (so the forge's cancellations of running jobs no longer
    /// arrive through `next`).
    fn pause(&self) -> bool {
        false
    }

    /// Called once by [`RunnerService`](crate::RunnerService) after the last event was
    /// passed to [`report`](JobSource::report): send what is still buffered within
    /// `limit`, then release what the source holds at the forge (a session). The
    /// default does nothing.
    async fn close(&self, limit: std::time::Duration) {
        let _ = limit;
    }
}
