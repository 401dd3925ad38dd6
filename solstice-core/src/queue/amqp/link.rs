//! The connection to RabbitMQ: made again after the broker restarts or the network
//! drops, a confirming publisher channel, and the queues declared on it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::topology::Topology;
use crate::QueueError;
use crate::support::error_chain;

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long closing the connection may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed attempt, callers within this window fail at once instead of queueing
/// up behind more attempts (their own backoff paces the retries).
const FAIL_FAST: Duration = Duration::from_millis(250);

/// How long one exchange with the broker (opening a channel and declaring on it,
/// subscribing, a publish and its confirm) may take before it counts as failed and is
/// retried. A guard, not a tuning knob: an exchange caught by the connection failing
/// must end with an error, and one lapin settlement was seen to hang instead (see
/// `settle.rs`); nothing shows the other requests do, but a hang here would stall a
/// job or a subscription for good, so they are bounded too.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// `exchange`, failed as unavailable when it takes longer than [`EXCHANGE_TIMEOUT`].
pub(super) async fn bounded<T>(
    op: &'static str,
    exchange: impl std::future::Future<Output = Result<T, QueueError>>,
) -> Result<T, QueueError> {
    match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(op, timeout = ?EXCHANGE_TIMEOUT, "RabbitMQ did not answer in time; retrying");
            Err(QueueError::Unavailable(Box::new(AmqpError::Timeout {
                op,
                after: EXCHANGE_TIMEOUT,
            })))
        }
    }
}

/// A RabbitMQ operation that failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum AmqpError {
    /// The broker or the connection to it failed during `op`.
    #[error("RabbitMQ operation `{op}` failed")]
    Broker {
        op: &'static str,
        #[source]
        source: lapin::Error,
    },
    /// Connecting did not finish in time.
    #[error("connecting to RabbitMQ timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// The broker did not answer in time.
    #[error("RabbitMQ did not answer `{op}` within {after:?}")]
    Timeout { op: &'static str, after: Duration },
    /// The last connection attempt failed a moment ago.
    #[error("RabbitMQ is unreachable (last attempt: {0})")]
    Unreachable(String),
    /// The broker returned a message as unroutable.
    #[error("RabbitMQ could not route the message to `{0}`")]
    Unroutable(String),
}

/// Wraps a lapin error as a transient queue error.
pub(super) fn broker(op: &'static str) -> impl FnOnce(lapin::Error) -> QueueError {
    move |source| QueueError::Unavailable(Box::new(AmqpError::Broker { op, source }))
}

/// Which queue a publish needs to exist before the message goes out, so that nothing
/// published before its first consumer is dropped as unroutable.
#[derive(Debug, Clone, Copy)]
pub(super) enum Ensure<'a> {
    Nothing,
    JobQueue(&'a str),
    EventQueue(&'a str),
}

/// One live connection with its publisher channel.
#[derive(Debug)]
pub(super) struct Session {
    pub(super) connection: Arc<Connection>,
    publisher: Channel,
    declared: Mutex<HashSet<String>>,
}

impl Session {
    fn usable(&self) -> bool {
        self.connection.status().connected() && self.publisher.status().connected()
    }

    fn is_declared(&self, key: &str) -> bool {
        self.declared.lock().map(|d| d.contains(key)).unwrap_or(false)
    }

    fn mark_declared(&self, key: String, declared: bool) {
        if let Ok(mut set) = self.declared.lock() {
            if declared {
                set.insert(key);
            } else {
                set.remove(&key);
            }
        }
    }
}

/// The shared connection state of one [`super::AmqpQueue`] and its consumers.
pub(super) struct Link {
    url: String,
    name: String,
    pub(super) topology: Topology,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
    last_failure: Mutex<Option<(Instant, String)>>,
    /// Settles deliveries dropped unsettled and runs the consumers' pumps.
    pub(super) tasks: TaskTracker,
    /// Fired by [`super::AmqpQueue::close`].
    pub(super) closed: CancellationToken,
    /// Messages the broker confirmed, for [`super::AmqpQueue::messages_published`].
    pub(super) published: AtomicU64,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL: it may hold a password.
        f.debug_struct("Link").field("name", &self.name).field("topology", &self.topology).finish_non_exhaustive()
    }
}

