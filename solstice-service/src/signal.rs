//! The stop signal of the services: one listener, and one grace period.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Resolves on SIGINT or SIGTERM. If SIGTERM cannot be listened for, logs so and waits
/// for SIGINT alone.
///
/// # Cancel safety
/// Cancel safe; each call listens afresh, so awaiting it again waits for another signal.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the service");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// How a service stops, the same for every program: the first SIGTERM or SIGINT (or
/// [`Shutdown::begin`]) fires [`stop`](Shutdown::stop): no new job is taken, running
/// jobs may finish. After `shutdown_grace`, or at a second signal, [`abort`](Shutdown::abort)
/// fires: running jobs are cancelled and reported as cancelled.
#[derive(Debug, Clone)]
pub struct Shutdown {
    stop: CancellationToken,
    abort: CancellationToken,
    signalled: CancellationToken,
}

impl Shutdown {
    /// Listens for the signals from now on (in a task of the current runtime), with
    /// `grace` between stop and abort.
    pub fn on_signals(grace: Duration) -> Self {
        let shutdown = Self { stop: CancellationToken::new(), abort: CancellationToken::new(), signalled: CancellationToken::new() };
        let Shutdown { stop, abort, signalled } = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown_signal() => {
                    signalled.cancel();
                    tracing::info!(grace = ?grace, "shutting down: no new jobs; running jobs may finish (send another signal to cancel them)");
                }
                () = stop.cancelled() => {}
                () = abort.cancelled() => return,
            }
            stop.cancel();
            tokio::select! {
                () = tokio::time::sleep(grace) => tracing::warn!("grace period over: cancelling running jobs"),
                () = shutdown_signal() => tracing::warn!("second signal: cancelling running jobs"),
                () = abort.cancelled() => return,
            }
            abort.cancel();
        });
        shutdown
    }

    /// Stops as a signal would, without one (a service that ended on its own).
    pub fn begin(&self) {
        self.stop.cancel();
    }

    /// Fires when no new job may be taken.
    pub fn stop(&self) -> &CancellationToken {
        &self.stop
    }

    /// Fires when running jobs are to be cancelled.
    pub fn abort(&self) -> &CancellationToken {
        &self.abort
    }

    /// Whether a signal (rather than [`Shutdown::begin`]) started the shutdown.
    pub fn signalled(&self) -> bool {
        self.signalled.is_cancelled()
    }

    /// The same stop as [`solstice_core::Shutdown`], for a
    /// [`RunnerService`](solstice_core::RunnerService): it drains when
    /// [`stop`](Shutdown::stop) fires and aborts when [`abort`](Shutdown::abort) does.
    pub fn for_service(&self) -> solstice_core::Shutdown {
        let service = solstice_core::Shutdown::new();
        let (stop, abort, bridged) = (self.stop.clone(), self.abort.clone(), service.clone());
        tokio::spawn(async move {
            stop.cancelled().await;
            bridged.drain();
            abort.cancelled().await;
            bridged.abort();
        });
        service
    }

    /// Ends the listener once the service has stopped (it would otherwise wait out
    /// the grace period).
    pub fn finish(&self) {
        self.abort.cancel();
    }
}
