//! The in-process queue: the embedded default, for one process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::{Notify, broadcast};

use super::ready::{Position, Ready};
use super::{
    Acker, CancelConsumer, EventConsumer, EventDelivery, JobConsumer, JobDelivery, JobQueue,
    QueueError,
};
use crate::{JobEvent, JobId, JobRequest};

/// An in-process [`JobQueue`]: jobs and events live in memory, in one process.
///
/// It keeps the same delivery semantics as the RabbitMQ backend (acks, redelivery on
/// nack, per-source event routes that keep unacknowledged events), so code tested on it
/// behaves the same when scaled out. Nothing survives the process. Cloning is cheap and
/// gives another handle to the same queue.
#[derive(Debug, Clone, Default)]
pub struct MemoryQueue {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<State>,
    jobs_changed: Notify,
    events_changed: Notify,
    cancels: std::sync::OnceLock<broadcast::Sender<JobId>>,
}

#[derive(Debug, Default)]
struct State {
    /// Ready jobs by route label, oldest first, with their redelivered flag.
    jobs: HashMap<String, Ready<(JobRequest, bool)>>,
    /// Ready events by route, oldest first.
    events: HashMap<String, Ready<JobEvent>>,
    /// Jobs dead-lettered with their reason.
    dead: Vec<(JobRequest, String)>,
}

impl MemoryQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Jobs waiting for a consumer, over all labels.
    pub fn pending_jobs(&self) -> usize {
        self.inner.lock().jobs.values().map(Ready::len).sum()
    }

    /// Jobs that were nacked without requeue, with their reasons.
    pub fn dead_letters(&self) -> Vec<(JobId, String)> {
        self.inner.lock().dead.iter().map(|(job, why)| (job.id, why.clone())).collect()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queues half-updated (every
        // critical section is a single push or pop), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn cancels(&self) -> &broadcast::Sender<JobId> {
        self.cancels.get_or_init(|| broadcast::channel(1024).0)
    }
}

#[async_trait]
impl JobQueue for MemoryQueue {
    async fn waiting_jobs(&self, labels: &[String]) -> Result<Option<u64>, QueueError> {
        let state = self.inner.lock();
        let waiting: usize = labels.iter().filter_map(|label| state.jobs.get(label)).map(Ready::len).sum();
        Ok(Some(u64::try_from(waiting).unwrap_or(u64::MAX)))
    }

    async fn publish_job(&self, job: &JobRequest) -> Result<(), QueueError> {
        let label = job.route_label().to_owned();
        self.inner.lock().jobs.entry(label).or_default().push((job.clone(), false));
        self.inner.jobs_changed.notify_waiters();
        Ok(())
    }

    async fn consume_jobs(
        &self,
        labels: &[String],
        _prefetch: usize,
    ) -> Result<Box<dyn JobConsumer>, QueueError> {
        Ok(Box::new(MemoryJobConsumer { inner: self.inner.clone(), labels: labels.to_vec() }))
    }

    async fn publish_event(&self, route: &str, event: &JobEvent) -> Result<(), QueueError> {
        self.inner.lock().events.entry(route.to_owned()).or_default().push(event.clone());
        self.inner.events_changed.notify_waiters();
        Ok(())
    }

    async fn publish_events(&self, route: &str, events: &[JobEvent]) -> Result<(), QueueError> {
        let mut state = self.inner.lock();
        let ready = state.events.entry(route.to_owned()).or_default();
        for event in events {
            ready.push(event.clone());
        }
        drop(state);
        self.inner.events_changed.notify_waiters();
        Ok(())
    }

    async fn consume_events(&self, route: &str) -> Result<Box<dyn EventConsumer>, QueueError> {
        Ok(Box::new(MemoryEventConsumer { inner: self.inner.clone(), route: route.to_owned() }))
    }

    async fn publish_cancel(&self, job_id: JobId) -> Result<(), QueueError> {
        // No receiver means no orchestrator runs anything: nothing to cancel.
        let _ = self.inner.cancels().send(job_id);
        Ok(())
    }

    async fn consume_cancels(&self) -> Result<Box<dyn CancelConsumer>, QueueError> {
        Ok(Box::new(MemoryCancelConsumer { rx: self.inner.cancels().subscribe() }))
    }
}

