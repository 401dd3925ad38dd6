//! Dead letters: messages that could not be decoded or were given up on, kept in the
//! `<prefix>.dead` queue with the reason in a header.

use lapin::options::BasicGetOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};

use super::link::{Ensure, Link, broker};
use crate::{JobEvent, JobId, JobRequest, QueueError};

/// Header holding the reason a message was dead-lettered.
pub(super) const REASON: &str = "x-solstice-reason";
/// Header holding what kind of message it was (`job` or `event`).
const KIND: &str = "x-solstice-kind";
/// Header holding the queue the message was taken from.
const QUEUE: &str = "x-solstice-queue";
/// Header holding the job id, on jobs and on dead letters.
pub(super) const JOB_ID: &str = "x-solstice-job-id";

/// A message in the dead-letter queue, as [`AmqpQueue::dead_letters`](super::AmqpQueue::dead_letters) shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The job the message was about, when it could be told.
    pub job_id: Option<JobId>,
    /// The queue it was taken from.
    pub queue: String,
    /// Why it was dead-lettered: the reason given to `nack`, `undecodable: …`, or the
    /// broker's (`delivery_limit` after too many deliveries, `rejected`, `expired`).
    pub reason: String,
    /// The message body as published.
    pub body: Vec<u8>,
}

/// Publishes a copy of a message to the dead-letter exchange with its reason.
pub(super) async fn send(
    link: &Link,
    kind: &str,
    queue: &str,
    job_id: Option<JobId>,
    reason: &str,
    body: &[u8],
) -> Result<(), QueueError> {
    let mut headers = FieldTable::default();
    headers.insert(REASON.into(), AMQPValue::LongString(reason.into()));
    headers.insert(KIND.into(), AMQPValue::LongString(kind.into()));
    headers.insert(QUEUE.into(), AMQPValue::LongString(queue.into()));
    if let Some(id) = job_id {
        headers.insert(JOB_ID.into(), AMQPValue::LongString(id.to_string().into()));
    }
    let properties = BasicProperties::default().with_delivery_mode(2).with_headers(headers);
    let dead = link.topology.dead();
    link.publish(dead.clone(), dead, body, properties, Ensure::Nothing).await
}

/// Reads up to `max` dead letters without removing them: they are fetched unacknowledged
/// on a private channel, which is closed afterwards, so the broker puts them back.
pub(super) async fn peek(link: &Link, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
    let session = link.session().await?;
    let channel = session.connection.create_channel().await.map_err(broker("channel.open"))?;
    let result = peek_on(link, &channel, max).await;
    let _ = channel.close(200, "peeked".into()).await;
    result
}

async fn peek_on(link: &Link, channel: &Channel, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
    let mut letters = Vec::new();
    while letters.len() < max {
        let got = channel
            .basic_get(link.topology.dead(), BasicGetOptions { no_ack: false })
            .await
            .map_err(broker("basic.get"))?;
        let Some(message) = got else { break };
        letters.push(describe(&message.delivery.properties, message.delivery.data.clone()));
        if message.message_count == 0 {
            break;
        }
    }
    Ok(letters)
}

fn describe(properties: &BasicProperties, body: Vec<u8>) -> DeadLetter {
    let headers = properties.headers().clone().unwrap_or_default();
    let text = |value: Option<&AMQPValue>| match value {
        Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_owned()),
        _ => None,
    };
    let inner = headers.inner();
    // Dead-lettered by the broker itself: the first x-death entry says why and where.
    let death = match inner.get("x-death") {
        Some(AMQPValue::FieldArray(deaths)) => match deaths.as_slice().first() {
            Some(AMQPValue::FieldTable(t)) => Some(t.inner().clone()),
            _ => None,
        },
        _ => None,
    };
    let reason = text(inner.get(REASON))
        .or_else(|| death.as_ref().and_then(|d| text(d.get("reason"))))
        .unwrap_or_else(|| "unknown".to_owned());
    let queue = text(inner.get(QUEUE))
        .or_else(|| death.as_ref().and_then(|d| text(d.get("queue"))))
        .unwrap_or_default();
    let job_id = text(inner.get(JOB_ID))
        .and_then(|id| id.parse().ok())
        .or_else(|| serde_json::from_slice::<JobRequest>(&body).ok().map(|job| job.id))
        .or_else(|| serde_json::from_slice::<JobEvent>(&body).ok().map(|event| event.job_id));
    DeadLetter { job_id, queue, reason, body }
}
