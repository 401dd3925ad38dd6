//! The bodies of event messages, versioned by the AMQP `type` property.
//!
//! | `type` property | body | written by |
//! |---|---|---|
//! | absent | one [`JobEvent`] as JSON | versions before batching (may still be queued after an upgrade) |
//! | `solstice.events/2` | `{"v":2,"events":[JobEvent, …]}`: events of one job, in order | this version |
//!
//! A batch holds the events of one job that were ready together: one message, one
//! publisher confirm and one acknowledgement instead of one per event. Pure encode and
//! decode: no I/O here.

use serde::{Deserialize, Serialize};

use crate::JobEvent;

/// The `type` property of a batch message.
pub(super) const EVENTS_V2: &str = "solstice.events/2";

/// At most this many events go into one message; a longer run is split, so that one
/// message stays small enough for the broker's frame and memory limits.
pub(super) const MAX_EVENTS_PER_MESSAGE: usize = 256;

/// Why an event message could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum WireError {
    /// The `type` property names a format this version does not know.
    #[error("unsupported event message type `{0}`")]
    UnknownType(String),
    /// The body is not what its type says.
    #[error("undecodable event message")]
    Body(#[source] serde_json::Error),
    /// A batch with no event in it, or with a version field that contradicts its type.
    #[error("malformed event batch (version {version}, {events} events)")]
    Malformed {
        /// The `v` field.
        version: u32,
        /// How many events it held.
        events: usize,
    },
}

#[derive(Serialize)]
struct BatchOut<'a> {
    v: u32,
    events: &'a [JobEvent],
}

#[derive(Deserialize)]
struct BatchIn {
    v: u32,
    events: Vec<JobEvent>,
}

/// Encodes a batch of events (callers keep it at most [`MAX_EVENTS_PER_MESSAGE`] long).
pub(super) fn encode(events: &[JobEvent]) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&BatchOut { v: 2, events })
}

/// Decodes an event message of any supported version; `kind` is its `type` property.
pub(super) fn decode(kind: Option<&str>, body: &[u8]) -> Result<Vec<JobEvent>, WireError> {
    match kind {
        None | Some("") => serde_json::from_slice::<JobEvent>(body).map(|e| vec![e]).map_err(WireError::Body),
        Some(EVENTS_V2) => {
            let batch: BatchIn = serde_json::from_slice(body).map_err(WireError::Body)?;
            if batch.v != 2 || batch.events.is_empty() {
                return Err(WireError::Malformed { version: batch.v, events: batch.events.len() });
            }
            Ok(batch.events)
        }
        Some(other) => Err(WireError::UnknownType(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{JobEventKind, JobId, LogStream};

    fn event(job_id: JobId, seq: u64) -> JobEvent {
        JobEvent {
            job_id,
            attempt: 1,
            seq,
            at: time::OffsetDateTime::UNIX_EPOCH,
            kind: JobEventKind::Log { step: Some(0), stream: LogStream::Stdout, line: format!("line {seq}") },
        }
    }

    #[test]
    fn a_batch_comes_back_whole_and_in_order() {
        let id = JobId::new();
        let events: Vec<_> = (1..=5).map(|seq| event(id, seq)).collect();
        let body = encode(&events).expect("encode");
        assert_eq!(decode(Some(EVENTS_V2), &body).expect("decode"), events);
    }

    #[test]
    fn a_message_of_the_previous_version_is_one_event() {
        let old = event(JobId::new(), 7);
        // What versions before batching published: the event itself, no `type`.
        let body = serde_json::to_vec(&old).expect("encode");
        assert_eq!(decode(None, &body).expect("decode"), vec![old]);
    }

    #[test]
    fn unknown_and_malformed_messages_are_errors() {
        let body = encode(&[event(JobId::new(), 1)]).expect("encode");
        assert!(matches!(decode(Some("solstice.events/9"), &body), Err(WireError::UnknownType(t)) if t == "solstice.events/9"));
        assert!(matches!(decode(None, &body), Err(WireError::Body(_))), "a batch is not a single event");
        assert!(matches!(decode(Some(EVENTS_V2), br#"{"v":2,"events":[]}"#), Err(WireError::Malformed { events: 0, .. })));
        assert!(matches!(decode(Some(EVENTS_V2), br#"{"v":3,"events":[]}"#), Err(WireError::Malformed { version: 3, .. })));
        assert!(matches!(decode(Some(EVENTS_V2), b"{not json"), Err(WireError::Body(_))));
    }
}
