//! The runner-service side: jobs from a [`JobSource`] into the queue, events back.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::service::Ledger;
use crate::{
    JobEvent, JobQueue, JobRequest, JobSource, QueueError, ReportOutcome, SourceMessage,
};
use crate::support::{Backoff, retry_while_unavailable};

/// How many jobs [`serve_source`] has being published (awaiting the broker's confirm)
/// at once.
const PUBLISH_WINDOW: usize = 64;

/// Serves a job source: its jobs go into the queue, the events of its jobs go back to
/// it, and the forge's cancellations reach the orchestrators.
///
/// Jobs are published with up to 64 awaiting the broker's confirm at once (a
/// cancellation waits until the jobs fetched before it are queued). Unreachable forges
/// and queues are retried with [`Backoff`]; an event is acknowledged to the queue only
/// after the source accepted it, so nothing is lost across restarts.
/// Returns when the source has no more jobs (`next` gave `None`) or `stop` fired.
///
/// # Errors
/// [`QueueError`] when the event route cannot be opened for a reason that is not
/// transient; a broker that is down is waited for (see [`retry_while_unavailable`]).
pub async fn serve_source(
    source: Arc<dyn JobSource>,
    queue: Arc<dyn JobQueue>,
    stop: CancellationToken,
) -> Result<(), QueueError> {
    let halves = Halves {
        fetch_stop: stop.clone(),
        stop,
        ledger: None,
        fetch_ended: CancellationToken::new(),
        report_after_fetch: false,
    };
    dispatch(source, queue, halves).await
}

/// How [`dispatch`] stops, and what it tells its caller.
pub(crate) struct Halves {
    /// Stops fetching: no new job is taken from the source (a source that can
    /// [`pause`](JobSource::pause) is paused and still yields cancellations until `stop`).
    pub(crate) fetch_stop: CancellationToken,
    /// Stops everything, reporting included.
    pub(crate) stop: CancellationToken,
    /// Where the jobs issued and the events reported are counted, if anyone asks.
    pub(crate) ledger: Option<Arc<Ledger>>,
    /// Fired when the fetching half ended: `fetch_stop`, or the source had no more jobs.
    pub(crate) fetch_ended: CancellationToken,
    /// Whether reporting goes on after fetching ended, until `stop`; otherwise
    /// everything ends with the fetching.
    pub(crate) report_after_fetch: bool,
}

/// [`serve_source`] with fetching and reporting stopped apart (see [`Halves`]).
pub(crate) async fn dispatch(source: Arc<dyn JobSource>, queue: Arc<dyn JobQueue>, halves: Halves) -> Result<(), QueueError> {
    let Halves { fetch_stop, stop, ledger, fetch_ended, report_after_fetch } = halves;
    let consume = || queue.consume_events(source.name());
    let Some(mut events) = retry_while_unavailable("consume events", &stop, consume).await? else {
        fetch_ended.cancel();
        return Ok(());
    };
    let publish_stop = stop.clone();
    let reporter = {
        let source = source.clone();
        let queue = queue.clone();
        let stop = stop.clone();
        let ledger = ledger.clone();
        async move {
            let mut backoff = Backoff::default();
            loop {
                let delivery = tokio::select! {
                    d = events.next() => d,
                    _ = stop.cancelled() => return,
                };
                let delivery = match delivery {
                    Ok(d) => d,
                    Err(QueueError::Closed) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "event queue unavailable; retrying");
                        if !backoff.wait(&stop).await {
                            return;
                        }
                        continue;
                    }
                };
                backoff.reset();
                tracing::trace!(job_id = %delivery.event.job_id, attempt = delivery.event.attempt, seq = delivery.event.seq, "event from the queue");
                if !report_event(source.as_ref(), queue.as_ref(), &delivery.event, &stop, &mut backoff).await {
                    return;
                }
                if let Some(ledger) = &ledger {
                    ledger.reported(&delivery.event);
                }
                backoff.reset();
                if let Err(e) = delivery.acker.ack().await {
                    tracing::warn!(error = %e, "could not acknowledge an event; it will be delivered again");
                }
            }
        }
    };
    // The fetcher takes jobs from the source; the publisher keeps up to
    // PUBLISH_WINDOW of them being published at once, so that broker confirms overlap
    // instead of costing one round trip per job. A cancellation waits until the jobs
    // fetched before it are queued.
    let (outgoing, mut to_publish) = mpsc::channel::<SourceMessage>(PUBLISH_WINDOW);
    let fetcher = {
        let (stop, fetch_ended) = (stop.clone(), fetch_ended.clone());
        async move {
            fetch(source.as_ref(), &fetch_stop, &stop, ledger.as_deref(), &outgoing).await;
            fetch_ended.cancel();
        }
    };
    let publisher = async {
        let mut in_flight = FuturesUnordered::new();
        loop {
            tokio::select! {
                Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
                message = to_publish.recv(), if in_flight.len() < PUBLISH_WINDOW => match message {
                    Some(SourceMessage::Job(job)) => in_flight.push(publish_job(queue.as_ref(), job, &publish_stop)),
                    Some(SourceMessage::Cancel(id)) => {
                        while in_flight.next().await.is_some() {}
                        publish_cancel(queue.as_ref(), id, &publish_stop).await;
                    }
                    None => {
                        while in_flight.next().await.is_some() {}
                        return;
                    }
                },
            }
        }
    };
    // Fetching may end long before reporting does (a paused source, an ephemeral
    // runner's one job): the reporter goes on until `stop`.
    let fetching = async {
        tokio::join!(fetcher, publisher);
        if report_after_fetch {
            stop.cancelled().await;
        }
    };
    tokio::select! {
        () = fetching => {}
        () = reporter => {}
    }
    fetch_ended.cancel();
    Ok(())
}

