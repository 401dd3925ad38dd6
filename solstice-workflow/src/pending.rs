//! Jobs whose matrix can only be expanded while the workflow runs: a matrix built from the
//! outputs of the jobs it needs (`matrix: ${{ fromJSON(needs.setup.outputs.matrix) }}`).

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Diagnostics, WorkflowErrorKind, WorkflowErrors};
use crate::expression::{Expression, TemplatePart, split_template};
use crate::plan::{JobPlan, PlanOptions, Resolver, plan_job};
use crate::syntax::{Job, Workflow};

/// A workflow job the planner could not expand because its matrix (the whole of it, a
/// key, a value, `include` or `exclude`) uses contexts it was not given, most often
/// `needs`. GitHub expands such a matrix once the jobs it needs have finished; whoever runs
/// the whole workflow does the same with [`PendingJob::plan`]. A forge hands a runner one
/// job at a time, already expanded, so forge runners never see one.
///
/// ```
/// use serde_json::json;
/// use solstice_workflow::{PlanOptions, plan_workflow};
///
/// let source = r#"
/// on: push
/// jobs:
///   setup:
///     runs-on: linux
///     outputs:
///       os: ${{ steps.list.outputs.os }}
///     steps:
///       - id: list
///         run: echo 'os=["illumos","linux"]' >> "$GITHUB_OUTPUT"
///   test:
///     needs: setup
///     runs-on: ${{ matrix.os }}
///     strategy:
///       matrix:
///         os: ${{ fromJSON(needs.setup.outputs.os) }}
///     steps:
///       - run: make test
/// "#;
/// let plan = plan_workflow(source, "ci.yml", &PlanOptions::new())?;
/// assert_eq!(plan.jobs.len(), 1, "only setup can be planned now");
/// let test = &plan.pending[0];
/// assert_eq!(test.waits_for, ["needs"]);
///
/// // Once setup finished:
/// let needs = json!({"setup": {"result": "success", "outputs": {"os": "[\"illumos\",\"linux\"]"}}});
/// let jobs = test.plan(&PlanOptions::new().context("needs", needs))?;
/// assert_eq!(jobs.len(), 2);
/// assert_eq!(jobs[1].runs_on, ["linux"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct PendingJob {
    /// The job's key under `jobs:`.
    pub id: String,
    /// The job's `name:` as written, or its id.
    pub name: String,
    /// Ids of the jobs this one needs.
    pub needs: Vec<String>,
    /// The `if:` condition, normalized as in [`JobPlan::condition`]. Evaluate it (with
    /// [`PendingJob::contexts`] plus `needs`) before planning: a skipped job's matrix is
    /// never expanded.
    #[serde(rename = "if")]
    pub condition: String,
    /// The contexts the matrix uses that the planner was not given, sorted.
    pub waits_for: Vec<String>,
    /// The `strategy.matrix` as written.
    pub matrix: Value,
    /// The contexts the planner was given, for the job's `if:`.
    pub contexts: Map<String, Value>,
    #[serde(skip)]
    workflow: Arc<Workflow>,
    #[serde(skip)]
    file_name: String,
}

impl PendingJob {
    pub(crate) fn new(workflow: &Arc<Workflow>, job: &Job, file_name: &str, waits_for: Vec<String>, options: &PlanOptions) -> Self {
        Self {
            id: job.id.clone(),
            name: job.name.clone().unwrap_or_else(|| job.id.clone()),
            needs: job.needs.clone(),
            condition: job.condition.clone(),
            waits_for,
            matrix: job.strategy.as_ref().and_then(|s| s.matrix.clone()).unwrap_or(Value::Null),
            contexts: options.known_contexts().clone(),
            workflow: Arc::clone(workflow),
            file_name: file_name.to_owned(),
        }
    }

    /// Plans the job as [`crate::plan_workflow`] would, one [`JobPlan`] per matrix
    /// combination, with `options` (those of the first planning plus the contexts the job
    /// waited for, typically `needs` with the needed jobs' results and outputs).
    ///
    /// # Errors
    /// The matrix cannot be expanded: it still uses a context `options` lacks, does not
    /// evaluate to a mapping, or breaks GitHub's matrix rules; or a value of the job
    /// depends on the matrix and is invalid. The job must then fail; it never runs with an
    /// unevaluated matrix.
    pub fn plan(&self, options: &PlanOptions) -> Result<Vec<JobPlan>, WorkflowErrors> {
        let mut diag = Diagnostics::new(&self.file_name);
        let mut jobs = Vec::new();
        let job = self.workflow.jobs.iter().find(|j| j.id == self.id);
        if let Some(job) = job
            && let Some(missing) = plan_job(&self.workflow, job, options, &mut diag, &mut jobs)
        {
            let pos = job.strategy.as_ref().map_or(job.pos, |s| s.matrix_pos);
            diag.push(
                WorkflowErrorKind::Matrix,
                pos,
                format!(
                    "the matrix of job '{}' uses the context{} {}, which {} not known when the job is planned; only the contexts github, vars, inputs and needs can build a matrix",
                    self.id,
                    if missing.len() == 1 { "" } else { "s" },
                    missing.join(", "),
                    if missing.len() == 1 { "is" } else { "are" },
                ),
            );
        }
        diag.into_result(jobs)
    }
}

/// What a matrix needs before it can be expanded.
pub(crate) enum MatrixNeeds {
    /// Nothing: every expression in it can be evaluated now.
    Nothing,
    /// These contexts, sorted.
    Contexts(Vec<String>),
}

/// Finds the contexts a matrix uses that `resolver` does not know, in its keys and values at
/// any depth.
///
/// # Errors
/// An expression that cannot be parsed, or that calls a function with no value before a
/// job runs (`hashFiles()`, the status functions).
pub(crate) fn matrix_needs(resolver: &Resolver<'_>, matrix: &Value) -> Result<MatrixNeeds, String> {
    let mut missing = Vec::new();
    collect_missing(resolver, matrix, &mut missing)?;
    missing.sort();
    missing.dedup();
    Ok(if missing.is_empty() { MatrixNeeds::Nothing } else { MatrixNeeds::Contexts(missing) })
}

fn collect_missing(resolver: &Resolver<'_>, value: &Value, missing: &mut Vec<String>) -> Result<(), String> {
    match value {
        Value::String(text) => template_missing(resolver, text, missing),
        Value::Array(items) => items.iter().try_for_each(|item| collect_missing(resolver, item, missing)),
        Value::Object(map) => map.iter().try_for_each(|(key, item)| {
            if key != crate::plan::INSERT_KEY {
                template_missing(resolver, key, missing)?;
            }
            collect_missing(resolver, item, missing)
        }),
        _ => Ok(()),
    }
}

fn template_missing(resolver: &Resolver<'_>, text: &str, missing: &mut Vec<String>) -> Result<(), String> {
    if !text.contains("${{") {
        return Ok(());
    }
    for part in split_template(text).map_err(|e| e.message().to_owned())? {
        let TemplatePart::Expression { text: inner, .. } = part else { continue };
        let expr = Expression::parse(inner).map_err(|e| e.message().to_owned())?;
        if resolver.known(&expr) {
            continue;
        }
        if let Some(function) = expr
            .called_functions()
            .into_iter()
            .find(|f| matches!(*f, "hashFiles" | "success" | "failure" | "cancelled" | "always"))
        {
            return Err(format!(
                "the matrix uses {function}(), which has no value before a job runs; a matrix can only use the contexts github, vars, inputs and needs"
            ));
        }
        missing.extend(expr.referenced_contexts().into_iter().filter(|c| !resolver.contexts.contains_key(c)));
    }
    Ok(())
}
