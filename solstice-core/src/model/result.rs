use serde::{Deserialize, Serialize};

/// How a job ended, with the same four values both forges use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobResult {
    /// Every step that ran succeeded (or failed with `continue-on-error`).
    Success,
    /// A step failed, the machine could not be provisioned, or the job timed out.
    Failure,
    /// The forge or an operator cancelled the job.
    Cancelled,
    /// The job's `if:` was false; nothing ran.
    Skipped,
}

impl JobResult {
    /// The lowercase name the forges and the `job.status` context use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Cancelled => "cancelled",
            Self::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for JobResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one step ended.
///
/// GitHub distinguishes a step's *outcome* (what happened) from its *conclusion* (what
/// counts after `continue-on-error`); [`crate::JobEventKind::StepFinished`] carries both.
pub type StepConclusion = JobResult;
