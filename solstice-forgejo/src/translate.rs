//! A Forgejo task into a Solstice job: the single-job `workflow_payload` planned by
//! `solstice-workflow` with the task's `github` context, `vars`, `needs` and `secrets`.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use solstice_core::{CheckoutSource, JobOrigin, JobRequest, Secret, job_request_from_plan};
use solstice_workflow::{JobStatus, PlanOptions, plan_workflow};

use crate::proto::runner::v1 as pb;
use crate::proto::struct_to_json;

/// What to do with a task.
#[derive(Debug)]
pub(crate) enum Translation {
    /// Run this job; `outputs` are the job's `outputs:` expressions.
    Run {
        /// The job.
        job: Box<JobRequest>,
        /// `outputs:` of the job, evaluated when it succeeds.
        outputs: Map<String, Value>,
        /// The user whose published public keys the job needs before it is queued
        /// (`github.actor`): set only for a job that opted in to debug SSH.
        debug_user: Option<String>,
    },
    /// The job's `if:` is false: report it skipped.
    Skip {
        /// Pre-created steps.
        steps: usize,
        /// Why, for the log.
        reason: String,
    },
    /// The runner cannot run the task: report it failed with these log lines.
    Fail {
        /// Pre-created steps.
        steps: usize,
        /// What went wrong, then the payload with line numbers.
        lines: Vec<String>,
    },
}

/// Translates one task for the source named `source`.
pub(crate) fn translate(task: &pb::Task, source: &str) -> Translation {
    let github = task.context.as_ref().map(struct_to_json).unwrap_or_default();
    let payload_bytes = task.workflow_payload.as_deref().unwrap_or_default();
    let Ok(payload) = std::str::from_utf8(payload_bytes) else {
        return Translation::Fail {
            steps: 0,
            lines: vec!["##[error]The task's workflow payload is not UTF-8 text.".to_owned()],
        };
    };
    let file_name = match github.get("workflow").and_then(Value::as_str).filter(|w| !w.is_empty()) {
        Some(workflow) => format!("{workflow} (as sent for this job)"),
        None => "workflow payload".to_owned(),
    };
    let steps = solstice_workflow::parse_workflow(payload, &file_name)
        .ok()
        .and_then(|w| w.jobs.first().map(|j| j.steps.len()))
        .unwrap_or(0);

    let vars: Map<String, Value> = task.vars.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let needs = needs_context(task);
    let mut options = PlanOptions::new()
        .context("github", Value::Object(github.clone()))
        .context("vars", Value::Object(vars))
        .context("needs", Value::Object(needs.clone()));
    if let Some(inputs) = github.get("event").and_then(|e| e.get("inputs")).filter(|i| i.is_object()) {
        options = options.context("inputs", inputs.clone());
    }
    let plan = match plan_workflow(payload, &file_name, &options) {
        Ok(plan) => plan,
        Err(errors) => {
            let mut lines = vec!["##[error]This job cannot run on Solstice CI:".to_owned()];
            lines.extend(errors.errors().iter().map(|e| format!("##[error]{e}")));
            lines.extend(echo_payload(payload));
            return Translation::Fail { steps, lines };
        }
    };
    let [plan] = plan.jobs.as_slice() else {
        let mut lines = vec![format!(
            "##[error]The task's workflow must hold exactly one job, found {}.",
            plan.jobs.len()
        )];
        lines.extend(echo_payload(payload));
        return Translation::Fail { steps, lines };
    };

    let mut contexts = plan.contexts.clone();
    contexts.insert("needs".into(), Value::Object(needs));
    match solstice_workflow::evaluate_condition(&plan.condition, &contexts, needs_status(task)) {
        Ok(true) => {}
        Ok(false) => {
            return Translation::Skip {
                steps: plan.steps.len(),
                reason: format!("Skipped: the job's condition `{}` is false.", plan.condition),
            };
        }
        Err(e) => {
            return Translation::Fail {
                steps: plan.steps.len(),
                lines: vec![format!("##[error]The job's `if:` could not be evaluated: {e}")],
            };
        }
    }

    let repository = github.get("repository").and_then(Value::as_str).filter(|r| !r.is_empty()).map(str::to_owned);
    let origin = JobOrigin { source: source.to_owned(), external_id: task.id.to_string(), repository: repository.clone() };
    let mut job = job_request_from_plan(plan, origin);
    job.contexts = contexts;
    job.contexts.insert(
        "secrets".into(),
        Value::Object(task.secrets.iter().map(|(k, v)| (k.clone(), json!(v))).collect()),
    );

    let token = text(&github, "token");
    let mut secrets: Vec<&str> = task.secrets.values().map(String::as_str).collect();
    secrets.extend([token, text(&github, "gitea_runtime_token"), text(&github, "forgejo_runtime_token")]);
    secrets.sort_unstable();
    secrets.dedup();
    job.secrets = secrets.into_iter().filter(|s| !s.trim().is_empty()).map(Secret::new).collect();

    // The engine makes the `GITHUB_*` variables of the `github` context; `GITHUB_JOB` is
    // the job's id, as Forgejo's runner sets it, and Forgejo's runner says who it is.
    if let Some(Value::Object(github)) = job.contexts.get_mut("github") {
        github.entry("job").or_insert_with(|| Value::String(plan.id.clone()));
    }
    for name in ["GITEA_ACTIONS", "FORGEJO_ACTIONS"] {
        job.env.entry(name.to_owned()).or_insert_with(|| "true".to_owned());
    }
    let server_url = text(&github, "server_url");
    let sha = text(&github, "sha");
    if let (Some(repository), false, false) = (&repository, server_url.is_empty(), sha.is_empty()) {
        job.checkout = Some(CheckoutSource::Git {
            url: format!("{}/{repository}.git", server_url.trim_end_matches('/')),
            rev: sha.to_owned(),
            token: Some(token).filter(|t| !t.is_empty()).map(Secret::new),
        });
    }
    // Debug SSH admits the user who started the run (`github.actor`), with the keys
    // the forge publishes for them; the source fetches them, as that is I/O.
    let debug_user = Some(text(&github, "actor")).filter(|actor| job.debug_ssh && !actor.is_empty()).map(str::to_owned);
    Translation::Run { job: Box::new(job), outputs: plan.outputs.clone(), debug_user }
}

