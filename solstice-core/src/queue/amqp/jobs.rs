//! Job deliveries: decoding, dead-lettering of poison messages, and the in-flight table
//! that makes a broker restart invisible to the engine.
//!
//! When the broker restarts (or the connection drops) while jobs run, RabbitMQ puts
//! their messages back in the queue and the pump, once subscribed again, receives them
//! anew. A redelivery of a job this handle is still running is not handed to the engine
//! a second time: it is *adopted* by the running job's acker, which settles it together
//! with the original when the job ends. A redelivery of a job that ended while the
//! connection was down is settled the way the job was.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::types::ShortString;

use super::dead;
use super::link::{AmqpError, Link, Session};
use super::pump::{Handler, Subscription};
use super::settle::Settler;
use crate::{Acker, JobConsumer, JobDelivery, JobId, JobRequest, QueueError};

/// How long the settlement of a job whose acknowledgement could not reach the broker is
/// remembered, to settle its redelivery the same way.
const SETTLED_TTL: Duration = Duration::from_secs(600);

#[derive(Debug)]
enum Slot {
    /// Handed to the engine; redeliveries are collected here.
    Running(Vec<Settler>),
    /// Acknowledged while no copy could be: redeliveries are acknowledged on arrival.
    Settled,
}

#[derive(Debug, Default)]
struct Table {
    slots: HashMap<JobId, Slot>,
    settled: VecDeque<(Instant, JobId)>,
}

/// The jobs this handle has handed out and not yet settled, by id.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    table: Mutex<Table>,
}

enum Offer {
    /// A job not in flight: hand it to the engine.
    New(Settler),
    /// Taken into the running job's slot.
    Adopted,
    /// The job ended already: acknowledge this copy.
    Settled(Settler),
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // Every critical section leaves the table consistent, so a poisoned lock is usable.
        self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn offer(&self, id: JobId, copy: Settler) -> Offer {
        let mut table = self.lock();
        let now = Instant::now();
        while let Some((at, old)) = table.settled.front().copied() {
            if now.duration_since(at) < SETTLED_TTL {
                break;
            }
            table.settled.pop_front();
            if matches!(table.slots.get(&old), Some(Slot::Settled)) {
                table.slots.remove(&old);
            }
        }
        match table.slots.get_mut(&id) {
            Some(Slot::Running(copies)) => {
                copies.push(copy);
                Offer::Adopted
            }
            Some(Slot::Settled) => Offer::Settled(copy),
            None => {
                table.slots.insert(id, Slot::Running(Vec::new()));
                Offer::New(copy)
            }
        }
    }

    /// Takes the redeliveries adopted for a job and forgets it.
    fn take(&self, id: JobId) -> Vec<Settler> {
        match self.lock().slots.remove(&id) {
            Some(Slot::Running(copies)) => copies,
            _ => Vec::new(),
        }
    }

    fn remember_settled(&self, id: JobId) {
        let mut table = self.lock();
        table.slots.insert(id, Slot::Settled);
        table.settled.push_back((Instant::now(), id));
    }
}

/// Consumes the queues of some labels.
pub(super) struct JobHandler {
    pub(super) link: Arc<Link>,
    pub(super) labels: Vec<String>,
    pub(super) inflight: Arc<InFlight>,
}

#[async_trait]
impl Handler for JobHandler {
    type Item = JobDelivery;

    fn what(&self) -> &'static str {
        "jobs"
    }

    async fn declare(&self, _session: &Session, channel: &Channel) -> lapin::Result<Vec<ShortString>> {
        let mut queues = Vec::with_capacity(self.labels.len());
        for label in &self.labels {
            queues.push(self.link.topology.declare_job_queue(channel, label).await?);
        }
        Ok(queues)
    }

    async fn handle(&self, channel: &Channel, delivery: Delivery) -> Vec<JobDelivery> {
        self.handle_one(channel, delivery).await.into_iter().collect()
    }
}

