//! The Forgejo and Gitea dialect of workflows: the `forge` and `gitea` contexts and actions
//! named by full URL. Forgejo documents both in its workflow reference,
//! <https://forgejo.org/docs/latest/user/actions/reference/> (context `forge`, "an alias of
//! `github`"; `uses:` with `https://data.forgejo.org/actions/checkout@v4`).

use serde_json::json;
use solstice_workflow::{PlanOptions, StepKind, WorkflowErrorKind, parse_workflow, plan_workflow};

fn job(steps: &str) -> String {
    format!("on: push\njobs:\n  build:\n    runs-on: docker\n    steps:\n{steps}")
}

#[test]
fn forge_and_gitea_mirror_the_github_context_given_to_the_planner() {
    let source = job("      - run: echo ${{ forge.repository }} ${{ gitea.sha }} ${{ github.ref_name }}\n");
    let github = json!({"repository": "o/r", "sha": "abc123", "ref_name": "main"});
    let plan = plan_workflow(&source, "ci.yml", &PlanOptions::new().context("github", github.clone())).expect("plans");
    let job = &plan.jobs[0];
    // Scripts are evaluated when the step runs, against the job's contexts.
    let script = job.steps[0].run.as_deref().expect("a run step");
    assert_eq!(solstice_workflow::interpolate(script, &job.contexts).expect("evaluates"), "echo o/r abc123 main");
    // The planner adds `job` (the job's key) to each; otherwise they are what was given.
    assert_eq!(job.contexts["forge"], job.contexts["github"]);
    assert_eq!(job.contexts["gitea"], job.contexts["github"]);
    assert_eq!(job.contexts["forge"]["sha"], github["sha"]);
    assert_eq!(job.contexts["forge"]["job"], "build");
}

#[test]
fn an_alias_given_on_its_own_wins_over_the_mirror() {
    let source = job("      - run: echo ${{ forge.server }} ${{ gitea.server }}\n");
    let options = PlanOptions::new()
        .context("forge", json!({"server": "forgejo"}))
        .context("github", json!({"server": "github"}));
    let plan = plan_workflow(&source, "ci.yml", &options).expect("plans");
    let script = plan.jobs[0].steps[0].run.as_deref().expect("a run step");
    assert_eq!(solstice_workflow::interpolate(script, &plan.jobs[0].contexts).expect("evaluates"), "echo forgejo github");
}

#[test]
fn without_a_github_context_forge_stays_for_the_engine() {
    // An unknown context is not an error: it is left for the engine, like `github` itself.
    let source = job("      - run: echo ${{ forge.sha }}\n        if: gitea.event_name == 'push'\n");
    let plan = plan_workflow(&source, "ci.yml", &PlanOptions::new()).expect("plans");
    assert_eq!(plan.jobs[0].steps[0].run.as_deref(), Some("echo ${{ forge.sha }}"));
    assert_eq!(plan.jobs[0].steps[0].condition, "success() && (gitea.event_name == 'push')");
    assert!(!plan.jobs[0].contexts.contains_key("forge"));
}

#[test]
fn a_url_whose_path_is_actions_checkout_is_the_built_in_checkout_on_any_host() {
    for uses in ["https://data.forgejo.org/actions/checkout@v4", "http://code.example/actions/checkout@main"] {
        let source = job(&format!("      - uses: {uses}\n        with:\n          path: src\n"));
        let plan = plan_workflow(&source, "ci.yml", &PlanOptions::new()).unwrap_or_else(|e| panic!("{uses}: {e}"));
        let step = &plan.jobs[0].steps[0];
        assert_eq!(step.kind, StepKind::Checkout, "{uses}");
        assert_eq!(step.checkout.as_ref().and_then(|c| c.path.as_deref()), Some("src"));
        assert_eq!(step.name, format!("Run {uses}"));
    }
}

#[test]
fn another_url_action_parses_and_is_an_action_solstice_cannot_run_yet() {
    let source = job("      - uses: https://code.example/org/action@v1\n        with:\n          level: 3\n");
    let workflow = parse_workflow(&source, "ci.yml").expect("a full URL is well-formed");
    assert_eq!(workflow.jobs[0].steps[0].uses.as_deref(), Some("https://code.example/org/action@v1"));
    let plan = plan_workflow(&source, "ci.yml", &PlanOptions::new()).expect("plans");
    let step = &plan.jobs[0].steps[0];
    assert_eq!(step.kind, StepKind::UnsupportedAction);
    let action = step.action.as_ref().expect("the action reference is kept");
    assert_eq!(action.uses, "https://code.example/org/action@v1");
    assert_eq!(action.with["level"], "3");
    assert!(action.message.contains("https://code.example/org/action@v1"), "{}", action.message);
}

#[test]
fn a_malformed_url_is_still_rejected_at_its_position() {
    for uses in ["https://code.example@v1", "https://code.example/org@v1", "https:///org/action@v1", "https://code.example/org/action", "ftp://x/org/action@v1"] {
        let source = job(&format!("      - uses: {uses}\n"));
        let errors = parse_workflow(&source, "ci.yml").expect_err(uses);
        let error = &errors.errors()[0];
        assert_eq!((error.kind, error.line, error.column), (WorkflowErrorKind::Syntax, 6, 15), "{uses}: {error}");
        assert!(error.message.contains(uses), "{error}");
    }
}
