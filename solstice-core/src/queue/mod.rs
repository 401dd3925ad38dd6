//! The [`JobQueue`] seam between job sources and orchestrators, and its backends.

#[cfg(feature = "amqp")]
mod amqp;
mod memory;
mod ready;

#[cfg(feature = "amqp")]
pub use amqp::{AmqpQueue, AmqpQueueBuilder, DeadLetter, JobQueueKind};
pub use memory::MemoryQueue;

use async_trait::async_trait;

use crate::{JobEvent, JobId, JobRequest};

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The queue has been shut down.
    #[error("the queue is closed")]
    Closed,
    /// The broker could not be reached or dropped the connection; retry with backoff.
    #[error("the message broker is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The broker did not confirm a publish.
    #[error("the broker did not confirm the message")]
    NotConfirmed,
    /// A message could not be encoded or decoded.
    #[error("a queue message could not be encoded or decoded")]
    Codec(#[source] serde_json::Error),
}

impl QueueError {
    /// Whether a retry with backoff may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::NotConfirmed)
    }
}

/// Settles a delivery with the queue. Implemented by each backend.
#[async_trait]
pub trait Acker: Send + Sync + std::fmt::Debug {
    /// The message was handled; the queue forgets it.
    async fn ack(self: Box<Self>) -> Result<(), QueueError>;
    /// The message was not handled; the queue gives it to a consumer again if `requeue`,
    /// otherwise dead-letters it with `reason`.
    async fn nack(self: Box<Self>, requeue: bool, reason: &str) -> Result<(), QueueError>;
}

/// A job handed to an orchestrator, to be acknowledged once its final state is recorded.
#[derive(Debug)]
pub struct JobDelivery {
    /// The job.
    pub job: JobRequest,
    /// The queue delivered it before and it was not acknowledged (its consumer died).
    pub redelivered: bool,
    /// Settles the delivery.
    pub acker: Box<dyn Acker>,
}

/// An event handed back to the source that owns its job.
#[derive(Debug)]
pub struct EventDelivery {
    /// The event.
    pub event: JobEvent,
    /// Settles the delivery (ack once the forge accepted the event).
    pub acker: Box<dyn Acker>,
}

/// Yields jobs for the labels it was opened with.
#[async_trait]
pub trait JobConsumer: Send {
    /// The next job; waits until one arrives.
    ///
    /// # Errors
    /// [`QueueError::Closed`] after shutdown; transient errors after a broker failure
    /// the backend could not hide.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped call loses no job (unacknowledged jobs are redelivered).
    async fn next(&mut self) -> Result<JobDelivery, QueueError>;
}

/// Yields the events routed to one source.
#[async_trait]
pub trait EventConsumer: Send {
    /// The next event; waits until one arrives.
    ///
    /// # Errors
    /// As [`JobConsumer::next`].
    async fn next(&mut self) -> Result<EventDelivery, QueueError>;
}

/// Yields cancellation requests; every orchestrator sees every request.
#[async_trait]
pub trait CancelConsumer: Send {
    /// The next job id to cancel.
    ///
    /// # Errors
    /// As [`JobConsumer::next`].
    async fn next(&mut self) -> Result<JobId, QueueError>;
}

/// The buffer between job sources and orchestrators, and the way back.
///
/// # Contract
/// - Jobs are routed by [`JobRequest::route_label`]: a consumer opened for labels `L`
///   receives only jobs whose route label is in `L`.
/// - Delivery is at least once: a job not acknowledged (consumer died, `nack` with
///   requeue) is delivered again with `redelivered = true`. Consumers make redelivery
///   harmless by the job id (the store records each job's final state once).
/// - Events are routed by the job's `origin.source`, in publish order per job, and
///   kept until acknowledged, so a source restart loses none.
/// - Cancellations are broadcast to every cancel consumer open at the time.
///
/// # Example
/// ```
/// use solstice_core::{JobQueue, JobRequest, MemoryQueue, StepCommand};
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let queue = MemoryQueue::new();
/// let mut consumer = queue.consume_jobs(&["omnios".to_string()], 4).await?;
/// let job = JobRequest::new("build", vec!["omnios".into()], vec![StepCommand::run("hi", "echo hi")]);
/// queue.publish_job(&job).await?;
/// let delivery = consumer.next().await?;
/// assert_eq!(delivery.job.id, job.id);
/// delivery.acker.ack().await?;
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(run()).unwrap();
/// ```
#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Publishes a job; returns once the queue holds it durably (broker confirm).
    ///
    /// # Errors
    /// [`QueueError`]; transient ones may be retried with the same job.
    async fn publish_job(&self, job: &JobRequest) -> Result<(), QueueError>;

    /// Opens a consumer for jobs routed to any of `labels`, with at most `prefetch`
    /// unacknowledged jobs at a time.
    ///
    /// # Errors
    /// [`QueueError`].
    async fn consume_jobs(
        &self,
        labels: &[String],
        prefetch: usize,
    ) -> Result<Box<dyn JobConsumer>, QueueError>;

    /// How many jobs routed to `labels` wait for a consumer (published, not yet
    /// delivered), if the backend can tell; for the `solstice_queue_depth` metric.
    ///
    /// By default `None`: a backend that cannot count is not an error.
    ///
    /// # Errors
    /// [`QueueError`] when the backend could count but failed to.
    async fn waiting_jobs(&self, labels: &[String]) -> Result<Option<u64>, QueueError> {
        let _ = labels;
        Ok(None)
    }

    /// Publishes an event for the source named `route`.
    ///
    /// # Errors
    /// [`QueueError`].
    async fn publish_event(&self, route: &str, event: &JobEvent) -> Result<(), QueueError>;

    /// Publishes events of one job for the source named `route`, in order; returns
    /// once the queue holds all of them durably. A backend may carry them in fewer
    /// messages than events (RabbitMQ sends one batch message); consumers still see
    /// one [`EventDelivery`] per event, in order.
    ///
    /// By default publishes them one by one with
    /// [`publish_event`](JobQueue::publish_event).
    ///
    /// # Errors
    /// [`QueueError`]. After an error some of the events may have been published:
    /// retry with the same events (sources drop what they saw by `(attempt, seq)`).
    async fn publish_events(&self, route: &str, events: &[JobEvent]) -> Result<(), QueueError> {
        for event in events {
            self.publish_event(route, event).await?;
        }
        Ok(())
    }

    /// Opens the consumer of the events routed to `route`.
    ///
    /// # Errors
    /// [`QueueError`].
    async fn consume_events(&self, route: &str) -> Result<Box<dyn EventConsumer>, QueueError>;

    /// Asks every orchestrator to cancel a job.
    ///
    /// # Errors
    /// [`QueueError`].
    async fn publish_cancel(&self, job_id: JobId) -> Result<(), QueueError>;

    /// Opens a consumer of cancellation requests.
    ///
    /// # Errors
    /// [`QueueError`].
    async fn consume_cancels(&self) -> Result<Box<dyn CancelConsumer>, QueueError>;
}
