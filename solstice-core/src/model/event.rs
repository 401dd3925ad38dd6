use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Annotation, JobId, JobResult, StepConclusion};
use std::collections::BTreeMap;

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    /// The step's standard output.
    Stdout,
    /// The step's standard error.
    Stderr,
    /// Written by Solstice itself: step headers, boot console, errors.
    System,
}

/// Something that happened to a job, in the order it happened.
///
/// Events of one job carry a `seq` that starts at 1 and grows by one for every event of
/// the same `attempt`. A reporter that resends until the forge acknowledges can use
/// `(attempt, seq)` to drop duplicates and to detect a gap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    /// The job this is about.
    pub job_id: JobId,
    /// Which run of the job (1 for the first; a job redelivered after its orchestrator
    /// died runs again as attempt 2).
    pub attempt: u32,
    /// Position of this event within the attempt, from 1.
    pub seq: u64,
    /// When the event happened.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// What happened.
    pub kind: JobEventKind,
}

/// The kinds of [`JobEvent`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum JobEventKind {
    /// An orchestrator took the job.
    Accepted {
        /// Which orchestrator (host name or configured id).
        orchestrator: String,
    },
    /// A step began. `index` counts the job's steps from 0.
    StepStarted {
        /// The step's position.
        index: usize,
        /// The step's display name.
        name: String,
    },
    /// One line of output, secrets already masked.
    Log {
        /// The step it belongs to; `None` for job-level lines (machine boot, clean-up).
        step: Option<usize>,
        /// Which stream.
        stream: LogStream,
        /// The line, without its line terminator.
        line: String,
    },
    /// An annotation (`::error`, `::warning`, `::notice`), sent right before the log
    /// line(s) that show it, so it points at the next line of its step's log.
    Annotation {
        /// The step it belongs to; `None` for job-level annotations.
        step: Option<usize>,
        /// The annotation, secrets already masked.
        annotation: Annotation,
    },
    /// A step ended.
    StepFinished {
        /// The step's position.
        index: usize,
        /// What happened (`failure` for a failed step even with `continue-on-error`).
        outcome: StepConclusion,
        /// What counts (`success` for a failed step with `continue-on-error`).
        conclusion: StepConclusion,
        /// The process exit code, when a process ran and exited.
        exit_code: Option<i32>,
        /// Outputs the step wrote to `$GITHUB_OUTPUT`.
        #[serde(default)]
        outputs: BTreeMap<String, String>,
    },
    /// The job ended. Always the last event of an attempt.
    JobFinished {
        /// The result.
        result: JobResult,
    },
}

impl JobEvent {
    /// Whether this is the final event of its attempt.
    pub fn is_final(&self) -> bool {
        matches!(self.kind, JobEventKind::JobFinished { .. })
    }
}