#[derive(Debug)]
struct MemoryJobConsumer {
    inner: Arc<Inner>,
    labels: Vec<String>,
}

#[async_trait]
impl JobConsumer for MemoryJobConsumer {
    async fn next(&mut self) -> Result<JobDelivery, QueueError> {
        loop {
            // Register interest before looking, so a publish between the look and the
            // wait is not missed.
            let changed = self.inner.jobs_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = self.inner.lock();
                for label in &self.labels {
                    if let Some((position, (job, redelivered))) = state.jobs.get_mut(label).and_then(Ready::pop) {
                        let acker = Box::new(MemoryJobAcker {
                            inner: self.inner.clone(),
                            job: Some((position, job.clone())),
                        });
                        return Ok(JobDelivery { job, redelivered, acker });
                    }
                }
            }
            changed.await;
        }
    }
}

/// Holds a delivered job until it is settled; a job dropped unsettled (its consumer
/// task died) goes back to the queue, as RabbitMQ does when a channel closes.
#[derive(Debug)]
struct MemoryJobAcker {
    inner: Arc<Inner>,
    /// The job and where it stood in its queue; `None` once settled.
    job: Option<(Position, JobRequest)>,
}

impl MemoryJobAcker {
    fn requeue(&mut self) {
        if let Some((position, job)) = self.job.take() {
            let label = job.route_label().to_owned();
            self.inner.lock().jobs.entry(label).or_default().requeue(position, (job, true));
            self.inner.jobs_changed.notify_waiters();
        }
    }
}

impl Drop for MemoryJobAcker {
    fn drop(&mut self) {
        self.requeue();
    }
}

#[async_trait]
impl Acker for MemoryJobAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), QueueError> {
        self.job = None;
        Ok(())
    }

    async fn nack(mut self: Box<Self>, requeue: bool, reason: &str) -> Result<(), QueueError> {
        if requeue {
            self.requeue();
        } else if let Some((_, job)) = self.job.take() {
            tracing::warn!(job_id = %job.id, reason, "job dead-lettered");
            self.inner.lock().dead.push((job, reason.to_owned()));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct MemoryEventConsumer {
    inner: Arc<Inner>,
    route: String,
}

#[async_trait]
impl EventConsumer for MemoryEventConsumer {
    async fn next(&mut self) -> Result<EventDelivery, QueueError> {
        loop {
            let changed = self.inner.events_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = self.inner.lock();
                if let Some((position, event)) = state.events.get_mut(&self.route).and_then(Ready::pop) {
                    let acker = Box::new(MemoryEventAcker {
                        inner: self.inner.clone(),
                        route: self.route.clone(),
                        event: Some((position, event.clone())),
                    });
                    return Ok(EventDelivery { event, acker });
                }
            }
            changed.await;
        }
    }
}

#[derive(Debug)]
struct MemoryEventAcker {
    inner: Arc<Inner>,
    route: String,
    /// The event and where it stood in its queue; `None` once settled.
    event: Option<(Position, JobEvent)>,
}

impl MemoryEventAcker {
    fn requeue(&mut self) {
        if let Some((position, event)) = self.event.take() {
            self.inner.lock().events.entry(self.route.clone()).or_default().requeue(position, event);
            self.inner.events_changed.notify_waiters();
        }
    }
}

impl Drop for MemoryEventAcker {
    fn drop(&mut self) {
        self.requeue();
    }
}

#[async_trait]
impl Acker for MemoryEventAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), QueueError> {
        self.event = None;
        Ok(())
    }

    async fn nack(mut self: Box<Self>, requeue: bool, reason: &str) -> Result<(), QueueError> {
        if requeue {
            self.requeue();
        } else if let Some((_, event)) = self.event.take() {
            tracing::warn!(job_id = %event.job_id, seq = event.seq, reason, "event dropped");
        }
        Ok(())
    }
}

#[derive(Debug)]
struct MemoryCancelConsumer {
    rx: broadcast::Receiver<JobId>,
}

#[async_trait]
impl CancelConsumer for MemoryCancelConsumer {
    async fn next(&mut self) -> Result<JobId, QueueError> {
        loop {
            match self.rx.recv().await {
                Ok(id) => return Ok(id),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "cancel consumer lagged behind");
                }
                Err(broadcast::error::RecvError::Closed) => return Err(QueueError::Closed),
            }
        }
    }
}
