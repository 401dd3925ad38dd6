//! Subscriptions that outlive connections: a tracked task consumes the queues, hands
//! what it gets to a handler, and subscribes again after the broker comes back.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::link::{Link, Session, bounded, broker};
use crate::QueueError;
use crate::support::{Backoff, error_chain};

/// What a subscription consumes and how it turns deliveries into items.
#[async_trait]
pub(super) trait Handler: Send + Sync + 'static {
    /// What the subscription yields.
    type Item: Send + 'static;

    /// A short name for logs.
    fn what(&self) -> &'static str;

    /// Whether the broker may forget a delivery once sent (no acknowledgements).
    fn no_ack(&self) -> bool {
        false
    }

    /// Declares the queues to consume on a fresh channel and returns their names.
    async fn declare(&self, session: &Session, channel: &Channel) -> lapin::Result<Vec<ShortString>>;

    /// Turns a delivery into items (a batch message holds several), or settles it
    /// itself and returns none.
    async fn handle(&self, channel: &Channel, delivery: Delivery) -> Vec<Self::Item>;
}

/// The receiving end of a pump; dropping it stops the pump.
#[derive(Debug)]
pub(super) struct Subscription<T> {
    rx: mpsc::Receiver<T>,
    _stop: DropGuard,
}

impl<T> Subscription<T> {
    /// The next item.
    ///
    /// # Errors
    /// [`QueueError::Closed`] once the queue handle was closed.
    ///
    /// # Cancel safety
    /// Cancel safe (an mpsc receive).
    pub(super) async fn next(&mut self) -> Result<T, QueueError> {
        self.rx.recv().await.ok_or(QueueError::Closed)
    }
}

/// Starts a pump and returns once its first subscription is in place, so that what is
/// published after this returns reaches it (cancellation broadcasts rely on that).
///
/// # Errors
/// The first subscription's failure.
pub(super) async fn subscribe<H: Handler>(
    link: Arc<Link>,
    handler: H,
    prefetch: u16,
) -> Result<Subscription<H::Item>, QueueError> {
    let (tx, rx) = mpsc::channel(usize::from(prefetch).max(16));
    let (ready_tx, ready_rx) = oneshot::channel();
    let stop = link.closed.child_token();
    let pump = Pump { link: link.clone(), handler, prefetch, tx, stop: stop.clone() };
    link.tasks.spawn(pump.run(ready_tx));
    match ready_rx.await {
        Ok(Ok(())) => Ok(Subscription { rx, _stop: stop.drop_guard() }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(QueueError::Closed),
    }
}

/// How often a subscription checks that its channel is still open. lapin ends a
/// consumer's stream when its channel closes, but a connection the broker closes
/// while shutting down goes through `Closing` first, which only marks the consumers
/// as cancelling; should the close not complete cleanly, the stream could stay open
/// with no deliveries coming. A guard: the stall once blamed on this turned out to be
/// a settlement that never completed (see `settle.rs`).
const LIVENESS_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

struct Pump<H: Handler> {
    link: Arc<Link>,
    handler: H,
    prefetch: u16,
    tx: mpsc::Sender<H::Item>,
    stop: CancellationToken,
}

impl<H: Handler> Pump<H> {
    async fn run(self, ready: oneshot::Sender<Result<(), QueueError>>) {
        let mut ready = Some(ready);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut failures = 0_u32;
        loop {
            let subscribed = tokio::select! {
                s = bounded("subscribe", self.open()) => s,
                () = self.stop.cancelled() => return,
            };
            let (channel, mut deliveries) = match subscribed {
                Ok(s) => s,
                Err(QueueError::Closed) => return,
                Err(e) => {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Err(e));
                        return;
                    }
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(10) {
                        tracing::warn!(consumer = self.handler.what(), failures, error = %error_chain(&e), "RabbitMQ unavailable; subscribing again");
                    }
                    if !backoff.wait(&self.stop).await {
                        return;
                    }
                    continue;
                }
            };
            if failures > 0 {
                tracing::info!(consumer = self.handler.what(), "subscribed again after the broker came back");
            }
            failures = 0;
            backoff.reset();
            if let Some(ready) = ready.take() {
                let _ = ready.send(Ok(()));
            }
            if deliveries.is_empty() {
                // Opened for no queue at all: nothing will ever come.
                self.stop.cancelled().await;
                return;
            }
            let mut watchdog = tokio::time::interval(LIVENESS_CHECK);
            watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let delivery = tokio::select! {
                    d = deliveries.next() => d,
                    () = self.stop.cancelled() => return,
                    _ = watchdog.tick() => {
                        if channel.status().connected() {
                            continue;
                        }
                        // The stream did not end although its channel did (see
                        // LIVENESS_CHECK): subscribe again rather than wait forever.
                        tracing::warn!(consumer = self.handler.what(), closing = channel.status().closing(), "subscription's channel closed without ending it");
                        break;
                    }
                };
                let delivery = match delivery {
                    Some(Ok(delivery)) => delivery,
                    Some(Err(e)) => {
                        tracing::warn!(consumer = self.handler.what(), error = %e, "subscription lost");
                        break;
                    }
                    None => {
                        tracing::warn!(consumer = self.handler.what(), "subscription ended by the broker");
                        break;
                    }
                };
                for item in self.handler.handle(&channel, delivery).await {
                    tokio::select! {
                        sent = self.tx.send(item) => if sent.is_err() { return },
                        () = self.stop.cancelled() => return,
                    }
                }
            }
            if !backoff.wait(&self.stop).await {
                return;
            }
        }
    }

    async fn open(&self) -> Result<(Channel, futures::stream::SelectAll<lapin::Consumer>), QueueError> {
        let session = self.link.session().await?;
        let channel = session.connection.create_channel().await.map_err(broker("channel.open"))?;
        if self.prefetch > 0 {
            channel.basic_qos(self.prefetch, BasicQosOptions::default()).await.map_err(broker("basic.qos"))?;
        }
        let queues = self.handler.declare(&session, &channel).await.map_err(broker("queue.declare"))?;
        let options = BasicConsumeOptions { no_ack: self.handler.no_ack(), ..BasicConsumeOptions::default() };
        let mut consumers = Vec::with_capacity(queues.len());
        for queue in queues {
            let consumer = channel
                .basic_consume(queue, "".into(), options, FieldTable::default())
                .await
                .map_err(broker("basic.consume"))?;
            consumers.push(consumer);
        }
        Ok((channel, futures::stream::select_all(consumers)))
    }
}
