//! What a job sees of the jobs before it: the `needs` context of its direct needs, and
//! the status its job-level `success()`/`failure()`/`cancelled()` see, over all its
//! transitive needs.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};
use solstice_workflow::JobStatus;

use crate::JobResult;

/// What one workflow job (all its matrix combinations) left for the jobs after it.
#[derive(Debug, Clone, Default)]
pub(super) struct Finished {
    /// One result per combination that was run or skipped.
    pub(super) results: Vec<JobResult>,
    /// The job's outputs; with a matrix, later combinations overwrite earlier ones.
    pub(super) outputs: BTreeMap<String, String>,
}

impl Finished {
    /// The result `needs.<job>.result` shows: failure if a combination failed, else
    /// cancelled if one was cancelled, skipped if all were skipped, else success.
    pub(super) fn result(&self) -> JobResult {
        if self.results.contains(&JobResult::Failure) {
            JobResult::Failure
        } else if self.results.contains(&JobResult::Cancelled) {
            JobResult::Cancelled
        } else if !self.results.is_empty() && self.results.iter().all(|r| *r == JobResult::Skipped) {
            JobResult::Skipped
        } else {
            JobResult::Success
        }
    }
}

/// The `needs` context: each direct need's result and outputs.
pub(super) fn needs_context(needs: &[String], finished: &HashMap<String, Finished>) -> Value {
    let context: Map<String, Value> = needs
        .iter()
        .map(|need| {
            let done = finished.get(need).cloned().unwrap_or_default();
            (need.clone(), json!({ "result": done.result().as_str(), "outputs": done.outputs }))
        })
        .collect();
    Value::Object(context)
}

/// The status a job-level condition sees. GitHub: "If a run contains a series of jobs that
/// need each other, a failure or skip applies to all jobs in the dependency chain from the
/// point of failure or skip onwards", and `failure()` "returns true if any ancestor job
/// fails" (docs.github.com/actions/writing-workflows/workflow-syntax-for-github-actions,
/// `jobs.<job_id>.needs`; .../evaluate-expressions-in-workflows-and-actions, `failure`).
/// So every ancestor counts, not only the direct needs, and a skipped ancestor makes
/// `success()` false without making `failure()` true ([`JobStatus::Skipped`]).
pub(super) fn ancestor_status(
    needs: &[String],
    needs_of: &HashMap<String, Vec<String>>,
    finished: &HashMap<String, Finished>,
) -> JobStatus {
    let mut seen: Vec<&str> = Vec::new();
    let mut todo: Vec<&str> = needs.iter().map(String::as_str).collect();
    while let Some(job) = todo.pop() {
        if seen.contains(&job) {
            continue;
        }
        seen.push(job);
        todo.extend(needs_of.get(job).into_iter().flatten().map(String::as_str));
    }
    let results: Vec<JobResult> = seen.iter().map(|j| finished.get(*j).map_or(JobResult::Skipped, Finished::result)).collect();
    if results.contains(&JobResult::Cancelled) {
        JobStatus::Cancelled
    } else if results.contains(&JobResult::Failure) {
        JobStatus::Failure
    } else if results.contains(&JobResult::Skipped) {
        JobStatus::Skipped
    } else {
        JobStatus::Success
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(result: JobResult) -> Finished {
        Finished { results: vec![result], outputs: BTreeMap::new() }
    }

    #[test]
    fn a_failure_anywhere_up_the_chain_counts() {
        let needs_of: HashMap<String, Vec<String>> =
            [("b".into(), vec!["a".into()]), ("c".into(), vec!["b".into()])].into_iter().collect();
        let mut finished = HashMap::new();
        finished.insert("a".to_owned(), done(JobResult::Failure));
        finished.insert("b".to_owned(), done(JobResult::Success));
        assert_eq!(ancestor_status(&["b".into()], &needs_of, &finished), JobStatus::Failure);
        finished.insert("a".to_owned(), done(JobResult::Cancelled));
        assert_eq!(ancestor_status(&["b".into()], &needs_of, &finished), JobStatus::Cancelled);
        finished.insert("a".to_owned(), done(JobResult::Success));
        assert_eq!(ancestor_status(&["b".into()], &needs_of, &finished), JobStatus::Success);
        finished.insert("a".to_owned(), done(JobResult::Skipped));
        assert_eq!(ancestor_status(&["b".into()], &needs_of, &finished), JobStatus::Skipped, "skipped is not failed");
    }

    #[test]
    fn a_matrix_job_fails_when_one_combination_failed() {
        let mixed = Finished { results: vec![JobResult::Success, JobResult::Failure], outputs: BTreeMap::new() };
        assert_eq!(mixed.result(), JobResult::Failure);
        let skipped = Finished { results: vec![JobResult::Skipped, JobResult::Skipped], outputs: BTreeMap::new() };
        assert_eq!(skipped.result(), JobResult::Skipped);
        assert_eq!(Finished::default().result(), JobResult::Success);
    }
}
