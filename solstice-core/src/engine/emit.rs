//! Numbering, masking and sending one job's events.

use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::support::Masker;
use crate::{JobEvent, JobEventKind, JobId, LogStream};

/// Sends one attempt's events in order, numbered from 1, with every log line masked.
#[derive(Debug)]
pub(crate) struct Emitter {
    job_id: JobId,
    attempt: u32,
    seq: u64,
    masker: Masker,
    tx: mpsc::Sender<JobEvent>,
}

impl Emitter {
    pub(crate) fn new(job_id: JobId, attempt: u32, masker: Masker, tx: mpsc::Sender<JobEvent>) -> Self {
        Self { job_id, attempt, seq: 0, masker, tx }
    }

    pub(crate) async fn emit(&mut self, kind: JobEventKind) {
        self.seq += 1;
        let event = JobEvent {
            job_id: self.job_id,
            attempt: self.attempt,
            seq: self.seq,
            at: OffsetDateTime::now_utc(),
            kind,
        };
        if self.tx.send(event).await.is_err() {
            tracing::warn!(job_id = %self.job_id, "job event dropped: nobody listens to this job");
        }
    }

    /// Emits a log line, masked. (`::add-mask::` in a step's output is a workflow
    /// command, registered through [`Emitter::add_mask`] before the lines after it.)
    pub(crate) async fn log(&mut self, step: Option<usize>, stream: LogStream, line: &str) {
        let line = self.masker.mask(line);
        self.emit(JobEventKind::Log { step, stream, line }).await;
    }

    /// Masks `value` in every later line (`::add-mask::`, a `stop-commands` token).
    pub(crate) fn add_mask(&mut self, value: &str) {
        self.masker.add(value);
    }

    /// Masks a value that leaves the engine outside a log line (step outputs).
    pub(crate) fn mask(&self, value: &str) -> String {
        self.masker.mask(value)
    }
}
