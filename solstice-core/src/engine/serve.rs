//! Serving a queue: up to `capacity` jobs at once, events back to their sources.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Engine;
#[cfg(feature = "_store")]
use crate::JobEventKind;
use crate::{
    JobDelivery, JobEvent, JobId, JobQueue, JobRequest, QueueError,
};
use crate::support::{Backoff, retry_while_unavailable};
use time::OffsetDateTime;

/// How many cancellations of jobs not (yet) running here are remembered, in case the
/// job is delivered later; the oldest are forgotten first.
const EARLY_CANCELS_KEPT: usize = 10_000;

/// At most this many of a job's events are published together.
const EVENT_BATCH: usize = 256;

/// How long after a held job's lease ends its holder asks again.
const HOLD_MARGIN: Duration = Duration::from_millis(100);

/// What claiming a delivered job came to.
enum Taken {
    /// Run it as this attempt.
    Run(u32),
    /// It finished before: acknowledge it.
    Finished,
    /// Give it back to the queue, for this reason.
    GiveBack(&'static str),
}

/// What the store said to one claim.
#[cfg_attr(not(feature = "_store"), allow(dead_code))]
enum Outcome {
    Run(u32),
    Finished,
    /// Running elsewhere under a live lease.
    Held { owner: String, until: OffsetDateTime },
}

/// A claim that failed, and whether a retry may succeed.
struct ClaimFailed {
    transient: bool,
    why: String,
}

/// The jobs running here, and cancellations that arrived before their job did (the
/// forge cancelled a job still waiting in the queue). One lock, so a cancellation can
/// never fall between "not running yet" and "started".
#[derive(Debug, Default)]
struct Tracking {
    running: HashMap<JobId, CancellationToken>,
    early_cancels: VecDeque<JobId>,
}

impl Tracking {
    /// Cancels the job if it runs here, or remembers the cancellation for later.
    fn cancel(&mut self, id: JobId) {
        if let Some(token) = self.running.get(&id) {
            tracing::info!(job_id = %id, "cancelling job on request");
            token.cancel();
        } else if !self.early_cancels.contains(&id) {
            if self.early_cancels.len() == EARLY_CANCELS_KEPT {
                self.early_cancels.pop_front();
            }
            self.early_cancels.push_back(id);
        }
    }

    /// Registers a starting job; its token is cancelled at once if a cancellation for it
    /// came first.
    fn start(&mut self, id: JobId, token: &CancellationToken) {
        if let Some(pos) = self.early_cancels.iter().position(|c| *c == id) {
            self.early_cancels.remove(pos);
            tracing::info!(job_id = %id, "job was cancelled while queued");
            token.cancel();
        }
        self.running.insert(id, token.clone());
    }
}

type Running = Arc<Mutex<Tracking>>;

impl Engine {
    /// Takes jobs routed to `labels` from `queue` and runs up to
    /// [`capacity`](Engine::capacity) of them at once, publishing their events back
    /// to each job's source and obeying cancellation requests.
    ///
    /// With a [`Store`](crate::Store), each job is claimed before it runs (a redelivered
    /// job that already finished is acknowledged and dropped) and its final state is
    /// recorded before the delivery is acknowledged.
    ///
    /// When `stop` fires, no new job is taken and the call returns once the running
    /// jobs ended; `abort` cancels the running jobs (they end as cancelled).
    ///
    /// # Errors
    /// [`EngineError`](super::EngineError) when the queue cannot be opened for a
    /// reason that is not transient; a broker that is down or restarting is waited for
    /// (see [`retry_while_unavailable`](crate::support::retry_while_unavailable)).
    pub async fn serve(
        &self,
        queue: Arc<dyn JobQueue>,
        labels: &[String],
        stop: CancellationToken,
        abort: CancellationToken,
    ) -> Result<(), super::EngineError> {
        // A broker that is down or restarting when serving starts is waited for, like
        // one that goes away later.
        let capacity = self.capacity();
        let Some(mut consumer) = retry_while_unavailable("consume jobs", &stop, || {
            queue.consume_jobs(labels, capacity)
        })
        .await?
        else {
            return Ok(());
        };
        let Some(mut cancels) =
            retry_while_unavailable("consume cancellations", &stop, || queue.consume_cancels())
                .await?
        else {
            return Ok(());
        };
        let running: Running = Arc::default();
        // Leases name this serving instance, not just the orchestrator: a restarted
        // orchestrator of the same name must not mistake its predecessor's lease for
        // its own.
        let holder: Arc<str> = format!("{}/{}", self.inner.name, uuid::Uuid::new_v4().simple()).into();
        let tracker = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(self.capacity()));