fn text<'a>(github: &'a Map<String, Value>, key: &str) -> &'a str {
    github.get(key).and_then(Value::as_str).unwrap_or("")
}

/// `needs.<id>.result` and `.outputs` from the task's needs.
fn needs_context(task: &pb::Task) -> Map<String, Value> {
    let sorted: BTreeMap<_, _> = task.needs.iter().collect();
    sorted
        .into_iter()
        .map(|(id, need)| {
            let outputs: BTreeMap<_, _> = need.outputs.iter().collect();
            (id.clone(), json!({ "result": result_name(need.result), "outputs": outputs }))
        })
        .collect()
}

fn result_name(result: i32) -> &'static str {
    match pb::Result::try_from(result) {
        Ok(pb::Result::Success) => "success",
        Ok(pb::Result::Failure) => "failure",
        Ok(pb::Result::Cancelled) => "cancelled",
        Ok(pb::Result::Skipped) => "skipped",
        _ => "",
    }
}

/// The status `success()`/`failure()` see in a job's `if:`: that of its needs.
fn needs_status(task: &pb::Task) -> JobStatus {
    let results: Vec<_> = task.needs.values().map(|n| pb::Result::try_from(n.result)).collect();
    if results.iter().any(|r| matches!(r, Ok(pb::Result::Cancelled))) {
        JobStatus::Cancelled
    } else if results.iter().any(|r| matches!(r, Ok(pb::Result::Failure))) {
        JobStatus::Failure
    } else {
        JobStatus::Success
    }
}

