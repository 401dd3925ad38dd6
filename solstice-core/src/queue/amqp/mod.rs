//! The RabbitMQ queue, for runner services and orchestrators on many hosts.

mod dead;
mod events;
mod jobs;
mod link;
mod pump;
mod settle;
mod topology;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lapin::BasicProperties;
use lapin::options::QueueDeleteOptions;
use lapin::types::{AMQPValue, FieldTable};

pub use dead::DeadLetter;
pub use topology::JobQueueKind;

use super::{CancelConsumer, EventConsumer, JobConsumer, JobQueue, QueueError};
use crate::{JobEvent, JobId, JobRequest};
use link::{Ensure, Link, broker};
use topology::Topology;

/// How many dead letters [`AmqpQueue::dead_letters`] reads at most.
const DEAD_LETTER_PEEK: usize = 10_000;

/// A [`JobQueue`] on RabbitMQ, shared by any number of processes on any number of hosts.
///
/// Cloning is cheap and gives another handle on the same connection.
///
/// # Topology
/// Everything lives under a namespace prefix (default `solstice`):
///
/// | name | kind | holds |
/// |------|------|-------|
/// | `P.jobs` | direct exchange | jobs, routed by [`JobRequest::route_label`] |
/// | `P.jobs.<label>` | durable queue (quorum by default) | the jobs of one label |
/// | `P.events` | direct exchange | events, routed by the job's `origin.source` |
/// | `P.events.<source>` | durable queue, single active consumer | the events of one source |
/// | `P.cancels` | fanout exchange | cancellation requests |
/// | (server-named) | exclusive, auto-delete queue | one per cancel consumer |
/// | `P.dead` | fanout exchange + durable queue | dead letters, reason in `x-solstice-reason` |
///
/// Jobs and events are persistent and published with publisher confirms; a publish
/// returns once the broker has them on disk. Job and event queues are declared by their
/// publishers too, so nothing published before the first consumer is lost. Deliveries
/// are acknowledged manually, and a job consumer's prefetch is its capacity.
///
/// # Failures
/// The connection is made again with backoff after the broker restarts or the network
/// drops; consumers subscribe again on their own. Unacknowledged jobs go back to their
/// queue, and a redelivered job this process still runs is folded into the running one
/// instead of being handed out twice. Messages that cannot be decoded, jobs nacked
/// without requeue, and (on quorum queues) jobs delivered more often than the delivery
/// limit end in `P.dead`.
///
/// # Example
/// ```no_run
/// use solstice_core::{AmqpQueue, JobQueue, JobRequest, StepCommand};
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let queue = AmqpQueue::builder("amqp://guest:guest@127.0.0.1:5672/%2f")
///    .prefix("ci")
///    .connection_name("orchestrator-1")
///    .connect()
///    .await?;
/// let mut jobs = queue.consume_jobs(&["omnios".to_string()], 4).await?;
/// queue.publish_job(&JobRequest::new("build", vec!["omnios".into()], vec![StepCommand::run("hi", "echo hi")])).await?;
/// let delivery = jobs.next().await?;
/// delivery.acker.ack().await?;
/// queue.close().await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct AmqpQueue {
    link: Arc<Link>,
    inflight: Arc<jobs::InFlight>,
    event_prefetch: u16,
}

/// Builds an [`AmqpQueue`].
#[derive(Clone)]
#[must_use]
pub struct AmqpQueueBuilder {
    url: String,
    name: String,
    topology: Topology,
    event_prefetch: u16,
}

impl std::fmt::Debug for AmqpQueueBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("AmqpQueueBuilder")
            .field("name", &self.name)
            .field("topology", &self.topology)
            .field("event_prefetch", &self.event_prefetch)
            .finish_non_exhaustive()
    }
}

