//! The way back: job events to their source, cancellations to every orchestrator.

use std::sync::Arc;

use async_trait::async_trait;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use lapin::types::ShortString;
use lapin::{Acker as LapinAcker, Channel};

use super::dead;
use super::link::{AmqpError, Link, Session};
use super::pump::{Handler, Subscription};
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

    async fn handle(&self, channel: &Channel, delivery: Delivery) -> Option<EventDelivery> {
        let decoded = serde_json::from_slice::<JobEvent>(&delivery.data);
        let acker = EventAcker {
            link: self.link.clone(),
            channel: channel.clone(),
            acker: Some(delivery.acker),
            queue: self.link.topology.event_queue(&self.route),
            job_id: decoded.as_ref().ok().map(|event| event.job_id),
            body: delivery.data,
        };
        match decoded {
            Ok(event) => Some(EventDelivery { event, acker: Box::new(acker) }),
            Err(e) => {
                let reason = format!("undecodable event: {e}");
                tracing::error!(queue = %acker.queue, %reason, "dead-lettering an event message");
                if let Err(e) = Box::new(acker).nack(false, &reason).await {
                    tracing::warn!(error = %e, "could not dead-letter an event message");
                }
                None
            }
        }
    }
}

/// Settles one event delivery.
#[derive(Debug)]
struct EventAcker {
    link: Arc<Link>,
    /// Kept open until the delivery is settled.
    channel: Channel,
    /// `None` once settled.
    acker: Option<LapinAcker>,
    queue: ShortString,
    job_id: Option<JobId>,
    body: Vec<u8>,
}

fn channel_gone() -> QueueError {
    // The broker holds the event again and will deliver it anew.
    QueueError::Unavailable(Box::new(AmqpError::Unreachable("the channel of this delivery closed".into())))
}

#[async_trait]
impl Acker for EventAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), QueueError> {
        let Some(acker) = self.acker.take() else { return Ok(()) };
        match acker.ack(BasicAckOptions::default()).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(channel_gone()),
            Err(e) => Err(super::link::broker("basic.ack")(e)),
        }
    }

    async fn nack(mut self: Box<Self>, requeue: bool, reason: &str) -> Result<(), QueueError> {
        let Some(acker) = self.acker.take() else { return Ok(()) };
        if requeue {
            let options = BasicNackOptions { requeue: true, multiple: false };
            return match acker.nack(options).await {
                Ok(_) => Ok(()),
                Err(e) => Err(super::link::broker("basic.nack")(e)),
            };
        }
        tracing::warn!(job_id = ?self.job_id, reason, "event dead-lettered");
        match dead::send(&self.link, "event", self.queue.as_str(), self.job_id, reason, &self.body).await {
            Ok(()) => acker.ack(BasicAckOptions::default()).await.map(drop),
            Err(_) => acker.reject(BasicRejectOptions { requeue: false }).await.map(drop),
        }
        .map_err(super::link::broker("basic.ack"))
    }
}

impl Drop for EventAcker {
    fn drop(&mut self) {
        let Some(acker) = self.acker.take() else { return };
        let channel = self.channel.clone();
        self.link.tasks.spawn(async move {
            let options = BasicNackOptions { requeue: true, multiple: false };
            let _ = acker.nack(options).await;
            drop(channel);
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

    async fn handle(&self, _channel: &Channel, delivery: Delivery) -> Option<JobId> {
        match serde_json::from_slice::<JobId>(&delivery.data) {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring an undecodable cancellation");
                None
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
