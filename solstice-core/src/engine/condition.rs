//! Evaluating a step's `if:` at run time.

use serde_json::{Map, Value};

/// The job's status as the status-check functions see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobStatus {
    Success,
    Failure,
    Cancelled,
}

/// Evaluates an `if:` condition (with or without `${{ }}`) against the contexts.
///
/// An expression that calls none of the status-check functions is implicitly
/// `success() && (expr)`, as on GitHub.
pub(crate) fn evaluate_condition(
    condition: Option<&str>,
    status: JobStatus,
    contexts: &Map<String, Value>,
) -> Result<bool, String> {
    let status = match status {
        JobStatus::Success => solstice_workflow::JobStatus::Success,
        JobStatus::Failure => solstice_workflow::JobStatus::Failure,
        JobStatus::Cancelled => solstice_workflow::JobStatus::Cancelled,
    };
    let condition = condition.map(str::trim).filter(|c| !c.is_empty()).unwrap_or("success()");
    solstice_workflow::evaluate_condition(condition, contexts, status).map_err(|e| e.to_string())
}

/// Replaces the `${{ }}` expressions left in `text` (those that need run-time contexts).
pub(crate) fn interpolate(text: &str, contexts: &Map<String, Value>) -> Result<String, String> {
    if !text.contains("${{") {
        return Ok(text.to_owned());
    }
    solstice_workflow::interpolate(text, contexts).map_err(|e| e.to_string())
}