impl AmqpQueueBuilder {
    /// The namespace every exchange and queue name starts with. By default `solstice`.
    /// Processes that work together must use the same prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.topology.prefix = prefix.into();
        self
    }

    /// The name the connection shows in RabbitMQ's management tools. By default
    /// `solstice`.
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The kind of the job queues. By default [`JobQueueKind::Quorum`]. The kind of an
    /// existing queue cannot change: RabbitMQ refuses a declaration that differs.
    pub fn job_queue_kind(mut self, kind: JobQueueKind) -> Self {
        self.topology.job_kind = kind;
        self
    }

    /// On quorum job queues, how many times a job may be delivered before it is
    /// dead-lettered (a job whose orchestrator keeps dying, or that keeps being handed
    /// back). By default 20; `None` for no limit. Ignored for classic queues.
    pub fn delivery_limit(mut self, limit: Option<u32>) -> Self {
        self.topology.delivery_limit = limit;
        self
    }

    /// How many events a source's consumer may hold unacknowledged. By default 256.
    pub fn event_prefetch(mut self, prefetch: u16) -> Self {
        self.event_prefetch = prefetch.max(1);
        self
    }

    /// Lets the broker delete job and event queues that nobody used for this long
    /// (`x-expires`), for short-lived namespaces such as tests. By default queues never
    /// expire. Messages in an expired queue are lost.
    pub fn expire_unused_queues(mut self, after: Option<Duration>) -> Self {
        self.topology.expiry = after;
        self
    }

    /// Connects and declares the exchanges.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when the broker cannot be reached or refuses the
    /// credentials.
    pub async fn connect(self) -> Result<AmqpQueue, QueueError> {
        let link = Arc::new(Link::new(self.url, self.name, self.topology));
        link.session().await?;
        Ok(AmqpQueue { link, inflight: Arc::default(), event_prefetch: self.event_prefetch })
    }
}

impl AmqpQueue {
    /// Starts building a queue on the broker at `url`
    /// (`amqp://USER:PASS@HOST:PORT/VHOST`, the default vhost `/` spelled `%2f`;
    /// `amqps://` for TLS).
    pub fn builder(url: impl Into<String>) -> AmqpQueueBuilder {
        AmqpQueueBuilder {
            url: url.into(),
            name: "solstice".to_owned(),
            topology: Topology {
                prefix: "solstice".to_owned(),
                job_kind: JobQueueKind::default(),
                delivery_limit: Some(20),
                expiry: None,
            },
            event_prefetch: 256,
        }
    }

    /// Connects with the default settings.
    ///
    /// # Errors
    /// As [`AmqpQueueBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Self, QueueError> {
        Self::builder(url).connect().await
    }

    /// The namespace prefix.
    pub fn prefix(&self) -> &str {
        &self.link.topology.prefix
    }

    /// How many messages (jobs, event batches, cancellations, dead letters) this
    /// handle and its clones published and the broker confirmed, since it connected.
    pub fn messages_published(&self) -> u64 {
        self.link.published.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The dead letters of this namespace, oldest first, left in their queue.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when the broker cannot be reached.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        dead::peek(&self.link, DEAD_LETTER_PEEK).await
    }

    /// Closes the connection: consumers end with [`QueueError::Closed`], and jobs and
    /// events delivered but not acknowledged go back to their queues for another
    /// consumer. Every clone of this handle is closed.
    pub async fn close(&self) {
        self.link.close().await;
        self.link.tasks.close();
        self.link.tasks.wait().await;
    }

    /// Deletes this namespace: the queues of `labels` and `routes`, the dead-letter
    /// queue, and the exchanges, with every message in them. For tests and for taking a
    /// deployment down; processes still using the namespace will declare it again.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when the broker cannot be reached.
    pub async fn delete_namespace(&self, labels: &[&str], routes: &[&str]) -> Result<(), QueueError> {
        let session = self.link.session().await?;
        let channel = session.connection.create_channel().await.map_err(broker("channel.open"))?;
        let topology = &self.link.topology;
        let queues = labels
            .iter()
            .map(|l| topology.job_queue(l))
            .chain(routes.iter().map(|r| topology.event_queue(r)))
            .chain([topology.dead()]);
        for queue in queues {
            channel.queue_delete(queue, QueueDeleteOptions::default()).await.map_err(broker("queue.delete"))?;
        }
        for exchange in [topology.jobs_exchange(), topology.events_exchange(), topology.cancels_exchange(), topology.dead()] {
            channel
                .exchange_delete(exchange, lapin::options::ExchangeDeleteOptions::default())
                .await
                .map_err(broker("exchange.delete"))?;
        }
        let _ = channel.close(200, "deleted".into()).await;
        Ok(())
    }
}

