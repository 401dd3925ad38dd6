//! Capped exponential backoff, and retrying an operation with it while its failure is
//! transient.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::QueueError;

/// Capped exponential backoff for retrying an unreachable forge, queue or database.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `first`, doubles after each failure, never waits longer than `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// The delay before the next try; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Back to the first delay, after a success.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// Sleeps for the next delay; returns `false` if `cancel` fired first.
    pub async fn wait(&mut self, cancel: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = cancel.cancelled() => false,
        }
    }
}

impl Default for Backoff {
    /// 250 ms, doubling up to 30 s.
    fn default() -> Self {
        Self::new(Duration::from_millis(250), Duration::from_secs(30))
    }
}

/// Runs `attempt` until it succeeds, waiting with [`Backoff`] after each transient
/// failure (a broker that is down, restarting, or refusing for a moment), so that a
/// service started before its broker, or during a broker restart, waits instead of
/// exiting. `what` names the operation in the logs.
///
/// Returns `Ok(None)` when `stop` fired first.
///
/// # Errors
/// The first failure that is not [transient](QueueError::is_transient).
pub async fn retry_while_unavailable<T, F, Fut>(
    what: &str,
    stop: &CancellationToken,
    mut attempt: F,
) -> Result<Option<T>, QueueError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, QueueError>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
    let mut failures = 0_u32;
    loop {
        let outcome = tokio::select! {
            outcome = attempt() => outcome,
            () = stop.cancelled() => return Ok(None),
        };
        match outcome {
            Ok(value) => {
                if failures > 0 {
                    tracing::info!(what, failures, "the queue answers again");
                }
                return Ok(Some(value));
            }
            Err(e) if e.is_transient() => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!(what, failures, error = %crate::support::error_chain(&e), "the queue is unavailable; retrying");
                }
                if !backoff.wait(stop).await {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let delays: Vec<_> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }

    fn unavailable() -> QueueError {
        QueueError::Unavailable("the broker is restarting".into())
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_the_queue_answers() {
        let calls = AtomicU32::new(0);
        let stop = CancellationToken::new();
        let got = retry_while_unavailable("test", &stop, || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0..=2 => Err(unavailable()),
                n => Ok(n),
            }
        })
        .await;
        assert!(matches!(got, Ok(Some(3))), "{got:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lasting_failure_is_returned_at_once() {
        let calls = AtomicU32::new(0);
        let stop = CancellationToken::new();
        let got: Result<Option<()>, _> = retry_while_unavailable("test", &stop, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(QueueError::Closed)
        })
        .await;
        assert!(matches!(got, Err(QueueError::Closed)), "{got:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_ends_the_retries() {
        let stop = CancellationToken::new();
        let stopper = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                stop.cancel();
            })
        };
        let got: Result<Option<()>, _> =
            retry_while_unavailable("test", &stop, || async { Err(unavailable()) }).await;
        assert!(matches!(got, Ok(None)), "{got:?}");
        stopper.await.expect("the stopper ran");
    }
}
