//! A job's `steps` context as its events build it, and its `outputs:` evaluated with it:
//! what a forge reporter sends back and what `needs.<job>.outputs` shows later jobs.

use serde_json::{Map, Value, json};
use solstice_workflow::ExpressionError;

use crate::{JobEventKind, JobRequest};

/// The `steps` context of one running job: for every finished step with an id, its
/// `outputs`, `outcome` and `conclusion`, as GitHub's runner keeps it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepsContext {
    ids: Vec<Option<String>>,
    steps: Map<String, Value>,
}

impl StepsContext {
    /// An empty context for steps with these ids (`None` for a step that cannot be named
    /// in `steps.*`), in step order.
    pub fn new(ids: Vec<Option<String>>) -> Self {
        Self { ids, steps: Map::new() }
    }

    /// An empty context for the steps of `job`.
    pub fn for_job(job: &JobRequest) -> Self {
        Self::new(job.steps.iter().map(|s| s.id.clone()).collect())
    }

    /// Takes in a job event: a finished step with an id enters the context; other events
    /// change nothing.
    pub fn record(&mut self, event: &JobEventKind) {
        if let JobEventKind::StepFinished { index, outcome, conclusion, outputs, .. } = event
            && let Some(Some(id)) = self.ids.get(*index)
        {
            self.steps.insert(
                id.clone(),
                json!({ "outputs": outputs, "outcome": outcome.as_str(), "conclusion": conclusion.as_str() }),
            );
        }
    }

    /// Forgets every step (a job that runs again from its first step).
    pub fn clear(&mut self) {
        self.steps.clear();
    }

    /// The context, keyed by step id.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.steps
    }

    /// Evaluates a job's `outputs:` (`name: ${{ expression }}`, as in
    /// [`solstice_workflow::JobPlan::outputs`]) at the end of the job, with `contexts` (the
    /// job's own) plus this `steps` context and `job.status` = `status`. Returns every
    /// output in order, each with its text or why it could not be evaluated; the caller
    /// decides whether to warn or drop.
    pub fn job_outputs(
        &self,
        exprs: &Map<String, Value>,
        contexts: &Map<String, Value>,
        status: &str,
    ) -> Vec<(String, Result<String, ExpressionError>)> {
        let mut contexts = contexts.clone();
        contexts.insert("steps".into(), Value::Object(self.steps.clone()));
        contexts.insert("job".into(), json!({ "status": status }));
        exprs
            .iter()
            .map(|(key, expr)| {
                let text = match expr {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (key.clone(), solstice_workflow::interpolate(&text, &contexts))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::StepConclusion;

    fn finished(index: usize, outputs: &[(&str, &str)]) -> JobEventKind {
        JobEventKind::StepFinished {
            index,
            outcome: StepConclusion::Success,
            conclusion: StepConclusion::Success,
            exit_code: Some(0),
            outputs: outputs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn job_outputs_read_the_outputs_of_steps_with_ids() {
        let mut steps = StepsContext::new(vec![None, Some("make".into())]);
        steps.record(&finished(0, &[("ignored", "x")]));
        steps.record(&finished(1, &[("file", "x.tar")]));
        assert_eq!(steps.as_map().len(), 1, "a step without id is not in the context");
        let mut exprs = Map::new();
        exprs.insert("artifact".into(), json!("dist/${{ steps.make.outputs.file }}"));
        exprs.insert("state".into(), json!("${{ job.status }}"));
        exprs.insert("broken".into(), json!("${{ steps.make.outputs.file == }}"));
        let outputs = steps.job_outputs(&exprs, &Map::new(), "success");
        assert_eq!(outputs[0].0, "artifact");
        assert_eq!(outputs[0].1.as_deref().ok(), Some("dist/x.tar"));
        assert_eq!(outputs[1].1.as_deref().ok(), Some("success"));
        assert!(outputs[2].1.is_err(), "a broken expression is reported, not guessed");
        steps.clear();
        assert!(steps.as_map().is_empty());
    }
}
