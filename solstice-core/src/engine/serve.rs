//! Serving a queue: up to `capacity` jobs at once, events back to their sources.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Engine;
#[cfg(feature = "_store")]
use crate::JobEventKind;
use crate::{Backoff, JobDelivery, JobEvent, JobId, JobQueue, QueueError};

/// How many cancellations of jobs not (yet) running here are remembered, in case the
/// job is delivered later; the oldest are forgotten first.
const EARLY_CANCELS_KEPT: usize = 10_000;

/// At most this many of a job's events are published together.
const EVENT_BATCH: usize = 256;

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
    /// [`EngineError`](super::EngineError) when the queue cannot be opened.
    pub async fn serve(
        &self,
        queue: Arc<dyn JobQueue>,
        labels: &[String],
        stop: CancellationToken,
        abort: CancellationToken,
    ) -> Result<(), super::EngineError> {
        let mut consumer = queue.consume_jobs(labels, self.capacity()).await?;
        let mut cancels = queue.consume_cancels().await?;
        let running: Running = Arc::default();
        let tracker = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(self.capacity()));

        let cancel_listener = {
            let running = running.clone();
            let stop = stop.clone();
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
            tracker.spawn(async move {
                engine.handle_delivery(delivery, queue, running, token).await;
                drop(permit);
            });
        }
        tracker.close();
        // The cancel listener ends with `stop`; the job tasks end on their own.
        tracker.wait().await;
        drop(cancel_listener);
        Ok(())
    }

    async fn handle_delivery(
        &self,
        delivery: JobDelivery,
        queue: Arc<dyn JobQueue>,
        running: Running,
        cancel: CancellationToken,
    ) {
        let JobDelivery { job, redelivered, acker } = delivery;
        let attempt = match self.claim(&job, redelivered).await {
            Ok(Some(attempt)) => attempt,
            Ok(None) => {
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
            Err(e) => {
                tracing::warn!(job_id = %job.id, error = %e, "could not claim job; handing it back");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                let _ = acker.nack(true, "claim failed").await;
                return;
            }
        };
        if let Ok(mut r) = running.lock() {
            r.start(job.id, &cancel);
        }
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
                tracing::trace!(job_id = %job.id, events = batch.len(), "publishing a batch of events");
                for event in &batch {
                    self.record(event).await;
                }
                // Events are never dropped: an unreachable queue is retried until it
                // comes back.
                while let Err(e) = queue.publish_events(&route, &batch).await {
                    let first = batch.first().map_or(0, |event| event.seq);
                    tracing::warn!(job_id = %job.id, seq = first, events = batch.len(), error = %e, "could not publish events; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                backoff.reset();
                batch.clear();
            }
        };
        let run = async {
            let tx = tx;
            self.run_attempt(&job, attempt, tx, cancel).await
        };
        let (result, ()) = tokio::join!(run, forward);
        tracing::info!(job_id = %job.id, %result, "job finished");
        if let Ok(mut r) = running.lock() {
            r.running.remove(&job.id);
        }
        if let Err(e) = acker.ack().await {
            tracing::warn!(job_id = %job.id, error = %e, "could not acknowledge the job");
        }
    }

    #[cfg(feature = "_store")]
    async fn claim(&self, job: &crate::JobRequest, redelivered: bool) -> Result<Option<u32>, crate::StoreError> {
        match &self.inner.store {
            Some(store) => {
                store.record_queued(job).await?;
                store.claim(job.id, &self.inner.name).await
            }
            None => Ok(Some(if redelivered { 2 } else { 1 })),
        }
    }

    #[cfg(not(feature = "_store"))]
    async fn claim(&self, _job: &crate::JobRequest, redelivered: bool) -> Result<Option<u32>, std::convert::Infallible> {
        Ok(Some(if redelivered { 2 } else { 1 }))
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

    /// Mirrors an event into the store (running on the first step, finished at the end).
    async fn record(&self, event: &JobEvent) {
        #[cfg(feature = "_store")]
        if let Some(store) = &self.inner.store {
            let mut backoff = Backoff::default();
            loop {
                let done = match &event.kind {
                    JobEventKind::StepStarted { index: 0, .. } => store.mark_running(event.job_id).await,
                    JobEventKind::JobFinished { .. } => store.finish_with_event(event).await.map(|_| ()),
                    _ => Ok(()),
                };
                match done {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(job_id = %event.job_id, error = %e, "could not record job state; retrying");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        }
        #[cfg(not(feature = "_store"))]
        let _ = event;
    }
}
