//! The runner-service side: jobs from a [`JobSource`] into the queue, events back.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{Backoff, JobQueue, JobRequest, JobSource, QueueError, ReportOutcome, SourceMessage, retry_while_unavailable};

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
    let consume = || queue.consume_events(source.name());
    let Some(mut events) = retry_while_unavailable("consume events", &stop, consume).await? else {
        return Ok(());
    };
    let publish_stop = stop.clone();
    let reporter = {
        let source = source.clone();
        let queue = queue.clone();
        let stop = stop.clone();
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
                loop {
                    match source.report(&delivery.event).await {
                        Ok(ReportOutcome::Continue) => break,
                        Ok(ReportOutcome::CancelRequested) => {
                            publish_cancel(queue.as_ref(), delivery.event.job_id, &stop).await;
                            break;
                        }
                        Err(e) if e.is_transient() => {
                            tracing::warn!(job_id = %delivery.event.job_id, error = %e, "reporting failed; retrying");
                            if !backoff.wait(&stop).await {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::error!(job_id = %delivery.event.job_id, seq = delivery.event.seq, error = %e, "event refused by the source; dropping it");
                            break;
                        }
                    }
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
    let fetcher = async move {
        let mut backoff = Backoff::default();
        loop {
            let message = match source.next(&stop).await {
                Ok(Some(message)) => message,
                Ok(None) => return,
                Err(e) if e.is_transient() => {
                    tracing::warn!(source = source.name(), error = %e, "source unavailable; retrying");
                    if !backoff.wait(&stop).await {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!(source = source.name(), error = %e, "source failed; retrying");
                    if !backoff.wait(&stop).await {
                        return;
                    }
                    continue;
                }
            };
            backoff.reset();
            if outgoing.send(message).await.is_err() {
                return;
            }
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
    tokio::select! {
        ((), ()) = async { tokio::join!(fetcher, publisher) } => {}
        () = reporter => {}
    }
    Ok(())
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