fn persistent(job_id: JobId) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(dead::JOB_ID.into(), AMQPValue::LongString(job_id.to_string().into()));
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_headers(headers)
}

#[async_trait]
impl JobQueue for AmqpQueue {
    async fn publish_job(&self, job: &JobRequest) -> Result<(), QueueError> {
        let body = serde_json::to_vec(job).map_err(QueueError::Codec)?;
        let label = job.route_label();
        let properties = persistent(job.id).with_message_id(job.id.to_string().into());
        self.link
            .publish(self.link.topology.jobs_exchange(), Topology::key(label), &body, properties, Ensure::JobQueue(label))
            .await
    }

    async fn consume_jobs(&self, labels: &[String], prefetch: usize) -> Result<Box<dyn JobConsumer>, QueueError> {
        let handler = jobs::JobHandler { link: self.link.clone(), labels: labels.to_vec(), inflight: self.inflight.clone() };
        let prefetch = u16::try_from(prefetch.max(1)).unwrap_or(u16::MAX);
        let subscription = pump::subscribe(self.link.clone(), handler, prefetch).await?;
        Ok(Box::new(jobs::AmqpJobConsumer { subscription }))
    }

    async fn publish_event(&self, route: &str, event: &JobEvent) -> Result<(), QueueError> {
        self.publish_events(route, std::slice::from_ref(event)).await
    }

    async fn waiting_jobs(&self, labels: &[String]) -> Result<Option<u64>, QueueError> {
        let session = self.link.session().await?;
        // A channel of its own: a declare that failed would close the channel it ran on,
        // and the publisher's must stay up.
        let channel = session.connection.create_channel().await.map_err(|e| QueueError::Unavailable(Box::new(e)))?;
        let mut waiting = 0u64;
        for label in labels {
            // Declaring is idempotent (same arguments) and answers with the count of
            // ready messages; a passive declare would fail for a queue not made yet.
            let count = self.link.topology.job_queue_ready(&channel, label).await;
            match count {
                Ok(n) => waiting += u64::from(n),
                Err(e) => {
                    let _ = channel.close(200, "depth".into()).await;
                    return Err(QueueError::Unavailable(Box::new(e)));
                }
            }
        }
        let _ = channel.close(200, "depth".into()).await;
        Ok(Some(waiting))
    }

    async fn publish_events(&self, route: &str, events: &[JobEvent]) -> Result<(), QueueError> {
        // One message per run of events of one job (the batch format of `wire`); the
        // chunks go out one after the other, each confirmed, so their order holds.
        let mut start = 0;
        while start < events.len() {
            let job_id = events[start].job_id;
            let same_job = events[start..].iter().take(wire::MAX_EVENTS_PER_MESSAGE).take_while(|e| e.job_id == job_id).count();
            let chunk = &events[start..start + same_job];
            let body = wire::encode(chunk).map_err(QueueError::Codec)?;
            let properties = persistent(job_id).with_type(wire::EVENTS_V2.into());
            self.link
                .publish(self.link.topology.events_exchange(), Topology::key(route), &body, properties, Ensure::EventQueue(route))
                .await?;
            start += same_job;
        }
        Ok(())
    }

    async fn consume_events(&self, route: &str) -> Result<Box<dyn EventConsumer>, QueueError> {
        let handler = events::EventHandler { link: self.link.clone(), route: route.to_owned() };
        let subscription = pump::subscribe(self.link.clone(), handler, self.event_prefetch).await?;
        Ok(Box::new(events::AmqpEventConsumer { subscription }))
    }

    async fn publish_cancel(&self, job_id: JobId) -> Result<(), QueueError> {
        let body = serde_json::to_vec(&job_id).map_err(QueueError::Codec)?;
        let properties = BasicProperties::default().with_content_type("application/json".into());
        self.link
            .publish(self.link.topology.cancels_exchange(), "".into(), &body, properties, Ensure::Nothing)
            .await
    }

    async fn consume_cancels(&self) -> Result<Box<dyn CancelConsumer>, QueueError> {
        let handler = events::CancelHandler { link: self.link.clone() };
        let subscription = pump::subscribe(self.link.clone(), handler, 0).await?;
        Ok(Box::new(events::AmqpCancelConsumer { subscription }))
    }
}