impl JobHandler {
    async fn handle_one(&self, channel: &Channel, delivery: Delivery) -> Option<JobDelivery> {
        let Delivery { data, acker, redelivered, routing_key, .. } = delivery;
        let copy = Settler::new(channel.clone(), acker);
        let queue = self.link.topology.job_queue(routing_key.as_str());
        let job: JobRequest = match serde_json::from_slice(&data) {
            Ok(job) => job,
            Err(e) => {
                let reason = format!("undecodable job: {e}");
                tracing::error!(queue = %queue, %reason, "dead-lettering a job message");
                dead_letter(&self.link, queue.as_str(), None, &reason, &data, &[copy]).await;
                return None;
            }
        };
        match self.inflight.offer(job.id, copy) {
            Offer::New(copy) => {
                let acker = JobAcker {
                    link: self.link.clone(),
                    inflight: self.inflight.clone(),
                    id: job.id,
                    queue,
                    body: data,
                    first: Some(copy),
                };
                Some(JobDelivery { job, redelivered, acker: Box::new(acker) })
            }
            Offer::Adopted => {
                tracing::debug!(job_id = %job.id, "redelivery of a running job adopted");
                None
            }
            Offer::Settled(copy) => {
                tracing::debug!(job_id = %job.id, "redelivery of a settled job acknowledged");
                if !copy.ack().await {
                    tracing::debug!(job_id = %job.id, "could not acknowledge a redelivery; it will come back");
                }
                None
            }
        }
    }
}

/// Publishes a dead letter, then acknowledges the copies; if the dead letter cannot be
/// published, rejects them so the queue's own dead-letter exchange takes them.
async fn dead_letter(link: &Link, queue: &str, id: Option<JobId>, reason: &str, body: &[u8], copies: &[Settler]) -> bool {
    let published = dead::send(link, "job", queue, id, reason, body).await;
    let mut settled = false;
    for copy in copies {
        settled |= if published.is_ok() { copy.ack().await } else { copy.reject().await };
    }
    settled || published.is_ok()
}

/// Settles a job delivery; see the module docs for how redeliveries are folded in.
#[derive(Debug)]
struct JobAcker {
    link: Arc<Link>,
    inflight: Arc<InFlight>,
    id: JobId,
    queue: ShortString,
    body: Vec<u8>,
    /// `None` once settled.
    first: Option<Settler>,
}

impl JobAcker {
    fn copies(&mut self) -> Vec<Settler> {
        let mut copies = self.inflight.take(self.id);
        copies.extend(self.first.take());
        copies
    }
}

#[async_trait]
impl Acker for JobAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), QueueError> {
        let mut acked = false;
        for copy in self.copies() {
            acked |= copy.ack().await;
        }
        if !acked {
            // The channel died under the job: the broker holds the message again and
            // will deliver it anew; acknowledge it then.
            tracing::debug!(job_id = %self.id, "acknowledgement deferred until the job is redelivered");
            self.inflight.remember_settled(self.id);
        }
        Ok(())
    }

    async fn nack(mut self: Box<Self>, requeue: bool, reason: &str) -> Result<(), QueueError> {
        let copies = self.copies();
        if requeue {
            tracing::info!(job_id = %self.id, reason, "job handed back to the queue");
            for copy in &copies {
                // A copy whose channel died is back in the queue already.
                copy.requeue().await;
            }
            return Ok(());
        }
        tracing::warn!(job_id = %self.id, reason, "job dead-lettered");
        let settled = dead_letter(&self.link, self.queue.as_str(), Some(self.id), reason, &self.body, &copies).await;
        if copies.iter().all(|c| !c.usable()) {
            self.inflight.remember_settled(self.id);
        }
        if settled {
            Ok(())
        } else {
            Err(QueueError::Unavailable(Box::new(AmqpError::Unreachable("dead-lettering failed".into()))))
        }
    }
}

impl Drop for JobAcker {
    fn drop(&mut self) {
        if self.first.is_none() {
            return;
        }
        // Dropped unsettled (its task died): give the job back, as a closed channel would.
        let copies = self.copies();
        let id = self.id;
        self.link.tasks.spawn(async move {
            tracing::debug!(job_id = %id, "job delivery dropped unsettled; requeueing");
            for copy in &copies {
                copy.requeue().await;
            }
        });
    }
}

/// The [`JobConsumer`] of an [`super::AmqpQueue`].
#[derive(Debug)]
pub(super) struct AmqpJobConsumer {
    pub(super) subscription: Subscription<JobDelivery>,
}

#[async_trait]
impl JobConsumer for AmqpJobConsumer {
    async fn next(&mut self) -> Result<JobDelivery, QueueError> {
        self.subscription.next().await
    }
}