        // The forge may cancel a job while it finishes after `stop` (a service draining
        // for its grace period): cancellations are listened for until the last job ends.
        let cancels_stop = CancellationToken::new();
        let jobs = TaskTracker::new();
        let cancel_listener = {
            let running = running.clone();
            let stop = cancels_stop.clone();
            tracker.spawn(async move {
                loop {
                    let id = tokio::select! {
                        id = cancels.next() => id,
                        _ = stop.cancelled() => return,
                    };
                    match id {
                        Ok(id) => {
                            if let Ok(mut tracking) = running.lock() {
                                tracking.cancel(id);
                            }
                        }
                        Err(QueueError::Closed) => return,
                        Err(e) => {
                            tracing::warn!(error = %e, "cancel queue unavailable");
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        }
                    }
                }
            })
        };

        // The queue depth for /metrics, polled: no backend pushes it. It ends with the
        // loop below, whyever that ends.
        let poll_stop = stop.child_token();
        let depth_poller = {
            let (queue, labels, stop, metrics) = (queue.clone(), labels.to_vec(), poll_stop.clone(), self.inner.metrics.clone());
            let interval = self.inner.queue_depth_interval;
            tracker.spawn(async move {
                loop {
                    let waiting = tokio::select! {
                        w = queue.waiting_jobs(&labels) => w,
                        _ = stop.cancelled() => return,
                    };
                    match waiting {
                        Ok(Some(waiting)) => metrics.set_queue_depth(waiting),
                        Ok(None) | Err(QueueError::Closed) => return,
                        Err(e) => tracing::debug!(error = %e, "could not read the queue depth"),
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        _ = stop.cancelled() => return,
                    }
                }
            })
        };

