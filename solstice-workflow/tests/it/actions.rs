//! Action steps (`uses:`) Solstice CI cannot run yet: they are planned as steps that fail
//! when, and only if, they run (issue 15), keeping their action reference for the day the
//! runner can run actions (issue 17). What is malformed stays an error at planning.

use solstice_workflow::{PlanOptions, StepKind, WorkflowErrorKind, plan_workflow};

fn job(steps: &str) -> String {
    format!("on: push\njobs:\n  build:\n    runs-on: linux\n    steps:\n      - run: make\n{steps}")
}

#[test]
fn an_action_guarded_by_failure_does_not_make_the_workflow_invalid() {
    let source = job("      - if: failure()\n        uses: ./\n");
    let plan = plan_workflow(&source, "ci.yml", &PlanOptions::new()).expect("plans");
    let step = &plan.jobs[0].steps[1];
    assert_eq!(step.kind, StepKind::UnsupportedAction);
    assert_eq!(step.condition, "failure()");
    assert_eq!(step.name, "Run ./");
    assert_eq!(step.action.as_ref().map(|a| a.uses.as_str()), Some("./"));
}

#[test]
fn the_action_keeps_its_reference_and_inputs_with_known_expressions_substituted() {
    let source = "on: push\njobs:\n  build:\n    runs-on: linux\n    strategy:\n      matrix:\n        node: [20]\n    steps:\n      - uses: actions/setup-node@v4\n        id: node\n        with:\n          node-version: ${{ matrix.node }}\n          token: ${{ secrets.NPM }}\n";
    let plan = plan_workflow(source, "ci.yml", &PlanOptions::new()).expect("plans");
    let step = &plan.jobs[0].steps[0];
    assert_eq!((step.id.as_str(), step.kind), ("node", StepKind::UnsupportedAction));
    let action = step.action.as_ref().expect("action");
    assert_eq!(action.uses, "actions/setup-node@v4");
    assert_eq!(action.with["node-version"], "20");
    assert_eq!(action.with["token"], "${{ secrets.NPM }}");
    assert!(action.message.starts_with("the action 'actions/setup-node@v4' cannot run on Solstice CI yet"), "{}", action.message);
    let json = serde_json::to_value(step).expect("serializes");
    assert_eq!(json["kind"], "unsupported_action");
    assert_eq!(json["action"]["uses"], "actions/setup-node@v4");
}

#[test]
fn checkout_inputs_the_built_in_checkout_lacks_fail_the_step_not_the_workflow() {
    let source = job("      - uses: actions/checkout@v4\n        with:\n          repository: other/repo\n          lfs: true\n");
    let plan = plan_workflow(&source, "ci.yml", &PlanOptions::new()).expect("plans");
    let step = &plan.jobs[0].steps[1];
    assert_eq!(step.kind, StepKind::UnsupportedAction);
    let message = &step.action.as_ref().expect("action").message;
    assert!(message.contains("'repository', 'lfs'"), "{message}");
}

#[test]
fn a_malformed_checkout_input_or_uses_is_still_an_error() {
    let source = job("      - uses: actions/checkout@v4\n        with:\n          fetch-depth: many\n");
    let errors = plan_workflow(&source, "ci.yml", &PlanOptions::new()).expect_err("malformed");
    assert!(errors.errors()[0].message.contains("fetch-depth"), "{errors}");
    let source = job("      - if: failure()\n        uses: not-an-action\n");
    let errors = plan_workflow(&source, "ci.yml", &PlanOptions::new()).expect_err("malformed");
    assert_eq!(errors.errors()[0].kind, WorkflowErrorKind::Syntax);
}

#[test]
fn job_level_features_stay_errors_at_planning() {
    let source = "on: push\njobs:\n  build:\n    runs-on: linux\n    container: alpine\n    services:\n      db:\n        image: postgres\n    steps:\n      - run: make\n  reuse:\n    uses: org/repo/.github/workflows/x.yml@v1\n";
    let errors = plan_workflow(source, "ci.yml", &PlanOptions::new()).expect_err("unsupported");
    let kinds: Vec<_> = errors.errors().iter().map(|e| (e.line, e.kind)).collect();
    assert_eq!(
        kinds,
        [(5, WorkflowErrorKind::Unsupported), (7, WorkflowErrorKind::Unsupported), (12, WorkflowErrorKind::Unsupported)]
    );
}
