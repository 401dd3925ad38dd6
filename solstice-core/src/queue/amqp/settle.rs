//! Settling a delivery (ack, requeue, reject) without ever waiting forever.
//!
//! With lapin 4.12, a settlement made while the broker drops the connection (a
//! restart) was seen never to complete: in the broker-restart test, acknowledgements
//! sent just after the connection reset were still pending when a 5 s bound released
//! them (four in one run of fifteen). lapin queues settlements for its connection's
//! internal task and means to fail them when the channel is gone; which path misses
//! that was not pinned down. Unbounded, such a wait held its caller forever: the
//! engine's slot for that job was never freed, so an orchestrator stopped taking jobs
//! after a restart, or a runner service stopped reporting events. So every settlement
//! here checks the channel first and is bounded by a timeout. A settlement that did
//! not reach the broker is harmless: the broker puts an unsettled message back in its
//! queue when the channel closes.

use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use lapin::{Acker as LapinAcker, Channel};

/// How long a settlement may take before it counts as lost with its channel. Sending
/// one frame; seconds only on a connection that is going away.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// A delivered message and the channel that must stay open to settle it.
#[derive(Debug)]
pub(super) struct Settler {
    channel: Channel,
    acker: LapinAcker,
}

#[derive(Debug, Clone, Copy)]
enum How {
    Ack,
    Requeue,
    Reject,
}

impl Settler {
    pub(super) fn new(channel: Channel, acker: LapinAcker) -> Self {
        Self { channel, acker }
    }

    /// Whether a settlement can still reach the broker.
    pub(super) fn usable(&self) -> bool {
        self.acker.usable() && self.channel.status().connected()
    }

    /// Acknowledges the message; `false` when the channel is gone (the broker holds
    /// the message again and will deliver it anew).
    pub(super) async fn ack(&self) -> bool {
        self.settle(How::Ack).await
    }

    /// Puts the message back in its queue; `false` when the channel is gone (which
    /// puts it back too).
    pub(super) async fn requeue(&self) -> bool {
        self.settle(How::Requeue).await
    }

    /// Rejects the message without requeueing it (the queue's dead-letter exchange
    /// takes it); `false` when the channel is gone.
    pub(super) async fn reject(&self) -> bool {
        self.settle(How::Reject).await
    }

    async fn settle(&self, how: How) -> bool {
        if !self.usable() {
            return false;
        }
        let settled = async {
            match how {
                How::Ack => self.acker.ack(BasicAckOptions::default()).await,
                How::Requeue => {
                    self.acker
                        .nack(BasicNackOptions {
                            requeue: true,
                            multiple: false,
                        })
                        .await
                }
                How::Reject => {
                    self.acker
                        .reject(BasicRejectOptions { requeue: false })
                        .await
                }
            }
        };
        match tokio::time::timeout(SETTLE_TIMEOUT, settled).await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => {
                tracing::debug!(?how, error = %e, "settling a delivery failed; its channel is gone");
                false
            }
            Err(_) => {
                tracing::warn!(?how, timeout = ?SETTLE_TIMEOUT, "settling a delivery did not finish; counting its channel as gone");
                false
            }
        }
    }
}