        let mut backoff = Backoff::default();
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = stop.cancelled() => break,
            };
            let delivery = tokio::select! {
                d = consumer.next() => d,
                _ = stop.cancelled() => break,
            };
            let delivery = match delivery {
                Ok(d) => d,
                Err(QueueError::Closed) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "job queue unavailable; retrying");
                    if !backoff.wait(&stop).await {
                        break;
                    }
                    continue;
                }
            };
            backoff.reset();
            let engine = self.clone();
            let queue = queue.clone();
            let running = running.clone();
            let token = abort.child_token();
            let (stop, holder) = (stop.clone(), holder.clone());
            jobs.spawn(async move {
                engine.handle_delivery(delivery, queue, running, token, stop, holder).await;
                drop(permit);
            });
        }
        poll_stop.cancel();
        jobs.close();
        jobs.wait().await;
        cancels_stop.cancel();
        tracker.close();
        // The depth poller ended with `stop`, the cancel listener with the last job.
        tracker.wait().await;
        drop((cancel_listener, depth_poller));
        Ok(())
    }

    async fn handle_delivery(
        &self,
        delivery: JobDelivery,
        queue: Arc<dyn JobQueue>,
        running: Running,
        cancel: CancellationToken,
        stop: CancellationToken,
        holder: Arc<str>,
    ) {
        let JobDelivery { job, redelivered, acker } = delivery;
        let attempt = match self.take(&job, redelivered, &holder, &stop).await {
            Taken::Run(attempt) => attempt,
            Taken::Finished => {
                // The job ended before; its final event may not have reached the source
                // (the orchestrator died between recording and publishing it), so it is
                // sent again. The source drops it if it had it: (attempt, seq) match.
                tracing::info!(job_id = %job.id, "job already finished; resending its final event");
                if let Some(event) = self.stored_final_event(job.id).await {
                    let mut backoff = Backoff::default();
                    while let Err(e) = queue.publish_event(&job.origin.source, &event).await {
                        tracing::warn!(job_id = %job.id, error = %e, "could not resend the final event; retrying");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
                let _ = acker.ack().await;
                return;
            }
            Taken::GiveBack(reason) => {
                let _ = acker.nack(true, reason).await;
                return;
            }
        };
        if let Ok(mut r) = running.lock() {
            r.start(job.id, &cancel);
        }
        // Fired when another instance took the job over (this one's lease expired while
        // the store was out of reach): from then on this run reports nothing.
        let lost = CancellationToken::new();
        let (tx, mut rx) = mpsc::channel::<JobEvent>(256);
        let route = job.origin.source.clone();
        let forward = async {
            let mut backoff = Backoff::default();
            let mut batch = Vec::new();
            while let Some(event) = rx.recv().await {
                // Events that piled up while the previous batch was being confirmed go
                // out together: one message and one confirm for all of them.
                batch.push(event);
                while batch.len() < EVENT_BATCH
                    && let Ok(event) = rx.try_recv()
                {
                    batch.push(event);
                }
                tracing::trace!(job_id = %job.id, first = batch[0].seq, events = batch.len(), "publishing a batch of events");
                for event in &batch {
                    if !self.record(event, &holder).await {
                        lost.cancel();
                    }
                }
                if lost.is_cancelled() {
                    // The new owner reports the job; two attempts' events interleaved
                    // would confuse the forge.
                    tracing::debug!(job_id = %job.id, events = batch.len(), "lease lost; dropping events");
                    batch.clear();
                    continue;
                }
                // Events are never dropped: an unreachable queue is retried until it
                // comes back.
                while let Err(e) = queue.publish_events(&route, &batch).await {
                    let first = batch.first().map_or(0, |event| event.seq);
                    tracing::warn!(job_id = %job.id, seq = first, events = batch.len(), error = %e, "could not publish events; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                tracing::trace!(job_id = %job.id, first = batch[0].seq, events = batch.len(), "batch of events confirmed");
                backoff.reset();
                batch.clear();
            }
        };
        let run = async {
            let tx = tx;
            self.run_attempt(&job, attempt, tx, cancel.clone()).await
        };
        let result = tokio::select! {
            (result, ()) = async { tokio::join!(run, forward) } => result,
            () = self.keep_lease(job.id, &holder, &lost, &cancel) => unreachable!("keep_lease never returns"),
        };
        tracing::info!(job_id = %job.id, %result, "job finished");
        if let Ok(mut r) = running.lock() {
            r.running.remove(&job.id);
        }
        if let Err(e) = acker.ack().await {
            tracing::warn!(job_id = %job.id, error = %e, "could not acknowledge the job");
        }
    }

    /// Claims a delivered job, waiting as long as it runs elsewhere under a live lease
    /// and retrying with backoff while the store is unreachable. Waiting keeps the
    /// delivery unsettled: handing it back would count as a delivery, and on a quorum
    /// queue enough of those dead-letter a healthy job.
    async fn take(&self, job: &JobRequest, redelivered: bool, holder: &str, stop: &CancellationToken) -> Taken {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
        let mut holding = false;
        loop {
            let wait = match self.claim(job, redelivered, holder).await {
                Ok(Outcome::Run(attempt)) => {
                    if holding {
                        tracing::info!(job_id = %job.id, attempt, "the lease on a held job expired; taking it over");
                    }
                    return Taken::Run(attempt);
                }
                Ok(Outcome::Finished) => return Taken::Finished,
                Ok(Outcome::Held { owner, until }) => {
                    if !holding {
                        tracing::info!(job_id = %job.id, %owner, "job is running elsewhere under a live lease; holding its redelivery");
                        holding = true;
                    }
                    let remaining = Duration::try_from(until - OffsetDateTime::now_utc()).unwrap_or(Duration::ZERO);
                    (remaining + HOLD_MARGIN).min(self.inner.claim_lease / 3)
                }
                Err(ClaimFailed { transient: true, why }) => {
                    tracing::warn!(job_id = %job.id, error = %why, "could not claim job; retrying");
                    backoff.next_delay()
                }
                Err(ClaimFailed { transient: false, why }) => {
                    tracing::warn!(job_id = %job.id, error = %why, "could not claim job; handing it back");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    return Taken::GiveBack("claim failed");
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => return Taken::GiveBack("orchestrator stopping"),
            }
        }
    }

    #[cfg(feature = "_store")]
    async fn claim(&self, job: &JobRequest, redelivered: bool, holder: &str) -> Result<Outcome, ClaimFailed> {
        let Some(store) = &self.inner.store else {
            return Ok(Outcome::Run(if redelivered { 2 } else { 1 }));
        };
        let failed = |e: crate::StoreError| ClaimFailed { transient: e.is_transient(), why: crate::support::error_chain(&e) };
        store.record_queued(job).await.map_err(failed)?;
        let claim = store.claim_leased(job.id, &self.inner.name, holder, self.inner.claim_lease).await.map_err(failed)?;
        Ok(match claim {
            crate::Claim::Claimed { attempt } => Outcome::Run(attempt),
            crate::Claim::Held { owner, until } => Outcome::Held { owner, until },
            crate::Claim::Finished => Outcome::Finished,
        })
    }

    #[cfg(not(feature = "_store"))]
    async fn claim(&self, _job: &JobRequest, redelivered: bool, _holder: &str) -> Result<Outcome, ClaimFailed> {
        Ok(Outcome::Run(if redelivered { 2 } else { 1 }))
    }

    /// Renews this instance's lease on a running job every third of the lease; never
    /// returns. When the lease was taken over, fires `lost` and cancels the run.
    async fn keep_lease(&self, id: JobId, holder: &str, lost: &CancellationToken, cancel: &CancellationToken) {
        #[cfg(feature = "_store")]
        if let Some(store) = &self.inner.store {
            let lease = self.inner.claim_lease;
            loop {
                tokio::time::sleep(lease / 3).await;
                match store.renew_lease(id, holder, lease).await {
                    Ok(crate::LeaseRenewal::Renewed) => {}
                    // This run recorded the job's end; its last events are still on
                    // their way and must not be dropped.
                    Ok(crate::LeaseRenewal::Finished) => break,
                    Ok(crate::LeaseRenewal::Lost) => {
                        tracing::warn!(job_id = %id, "another orchestrator took this job over; stopping it here");
                        lost.cancel();
                        cancel.cancel();
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(job_id = %id, error = %crate::support::error_chain(&e), "could not renew the job's lease; retrying");
                    }
                }
            }
        }
        let _ = (id, holder, lost, cancel);
        std::future::pending::<()>().await;
    }

    /// The final event recorded for a finished job, if there is a store and it has one.
    async fn stored_final_event(&self, id: JobId) -> Option<JobEvent> {
        #[cfg(feature = "_store")]
        if let Some(store) = &self.inner.store {
            return store.final_event(id).await.unwrap_or_else(|e| {
                tracing::warn!(job_id = %id, error = %e, "could not read the final event");
                None
            });
        }
        let _ = id;
        None
    }

    /// Mirrors an event into the store (running on the first step, finished at the
    /// end). Returns `false` when the final state could not be recorded because the
    /// job no longer belongs to `holder`.
    async fn record(&self, event: &JobEvent, holder: &str) -> bool {
        #[cfg(feature = "_store")]
        if let Some(store) = &self.inner.store {
            let mut backoff = Backoff::default();
            loop {
                let done = match &event.kind {
                    JobEventKind::StepStarted { index: 0, .. } => store.mark_running(event.job_id).await.map(|()| true),
                    JobEventKind::JobFinished { .. } => store.finish_leased(event, holder).await,
                    _ => Ok(true),
                };
                match done {
                    Ok(ours) => return ours,
                    Err(e) => {
                        tracing::warn!(job_id = %event.job_id, error = %e, "could not record job state; retrying");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        }
        let _ = (event, holder);
        true
    }
}