impl Link {
    pub(super) fn new(url: String, name: String, topology: Topology) -> Self {
        Self {
            url,
            name,
            topology,
            session: tokio::sync::Mutex::new(None),
            last_failure: Mutex::new(None),
            tasks: TaskTracker::new(),
            closed: CancellationToken::new(),
            published: AtomicU64::new(0),
        }
    }

    /// The live session, connecting (again) if there is none.
    ///
    /// # Errors
    /// [`QueueError::Closed`] after close; [`QueueError::Unavailable`] when the broker
    /// cannot be reached now.
    pub(super) async fn session(&self) -> Result<Arc<Session>, QueueError> {
        if self.closed.is_cancelled() {
            return Err(QueueError::Closed);
        }
        let mut current = self.session.lock().await;
        if let Some(session) = current.as_ref().filter(|s| s.usable()) {
            return Ok(session.clone());
        }
        if let Ok(last) = self.last_failure.lock()
            && let Some((at, why)) = last.as_ref()
            && at.elapsed() < FAIL_FAST
        {
            return Err(QueueError::Unavailable(Box::new(AmqpError::Unreachable(why.clone()))));
        }
        // Keep a connection whose publisher channel alone failed; otherwise reconnect.
        let connection = current.as_ref().map(|s| s.connection.clone()).filter(|c| c.status().connected());
        let fresh = connection.is_none();
        match bounded("open a session", self.open(connection)).await {
            Ok(session) => {
                if fresh {
                    tracing::info!(connection = %self.name, "connected to RabbitMQ");
                }
                if let Ok(mut last) = self.last_failure.lock() {
                    *last = None;
                }
                *current = Some(session.clone());
                Ok(session)
            }
            Err(e) => {
                let why = error_chain(&e);
                tracing::debug!(connection = %self.name, error = %why, "could not connect to RabbitMQ");
                if let Ok(mut last) = self.last_failure.lock() {
                    *last = Some((Instant::now(), why));
                }
                Err(e)
            }
        }
    }

    async fn open(&self, connection: Option<Arc<Connection>>) -> Result<Arc<Session>, QueueError> {
        let connection = match connection {
            Some(c) => c,
            None => {
                let properties = ConnectionProperties::default().with_connection_name(self.name.clone().into());
                let url = with_heartbeat(&self.url);
                let connect = Connection::connect(&url, properties);
                let connection = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                    .await
                    .map_err(|_| QueueError::Unavailable(Box::new(AmqpError::ConnectTimeout(CONNECT_TIMEOUT))))?
                    .map_err(broker("connect"))?;
                Arc::new(connection)
            }
        };
        let publisher = connection.create_channel().await.map_err(broker("channel.open"))?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await.map_err(broker("confirm.select"))?;
        self.topology.declare_exchanges(&publisher).await.map_err(broker("declare exchanges"))?;
        Ok(Arc::new(Session { connection, publisher, declared: Mutex::default() }))
    }

