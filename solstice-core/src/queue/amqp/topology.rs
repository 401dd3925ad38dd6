//! Exchange and queue names, their arguments, and their declarations.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, ExchangeKind};

/// The kind of RabbitMQ queue that holds the jobs of one label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum JobQueueKind {
    /// A quorum queue (replicated, Raft). It counts deliveries, so a job that keeps
    /// killing its consumers is dead-lettered after the
    /// [delivery limit](super::AmqpQueueBuilder::delivery_limit). The default.
    #[default]
    Quorum,
    /// A classic durable queue. Slightly faster on one node; has no delivery limit.
    Classic,
}

/// How long a name may be in AMQP (a "short string").
const MAX_NAME: usize = 255;

/// The names and arguments of everything one namespace (`prefix`) declares.
#[derive(Debug, Clone)]
pub(super) struct Topology {
    pub(super) prefix: String,
    pub(super) job_kind: JobQueueKind,
    pub(super) delivery_limit: Option<u32>,
    pub(super) expiry: Option<Duration>,
}

impl Topology {
    /// The direct exchange jobs are published to, routed by label.
    pub(super) fn jobs_exchange(&self) -> ShortString {
        short(format!("{}.jobs", self.prefix))
    }

    /// The direct exchange events are published to, routed by source.
    pub(super) fn events_exchange(&self) -> ShortString {
        short(format!("{}.events", self.prefix))
    }

    /// The fanout exchange of cancellation requests.
    pub(super) fn cancels_exchange(&self) -> ShortString {
        short(format!("{}.cancels", self.prefix))
    }

    /// The fanout exchange and queue of dead letters (same name).
    pub(super) fn dead(&self) -> ShortString {
        short(format!("{}.dead", self.prefix))
    }

    /// The routing key of a label or route: the name itself while it fits.
    pub(super) fn key(name: &str) -> ShortString {
        short(name.to_owned())
    }

    /// The durable queue holding the jobs of one label.
    pub(super) fn job_queue(&self, label: &str) -> ShortString {
        short(format!("{}.jobs.{label}", self.prefix))
    }

    /// The durable queue holding the events of one source.
    pub(super) fn event_queue(&self, route: &str) -> ShortString {
        short(format!("{}.events.{route}", self.prefix))
    }

    fn common_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(self.dead().as_str().into()));
        if let Some(expiry) = self.expiry {
            let ms = i64::try_from(expiry.as_millis()).unwrap_or(i64::MAX).max(1);
            args.insert("x-expires".into(), AMQPValue::LongLongInt(ms));
        }
        args
    }

    fn job_queue_args(&self) -> FieldTable {
        let mut args = self.common_args();
        if self.job_kind == JobQueueKind::Quorum {
            args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
            if let Some(limit) = self.delivery_limit {
                let limit = i64::from(limit);
                args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(limit));
            }
        }
        args
    }

    fn event_queue_args(&self) -> FieldTable {
        let mut args = self.common_args();
        // Events of a source are reported in order; should an old runner process still
        // hold the queue while its successor starts, only one of them gets events.
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        args
    }

    /// Declares the exchanges and the dead-letter queue (idempotent).
    pub(super) async fn declare_exchanges(&self, channel: &Channel) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        for (name, kind) in [
            (self.jobs_exchange(), ExchangeKind::Direct),
            (self.events_exchange(), ExchangeKind::Direct),
            (self.cancels_exchange(), ExchangeKind::Fanout),
            (self.dead(), ExchangeKind::Fanout),
        ] {
            channel.exchange_declare(name, kind, durable, FieldTable::default()).await?;
        }
        let queue = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        channel.queue_declare(self.dead(), queue, FieldTable::default()).await?;
        channel
            .queue_bind(self.dead(), self.dead(), "".into(), QueueBindOptions::default(), FieldTable::default())
            .await?;
        Ok(())
    }

    /// Declares and binds the queue of a label; returns its name.
    pub(super) async fn declare_job_queue(&self, channel: &Channel, label: &str) -> lapin::Result<ShortString> {
        let name = self.job_queue(label);
        let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        channel.queue_declare(name.clone(), options, self.job_queue_args()).await?;
        channel
            .queue_bind(name.clone(), self.jobs_exchange(), Self::key(label), QueueBindOptions::default(), FieldTable::default())
            .await?;
        Ok(name)
    }

    /// Declares and binds the queue of a label (idempotent); returns how many messages
    /// in it are ready for delivery.
    pub(super) async fn job_queue_ready(&self, channel: &Channel, label: &str) -> lapin::Result<u32> {
        let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        let queue = channel.queue_declare(self.job_queue(label), options, self.job_queue_args()).await?;
        channel
            .queue_bind(queue.name().clone(), self.jobs_exchange(), Self::key(label), QueueBindOptions::default(), FieldTable::default())
            .await?;
        Ok(queue.message_count())
    }

    /// Declares and binds the queue of a source's events; returns its name.
    pub(super) async fn declare_event_queue(&self, channel: &Channel, route: &str) -> lapin::Result<ShortString> {
        let name = self.event_queue(route);
        let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        channel.queue_declare(name.clone(), options, self.event_queue_args()).await?;
        channel
            .queue_bind(name.clone(), self.events_exchange(), Self::key(route), QueueBindOptions::default(), FieldTable::default())
            .await?;
        Ok(name)
    }

    /// Declares a private queue bound to the cancel fanout; returns its server-made name.
    pub(super) async fn declare_cancel_queue(&self, channel: &Channel) -> lapin::Result<ShortString> {
        let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
        let queue = channel.queue_declare("".into(), options, FieldTable::default()).await?;
        let name = queue.name().clone();
        channel
            .queue_bind(name.clone(), self.cancels_exchange(), "".into(), QueueBindOptions::default(), FieldTable::default())
            .await?;
        Ok(name)
    }
}

/// A name that fits in an AMQP short string: names longer than 255 bytes keep a prefix
/// and end in a stable digest of the whole name, so every process derives the same one.
fn short(name: String) -> ShortString {
    if name.len() <= MAX_NAME {
        return ShortString::from(name);
    }
    let digest = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).simple().to_string();
    let mut cut = MAX_NAME - digest.len() - 1;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    ShortString::from(format!("{}~{digest}", &name[..cut]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_shortened_stably() {
        let long = "é".repeat(200);
        let a = short(long.clone());
        assert!(a.as_str().len() <= MAX_NAME);
        assert_eq!(a, short(long.clone()));
        assert_ne!(a, short(format!("{long}x")));
        assert_eq!(short("solstice.jobs.omnios".into()).as_str(), "solstice.jobs.omnios");
    }
}