/// The payload with line numbers, so an error's line and column can be found.
fn echo_payload(payload: &str) -> Vec<String> {
    let mut lines = vec!["The job as Forgejo sent it:".to_owned()];
    lines.extend(payload.lines().enumerate().map(|(i, line)| format!("{:>4} | {line}", i + 1)));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::json_to_struct;
    use solstice_core::StepAction;

    fn task(payload: &str) -> pb::Task {
        let context = json!({
            "repository": "o/r", "sha": "abc123", "server_url": "https://forge.example/",
            "token": "t0k3n", "run_id": 42, "event_name": "push", "workflow": "ci.yml", "actor": "alice",
            "gitea_default_actions_url": "https://data.forgejo.org",
        });
        let Value::Object(context) = context else { unreachable!() };
        let mut task = pb::Task {
            id: 17,
            workflow_payload: Some(payload.as_bytes().to_vec()),
            context: Some(json_to_struct(&context)),
            ..Default::default()
        };
        task.secrets.insert("GITHUB_TOKEN".into(), "t0k3n".into());
        task.secrets.insert("DEPLOY".into(), "hunter2".into());
        task.vars.insert("TARGET".into(), "omnios".into());
        task
    }

    #[test]
    fn a_payload_becomes_a_job_with_contexts_secrets_and_checkout() {
        let payload = "name: ci\non: push\njobs:\n  build:\n    name: build\n    runs-on: host\n    outputs:\n      v: ${{ steps.x.outputs.v }}\n    steps:\n      - uses: actions/checkout@v4\n      - id: x\n        run: echo ${{ vars.TARGET }} ${{ github.run_id }} ${{ secrets.DEPLOY }} ${{ needs.setup.outputs.n }}\n";
        let mut task = task(payload);
        let mut need = pb::TaskNeed { result: pb::Result::Success as i32, ..Default::default() };
        need.outputs.insert("n".into(), "7".into());
        task.needs.insert("setup".into(), need);
        let Translation::Run { job, outputs, debug_user } = translate(&task, "forgejo:r") else { panic!("not runnable") };
        assert_eq!((job.debug_ssh, debug_user), (false, None), "debug SSH is opt-in");
        assert_eq!(job.id, solstice_core::JobId::from_external("forgejo:r", "17"));
        assert_eq!(job.runs_on, ["host"]);
        let StepAction::Run { script, .. } = &job.steps[1].action else { panic!("run step") };
        // Evaluated when the step runs, against these contexts.
        assert_eq!(script, "echo ${{ vars.TARGET }} ${{ github.run_id }} ${{ secrets.DEPLOY }} ${{ needs.setup.outputs.n }}");
        let script = solstice_workflow::interpolate(script, &job.contexts).expect("evaluates");
        assert_eq!(script, "echo omnios 42 hunter2 7");
        assert!(job.contexts["secrets"]["DEPLOY"] == "hunter2");
        assert!(job.secrets.iter().any(|s| s.expose() == "hunter2") && job.secrets.iter().any(|s| s.expose() == "t0k3n"));
        assert_eq!(job.contexts["github"]["job"], "build", "GITHUB_JOB is the job's id");
        assert_eq!(job.env.get("FORGEJO_ACTIONS").map(String::as_str), Some("true"));
        assert!(matches!(&job.checkout, Some(CheckoutSource::Git { url, rev, .. }) if url == "https://forge.example/o/r.git" && rev == "abc123"));
        assert_eq!(outputs.get("v"), Some(&json!("${{ steps.x.outputs.v }}")));
    }

    #[test]
    fn a_malformed_step_fails_with_the_position_and_the_payload() {
        let payload = "on: push\njobs:\n  build:\n    runs-on: host\n    steps:\n      - run: echo hi\n      - uses: actions/checkout@v4\n        with:\n          fetch-depth: many\n";
        let Translation::Fail { steps, lines } = translate(&task(payload), "forgejo:r") else { panic!("should fail") };
        assert_eq!(steps, 2);
        assert!(lines.iter().any(|l| l.contains("ci.yml") && l.contains("Line: 7") && l.contains("fetch-depth")), "{lines:#?}");
        assert!(lines.iter().any(|l| l == "   9 |           fetch-depth: many"), "{lines:#?}");
    }

    #[test]
    fn an_action_the_runner_cannot_run_is_a_step_that_fails_only_if_it_runs() {
        let payload = "on: push\njobs:\n  build:\n    runs-on: host\n    steps:\n      - run: echo hi\n      - uses: actions/setup-node@v4\n        if: failure()\n";
        let Translation::Run { job, .. } = translate(&task(payload), "forgejo:r") else { panic!("runnable") };
        let StepAction::UnsupportedAction { uses, message, .. } = &job.steps[1].action else { panic!("an action step") };
        assert_eq!(uses, "actions/setup-node@v4");
        assert!(message.contains("setup-node"), "{message}");
        assert_eq!(job.steps[1].condition.as_deref(), Some("failure()"));
    }

    /// Forgejo's own spelling of checkout and its `forge` context (an alias of `github`),
    /// <https://forgejo.org/docs/latest/user/actions/reference/>; Gitea's runner calls it `gitea`.
    #[test]
    fn the_forgejo_dialect_reads_full_url_actions_and_the_forge_context() {
        let payload = "on: push\njobs:\n  build:\n    runs-on: host\n    if: forge.event_name == 'push'\n    steps:\n      - uses: https://data.forgejo.org/actions/checkout@v4\n      - run: echo ${{ forge.repository }} ${{ gitea.sha }}\n";
        let Translation::Run { job, .. } = translate(&task(payload), "forgejo:r") else { panic!("runnable") };
        assert!(matches!(&job.steps[0].action, StepAction::Checkout(_)), "{:?}", job.steps[0].action);
        let StepAction::Run { script, .. } = &job.steps[1].action else { panic!("run step") };
        let script = solstice_workflow::interpolate(script, &job.contexts).expect("evaluates");
        assert_eq!(script, "echo o/r abc123");
        assert_eq!(job.contexts["forge"]["repository"], "o/r");
    }

    #[test]
    fn a_false_job_condition_skips_the_task() {
        let payload = "on: push\njobs:\n  build:\n    runs-on: host\n    if: needs.setup.result == 'failure'\n    steps:\n      - run: echo hi\n";
        let mut task = task(payload);
        task.needs.insert("setup".into(), pb::TaskNeed { result: pb::Result::Success as i32, ..Default::default() });
        assert!(matches!(translate(&task, "forgejo:r"), Translation::Skip { steps: 1, .. }));
    }

    #[test]
    fn a_job_that_opts_in_to_debug_ssh_names_the_user_whose_keys_it_needs() {
        let payload = "on: push\njobs:\n  build:\n    runs-on: host\n    env:\n      SOLSTICE_DEBUG_SSH: true\n    steps:\n      - run: make\n";
        let Translation::Run { job, debug_user, .. } = translate(&task(payload), "forgejo:r") else { panic!("not runnable") };
        assert!(job.debug_ssh);
        assert_eq!(debug_user.as_deref(), Some("alice"));
        assert!(job.debug_keys.is_empty(), "the source fetches the keys");
    }

    #[test]
    fn garbage_is_a_failure_not_a_panic() {
        let mut t = task("jobs: [");
        assert!(matches!(translate(&t, "s"), Translation::Fail { steps: 0, .. }));
        t.workflow_payload = Some(vec![0xff, 0xfe]);
        assert!(matches!(translate(&t, "s"), Translation::Fail { .. }));
    }
}
