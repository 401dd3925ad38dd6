//! A source that can stop taking jobs while it goes on reporting the ones it took.
//!
//! `serve_source` has one stop for both halves, and ends its reporting as soon as the
//! source's `next` returns `None`. A stopping runner must do the two apart: stop
//! asking GitHub for jobs at once (a job acquired now would never run), then report
//! the jobs still running until they end. [`Pausable`] gives `next` a second reason
//! to end: once paused, the wrapped source's `next` is cancelled (it ends cleanly on
//! its token). Whenever the wrapped `next` ends without a job before the real stop
//! (paused, or GitHub asked the runner to shut down), `next` waits for that stop
//! instead of returning `None`.

use async_trait::async_trait;
use solstice_core::{JobEvent, JobSource, ReportOutcome, SourceError, SourceMessage};
use tokio_util::sync::CancellationToken;

/// `inner`, whose fetching stops when `paused` fires.
pub(crate) struct Pausable<S> {
    pub(crate) inner: S,
    pub(crate) paused: CancellationToken,
}

#[async_trait]
impl<S: JobSource> JobSource for Pausable<S> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn next(&self, cancel: &CancellationToken) -> Result<Option<SourceMessage>, SourceError> {
        // Fired by a pause or by the caller's own stop. The wrapped `next` runs to its
        // end either way: dropping it halfway could lose a job it was acquiring.
        let fetch = self.paused.child_token();
        let follow_stop = {
            let fetch = fetch.clone();
            async move {
                cancel.cancelled().await;
                fetch.cancel();
                std::future::pending::<()>().await;
            }
        };
        let fetched = tokio::select! {
            fetched = self.inner.next(&fetch) => fetched,
            () = follow_stop => unreachable!("follow_stop never ends"),
        };
        match fetched {
            Ok(None) if !cancel.is_cancelled() => {
                // Paused, or the source has nothing more to hand out (GitHub asked the
                // runner to shut down), but not stopped: keep the reporting alive.
                cancel.cancelled().await;
                Ok(None)
            }
            other => other,
        }
    }

    async fn report(&self, event: &JobEvent) -> Result<ReportOutcome, SourceError> {
        self.inner.report(event).await
    }
}
