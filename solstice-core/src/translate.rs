//! Turning a translated workflow job ([`solstice_workflow::JobPlan`]) into a
//! [`JobRequest`]: the one place where the workflow crate meets the model, shared by the
//! CLI and the forge runners.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value};
use solstice_workflow::{JobPlan, StepKind, StepPlan, Submodules};

use crate::{CheckoutStep, JobId, JobOrigin, JobRequest, StepAction, StepCommand};

/// A JSON value as the string GitHub puts into an environment variable.
fn env_string(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

fn env_map(env: &Map<String, Value>) -> BTreeMap<String, String> {
    env.iter().map(|(k, v)| (k.clone(), env_string(v))).collect()
}

fn step_command(step: &StepPlan) -> StepCommand {
    let action = match step.kind {
        StepKind::Checkout => {
            let checkout = step.checkout.as_ref();
            StepAction::Checkout(CheckoutStep {
                path: checkout.and_then(|c| c.path.clone()).unwrap_or_default(),
                git_ref: checkout.and_then(|c| c.git_ref.clone()),
                fetch_depth: checkout.map(|c| u32::try_from(c.fetch_depth).unwrap_or(u32::MAX)).unwrap_or(1),
                submodules: checkout.and_then(|c| match c.submodules {
                    Submodules::True => Some("true".to_owned()),
                    Submodules::Recursive => Some("recursive".to_owned()),
                    _ => None,
                }),
            })
        }
        StepKind::UnsupportedAction => match &step.action {
            Some(action) => StepAction::UnsupportedAction {
                uses: action.uses.clone(),
                with: env_map(&action.with),
                message: action.message.clone(),
            },
            None => StepAction::UnsupportedAction {
                uses: String::new(),
                with: BTreeMap::new(),
                message: "this action step cannot run on Solstice CI".to_owned(),
            },
        },
        _ => StepAction::Run {
            script: step.run.clone().unwrap_or_default(),
            shell: step.shell.clone().unwrap_or_else(|| solstice_workflow::DEFAULT_SHELL.to_owned()),
        },
    };
    StepCommand {
        // Generated ids (`__run`) are not addressable in `steps.*`, but keeping them
        // does no harm and keeps the context complete.
        id: Some(step.id.clone()),
        name: step.name.clone(),
        action,
        // The step's own env only: the engine puts it over the job's env and the
        // `$GITHUB_ENV` writes of earlier steps, evaluating each when it runs.
        env: env_map(&step.env),
        working_directory: step.working_directory.clone(),
        condition: Some(step.condition.clone()).filter(|c| !c.trim().is_empty()),
        continue_on_error: step.continue_on_error,
        timeout: step.timeout_minutes.map(|m| Duration::from_secs(m.saturating_mul(60))),
        continue_on_error_expression: step.continue_on_error_expression.clone(),
        timeout_expression: step.timeout_minutes_expression.clone(),
    }
}

/// Builds the [`JobRequest`] for one planned job.
///
/// The job's id is derived from `origin` ([`JobId::from_external`]) when it has an
/// external id, so the same forge job always gets the same id; otherwise it is fresh.
/// Secrets, the checkout source and forge-specific contexts are added by the caller.
pub fn job_request_from_plan(plan: &JobPlan, origin: JobOrigin) -> JobRequest {
    let id = if origin.external_id.is_empty() {
        JobId::new()
    } else {
        JobId::from_external(&origin.source, &origin.external_id)
    };
    let mut job = JobRequest::new(plan.name.clone(), plan.runs_on.clone(), plan.steps.iter().map(step_command).collect());
    job.id = id;
    job.origin = origin;
    job.env = env_map(&plan.env);
    job.timeout = Duration::from_secs(plan.timeout_minutes.saturating_mul(60));
    job.contexts = plan.contexts.clone();
    // The opt-in only: the keys that make it usable come from the forge (the source's
    // job), because only the source knows who started the run.
    job.debug_ssh = plan.debug_ssh;
    job
}

#[cfg(test)]
mod tests {
    use super::*;
    use solstice_workflow::{PlanOptions, plan_workflow};

    #[test]
    fn a_planned_job_becomes_a_job_request() {
        let yaml = "on: push\nenv:\n  GLOBAL: 1\njobs:\n  build:\n    runs-on: [self-hosted, omnios]\n    timeout-minutes: 30\n    steps:\n      - uses: actions/checkout@v4\n        with:\n          fetch-depth: 0\n      - name: Test\n        run: make test\n        shell: sh\n        if: always()\n        timeout-minutes: 5\n        env:\n          LOCAL: yes\n";
        let plan = plan_workflow(yaml, "ci.yml", &PlanOptions::new()).expect("plan");
        let origin = JobOrigin { source: "forgejo:r".into(), external_id: "7".into(), repository: None };
        let job = job_request_from_plan(&plan.jobs[0], origin);
        assert_eq!(job.id, JobId::from_external("forgejo:r", "7"));
        assert_eq!(job.route_label(), "omnios");
        assert_eq!(job.timeout, Duration::from_secs(1800));
        assert_eq!(job.env.get("GLOBAL").map(String::as_str), Some("1"));
        assert_eq!(job.steps.len(), 2);
        assert!(matches!(&job.steps[0].action, StepAction::Checkout(c) if c.fetch_depth == 0));
        let test = &job.steps[1];
        assert!(matches!(&test.action, StepAction::Run { script, shell } if script == "make test" && shell == "sh -e {0}"));
        assert_eq!(test.condition.as_deref(), Some("always()"));
        assert_eq!(test.timeout, Some(Duration::from_secs(300)));
        assert_eq!(test.env.get("LOCAL").map(String::as_str), Some("yes"));
        assert!(!job.debug_ssh, "debug SSH is never on by default");
    }

    #[test]
    fn an_action_step_keeps_its_reference_inputs_and_reason() {
        let yaml = "on: push\njobs:\n  build:\n    runs-on: linux\n    steps:\n      - uses: actions/setup-node@v4\n        if: failure()\n        with:\n          node-version: 20\n";
        let plan = plan_workflow(yaml, "ci.yml", &PlanOptions::new()).expect("plan");
        let job = job_request_from_plan(&plan.jobs[0], JobOrigin::default());
        let StepAction::UnsupportedAction { uses, with, message } = &job.steps[0].action else { panic!("{:?}", job.steps[0].action) };
        assert_eq!(uses, "actions/setup-node@v4");
        assert_eq!(with.get("node-version").map(String::as_str), Some("20"));
        assert!(message.contains("cannot run on Solstice CI yet"), "{message}");
        assert_eq!(job.steps[0].condition.as_deref(), Some("failure()"));
    }

    #[test]
    fn the_debug_ssh_opt_in_reaches_the_job_request() {
        let yaml = "on: push\njobs:\n  build:\n    runs-on: tiny-linux\n    env:\n      SOLSTICE_DEBUG_SSH: true\n    steps:\n      - run: make\n";
        let plan = plan_workflow(yaml, "ci.yml", &PlanOptions::new()).expect("plan");
        let job = job_request_from_plan(&plan.jobs[0], JobOrigin::default());
        assert!(job.debug_ssh);
        assert!(job.debug_keys.is_empty(), "keys come from the forge, not the workflow");
    }
}