/// Takes messages from `source` until `fetch_stop` (or the source has nothing more),
/// then, if the source can pause, only its cancellations until `stop`.
async fn fetch(
    source: &dyn JobSource,
    fetch_stop: &CancellationToken,
    stop: &CancellationToken,
    ledger: Option<&Ledger>,
    outgoing: &mpsc::Sender<SourceMessage>,
) {
    let mut backoff = Backoff::default();
    let mut paused = false;
    loop {
        if fetch_stop.is_cancelled() && !paused {
            if !source.pause() {
                return;
            }
            paused = true;
        }
        // Awaited to its end, never dropped: a `next` cut off halfway could lose a job
        // it was acquiring. Its token tells it to finish.
        let token = if paused { stop } else { fetch_stop };
        let message = match source.next(token).await {
            Ok(Some(message)) => message,
            Ok(None) if token.is_cancelled() && !paused => continue,
            Ok(None) => return,
            Err(e) => {
                if e.is_transient() {
                    tracing::warn!(source = source.name(), error = %e, "source unavailable; retrying");
                } else {
                    tracing::error!(source = source.name(), error = %e, "source failed; retrying");
                }
                if !backoff.wait(token).await && paused {
                    return;
                }
                continue;
            }
        };
        backoff.reset();
        if let SourceMessage::Job(job) = &message {
            if paused {
                // A paused source must not hand out jobs; this one would never run.
                tracing::error!(source = source.name(), job_id = %job.id, "a paused source issued a job; it is not queued");
                continue;
            }
            if let Some(ledger) = ledger {
                ledger.issued(job.id);
            }
        }
        if outgoing.send(message).await.is_err() {
            return;
        }
    }
}

/// Passes one event to the source until it is taken, refused, or `stop` fires (false).
async fn report_event(
    source: &dyn JobSource,
    queue: &dyn JobQueue,
    event: &JobEvent,
    stop: &CancellationToken,
    backoff: &mut Backoff,
) -> bool {
    loop {
        match source.report(event).await {
            Ok(ReportOutcome::Continue) => return true,
            Ok(ReportOutcome::CancelRequested) => {
                publish_cancel(queue, event.job_id, stop).await;
                return true;
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(job_id = %event.job_id, error = %e, "reporting failed; retrying");
                if !backoff.wait(stop).await {
                    return false;
                }
            }
            Err(e) => {
                tracing::error!(job_id = %event.job_id, seq = event.seq, error = %e, "event refused by the source; dropping it");
                return true;
            }
        }
    }
}

/// Publishes a job, retrying with backoff until the broker confirms it or `stop` fires.
async fn publish_job(queue: &dyn JobQueue, job: Box<JobRequest>, stop: &CancellationToken) {
    let mut backoff = Backoff::default();
    loop {
        match queue.publish_job(&job).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(job_id = %job.id, error = %e, "could not queue a job; retrying");
                if !backoff.wait(stop).await {
                    tracing::error!(job_id = %job.id, "stopping with a job fetched from the source but not queued");
                    return;
                }
            }
        }
    }
}

async fn publish_cancel(queue: &dyn JobQueue, id: crate::JobId, stop: &CancellationToken) {
    let mut backoff = Backoff::default();
    while let Err(e) = queue.publish_cancel(id).await {
        tracing::warn!(job_id = %id, error = %e, "could not send a cancellation; retrying");
        if !backoff.wait(stop).await {
            return;
        }
    }
}