    /// Publishes one persistent message and waits for the broker's confirm. A publish
    /// that fails because the connection died is tried once more on a new connection
    /// (a duplicate is harmless: jobs and events are idempotent by id and sequence).
    ///
    /// # Errors
    /// [`QueueError::Unavailable`], [`QueueError::NotConfirmed`], [`QueueError::Closed`].
    pub(super) async fn publish(
        &self,
        exchange: ShortString,
        routing_key: ShortString,
        body: &[u8],
        properties: BasicProperties,
        ensure: Ensure<'_>,
    ) -> Result<(), QueueError> {
        let mut last = None;
        for _ in 0..2 {
            let session = self.session().await?;
            let publish = self.publish_on(
                &session,
                &exchange,
                &routing_key,
                body,
                properties.clone(),
                ensure,
            );
            match bounded("publish", publish).await {
                Ok(()) => return Ok(()),
                Err(e @ QueueError::NotConfirmed) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(QueueError::Closed))
    }

    async fn publish_on(
        &self,
        session: &Session,
        exchange: &ShortString,
        routing_key: &ShortString,
        body: &[u8],
        properties: BasicProperties,
        ensure: Ensure<'_>,
    ) -> Result<(), QueueError> {
        let declared_key = match ensure {
            Ensure::Nothing => None,
            Ensure::JobQueue(label) => Some(format!("j:{label}")),
            Ensure::EventQueue(route) => Some(format!("e:{route}")),
        };
        if let Some(key) = declared_key.as_ref().filter(|k| !session.is_declared(k)) {
            self.declare(session, ensure).await?;
            session.mark_declared(key.clone(), true);
        }
        let options = BasicPublishOptions { mandatory: declared_key.is_some(), ..BasicPublishOptions::default() };
        let confirm = session
            .publisher
            .basic_publish(exchange.clone(), routing_key.clone(), options, body, properties)
            .await
            .map_err(broker("basic.publish"))?
            .await
            .map_err(broker("publisher confirm"))?;
        match confirm {
            Confirmation::Ack(None) => {
                self.published.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Confirmation::Ack(Some(_)) => {
                // Unroutable: the queue vanished (deleted by an operator, or expired).
                // Declare it again on the retry.
                if let Some(key) = declared_key {
                    session.mark_declared(key, false);
                }
                Err(QueueError::Unavailable(Box::new(AmqpError::Unroutable(routing_key.to_string()))))
            }
            Confirmation::Nack(_) => Err(QueueError::NotConfirmed),
            Confirmation::NotRequested => Err(QueueError::NotConfirmed),
        }
    }

    /// Declares on a short-lived channel, so that a refused declaration (arguments that
    /// differ from an existing queue's) cannot close the publisher channel.
    async fn declare(&self, session: &Session, ensure: Ensure<'_>) -> Result<(), QueueError> {
        let channel = session.connection.create_channel().await.map_err(broker("channel.open"))?;
        let declared = match ensure {
            Ensure::Nothing => Ok(()),
            Ensure::JobQueue(label) => self.topology.declare_job_queue(&channel, label).await.map(drop),
            Ensure::EventQueue(route) => self.topology.declare_event_queue(&channel, route).await.map(drop),
        };
        declared.map_err(broker("queue.declare"))?;
        let _ = channel.close(200, "declared".into()).await;
        Ok(())
    }

    /// Closes the connection; unacknowledged deliveries go back to their queues.
    pub(super) async fn close(&self) {
        self.closed.cancel();
        let session = self.session.lock().await.take();
        if let Some(session) = session
            && session.connection.status().connected()
        {
            // Bounded like every exchange: a close the broker does not answer must not
            // keep a stopping service from exiting (the broker drops the connection,
            // and requeues what it held, when the socket closes).
            match tokio::time::timeout(CLOSE_TIMEOUT, session.connection.close(200, "closing".into())).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "closing the RabbitMQ connection failed"),
                Err(_) => tracing::warn!(timeout = ?CLOSE_TIMEOUT, "RabbitMQ did not answer the connection close; leaving it"),
            }
        }
    }
}

/// AMQP heartbeat, in seconds, unless the URL sets one: a connection the broker
/// dropped without a close frame (a restart) is noticed within two intervals, and
/// consumers subscribe again, instead of waiting on a dead socket.
const HEARTBEAT_SECS: u16 = 10;

/// `url` with `heartbeat=HEARTBEAT_SECS` added when it has no heartbeat of its own.
fn with_heartbeat(url: &str) -> String {
    if url.contains("heartbeat=") {
        return url.to_owned();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}heartbeat={HEARTBEAT_SECS}")
}

#[cfg(test)]
mod tests {
    use super::with_heartbeat;

    #[test]
    fn a_heartbeat_is_added_unless_the_url_has_one() {
        assert_eq!(with_heartbeat("amqp://h:5672/%2f"), "amqp://h:5672/%2f?heartbeat=10");
        assert_eq!(with_heartbeat("amqp://h/v?channel_max=9"), "amqp://h/v?channel_max=9&heartbeat=10");
        assert_eq!(with_heartbeat("amqp://h/v?heartbeat=30"), "amqp://h/v?heartbeat=30");
    }
}
