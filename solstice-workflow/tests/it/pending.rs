//! Jobs whose matrix waits for `needs`: planned later with [`PendingJob::plan`].
//!
//! GitHub expands a matrix built from needs outputs once the needed job finished: "you can
//! use the output from one job to define matrices for multiple jobs"
//! (docs.github.com/actions/using-jobs/using-a-matrix-for-your-jobs, "Using an output to
//! define two matrices").

use serde_json::json;
use solstice_workflow::{PlanOptions, WorkflowErrorKind, plan_workflow};

const FIXTURE: &str = include_str!("../fixtures/matrix-from-needs.yml");

fn needs() -> serde_json::Value {
    json!({"setup": {"result": "success", "outputs": {"matrix": "{\"os\":[\"a\",\"b\",\"c\"]}", "os": "[\"x\",\"y\"]"}}})
}

#[test]
fn a_matrix_from_needs_outputs_waits_and_then_expands() {
    let plan = plan_workflow(FIXTURE, "ci.yml", &PlanOptions::new()).expect("plans");
    assert_eq!(plan.jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), ["setup"]);
    let whole = plan.pending.iter().find(|p| p.id == "whole").expect("whole is pending");
    assert_eq!(whole.waits_for, ["needs"]);

    let jobs = whole.plan(&PlanOptions::new().context("needs", needs())).expect("expands");
    let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["whole (a)", "whole (b)", "whole (c)"]);
    // Scripts are evaluated when the step runs, against the job's contexts.
    let script = jobs[2].steps[0].run.as_deref().expect("a run step");
    assert_eq!(solstice_workflow::interpolate(script, &jobs[2].contexts).expect("evaluates"), "echo c");
    assert_eq!(jobs[0].contexts["strategy"]["job-total"], 3);
}

#[test]
fn one_dynamic_key_and_an_include_expand_with_the_other_keys() {
    let plan = plan_workflow(FIXTURE, "ci.yml", &PlanOptions::new()).expect("plans");
    let one = plan.pending.iter().find(|p| p.id == "one-key").expect("one-key is pending");
    assert_eq!(one.waits_for, ["github", "needs"]);
    let options = PlanOptions::new().context("needs", needs()).context("github", json!({"event_name": "push"}));
    let jobs = one.plan(&options).expect("expands");
    let matrices: Vec<_> = jobs.iter().map(|j| j.matrix.clone().map(serde_json::Value::Object)).collect();
    assert_eq!(
        matrices,
        [Some(json!({"os": "x", "version": 1})), Some(json!({"os": "y", "version": 1})), Some(json!({"os": "push"}))]
    );
}

#[test]
fn planning_without_the_awaited_context_is_an_error_not_a_silent_run() {
    let plan = plan_workflow(FIXTURE, "ci.yml", &PlanOptions::new()).expect("plans");
    let whole = plan.pending.iter().find(|p| p.id == "whole").expect("whole is pending");
    let errors = whole.plan(&PlanOptions::new()).expect_err("needs is still missing");
    let error = &errors.errors()[0];
    assert_eq!(error.kind, WorkflowErrorKind::Matrix);
    assert!(error.message.contains("needs"), "{error}");
    assert_eq!(error.line, 17);
}

#[test]
fn a_matrix_that_is_not_a_mapping_once_evaluated_is_an_error() {
    let plan = plan_workflow(FIXTURE, "ci.yml", &PlanOptions::new()).expect("plans");
    let whole = plan.pending.iter().find(|p| p.id == "whole").expect("whole is pending");
    let needs = json!({"setup": {"result": "success", "outputs": {"matrix": "[1, 2]"}}});
    let errors = whole.plan(&PlanOptions::new().context("needs", needs)).expect_err("a list is no matrix");
    assert!(errors.errors()[0].message.contains("must be a mapping"), "{errors}");
}
