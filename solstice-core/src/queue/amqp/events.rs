//! The way back: job events to their source, cancellations to every orchestrator.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::types::ShortString;

use super::dead;
use super::link::{AmqpError, Link, Session};
use super::pump::{Handler, Subscription};
use super::settle::Settler;
use super::wire;
use crate::{Acker, CancelConsumer, EventConsumer, EventDelivery, JobEvent, JobId, QueueError};

/// Consumes the event queue of one source.
pub(super) struct EventHandler {
    pub(super) link: Arc<Link>,
    pub(super) route: String,
}

#[async_trait]
impl Handler for EventHandler {
    type Item = EventDelivery;

    fn what(&self) -> &'static str {
        "events"
    }

    async fn declare(&self, _session: &Session, channel: &Channel) -> lapin::Result<Vec<ShortString>> {
        Ok(vec![self.link.topology.declare_event_queue(channel, &self.route).await?])
    }

    async fn handle(&self, channel: &Channel, delivery: Delivery) -> Vec<EventDelivery> {
        let queue = self.link.topology.event_queue(&self.route);
        let kind = delivery.properties.kind().as_ref().map(ShortString::as_str);
        let events = match wire::decode(kind, &delivery.data) {
            Ok(events) => events,
            Err(e) => {
                let reason = format!("undecodable event: {}", crate::support::error_chain(&e));
                tracing::error!(queue = %queue, %reason, "dead-lettering an event message");
                let sent = dead::send(&self.link, "event", queue.as_str(), None, &reason, &delivery.data).await;
                let settler = Settler::new(channel.clone(), delivery.acker);
                let settled = match sent {
                    Ok(()) => settler.ack().await,
                    Err(_) => settler.reject().await,
                };
                if !settled {
                    tracing::warn!("could not settle an undecodable event message; it will come back");
                }
                return Vec::new();
            }
        };
        let events: Arc<[JobEvent]> = events.into();
        let message = Arc::new(Message {
            link: self.link.clone(),
            settler: tokio::sync::Mutex::new(Some(Settler::new(channel.clone(), delivery.acker))),
            parts: AtomicUsize::new(events.len()),
            requeue: AtomicBool::new(false),
            queue,
            events: events.clone(),
        });
        (0..events.len())
            .map(|index| EventDelivery {
                event: events[index].clone(),
                acker: Box::new(EventAcker { message: message.clone(), index, settled: false }),
            })
            .collect()
    }
}

/// One event message (a batch, or a single event of an older version), settled with
/// the broker once every event in it is settled: acknowledged when all were, put back
/// in the queue when any asked for that (the source sees the others again and drops
/// them by `(attempt, seq)`).
#[derive(Debug)]
struct Message {
    link: Arc<Link>,
    /// `None` once settled.
    settler: tokio::sync::Mutex<Option<Settler>>,
    /// Events not settled yet.
    parts: AtomicUsize,
    requeue: AtomicBool,
    queue: ShortString,
    events: Arc<[JobEvent]>,
}

impl Message {
    /// One event of the message is settled; the last one settles the message.
    async fn part_settled(&self) -> Result<(), QueueError> {
        if self.parts.fetch_sub(1, Ordering::AcqRel) != 1 {
            return Ok(());
        }
        let Some(settler) = self.settler.lock().await.take() else {
            return Ok(());
        };
        if self.requeue.load(Ordering::Acquire) {
            // A message whose channel is gone is back in the queue already.
            settler.requeue().await;
            return Ok(());
        }
        if settler.ack().await {
            Ok(())
        } else {
            Err(channel_gone())
        }
    }
}

/// Settles one event of an event message.
#[derive(Debug)]
struct EventAcker {
    message: Arc<Message>,
    index: usize,
    settled: bool,
}

fn channel_gone() -> QueueError {
    // The broker holds the event again and will deliver it anew.
    QueueError::Unavailable(Box::new(AmqpError::Unreachable("the channel of this delivery closed".into())))
}

#[async_trait]
impl Acker for EventAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), QueueError> {
        self.settled = true;
        self.message.part_settled().await
    }

    async fn nack(mut self: Box<Self>, requeue: bool, reason: &str) -> Result<(), QueueError> {
        self.settled = true;
        let message = self.message.clone();
        if requeue {
            message.requeue.store(true, Ordering::Release);
            return message.part_settled().await;
        }
        let event = &message.events[self.index];
        tracing::warn!(job_id = %event.job_id, seq = event.seq, reason, "event dead-lettered");
        // Dead-lettered alone, in the single-event format, whatever message carried it.
        let body = serde_json::to_vec(event).map_err(QueueError::Codec)?;
        let sent = dead::send(&message.link, "event", message.queue.as_str(), Some(event.job_id), reason, &body).await;
        if sent.is_err() {
            // Not lost: the message comes back and the event is offered again.
            message.requeue.store(true, Ordering::Release);
        }
        let settled = message.part_settled().await;
        sent.and(settled)
    }
}

impl Drop for EventAcker {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let message = self.message.clone();
        message.requeue.store(true, Ordering::Release);
        self.message.link.tasks.spawn(async move {
            let _ = message.part_settled().await;
        });
    }
}

/// The [`EventConsumer`] of an [`super::AmqpQueue`].
#[derive(Debug)]
pub(super) struct AmqpEventConsumer {
    pub(super) subscription: Subscription<EventDelivery>,
}

#[async_trait]
impl EventConsumer for AmqpEventConsumer {
    async fn next(&mut self) -> Result<EventDelivery, QueueError> {
        self.subscription.next().await
    }
}

/// Consumes a private queue bound to the cancellation fanout.
pub(super) struct CancelHandler {
    pub(super) link: Arc<Link>,
}

#[async_trait]
impl Handler for CancelHandler {
    type Item = JobId;

    fn what(&self) -> &'static str {
        "cancels"
    }

    fn no_ack(&self) -> bool {
        true
    }

    async fn declare(&self, _session: &Session, channel: &Channel) -> lapin::Result<Vec<ShortString>> {
        Ok(vec![self.link.topology.declare_cancel_queue(channel).await?])
    }

    async fn handle(&self, _channel: &Channel, delivery: Delivery) -> Vec<JobId> {
        match serde_json::from_slice::<JobId>(&delivery.data) {
            Ok(id) => vec![id],
            Err(e) => {
                tracing::warn!(error = %e, "ignoring an undecodable cancellation");
                Vec::new()
            }
        }
    }
}

/// The [`CancelConsumer`] of an [`super::AmqpQueue`].
#[derive(Debug)]
pub(super) struct AmqpCancelConsumer {
    pub(super) subscription: Subscription<JobId>,
}

#[async_trait]
impl CancelConsumer for AmqpCancelConsumer {
    async fn next(&mut self) -> Result<JobId, QueueError> {
        self.subscription.next().await
    }
}
