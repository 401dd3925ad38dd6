//! The expression contexts and the environment of a step, built in one place for every
//! path (host, VM, both forges, `solstice run`), when the step runs.
//!
//! GitHub's runner evaluates a job's `env:` when the job starts and each step's `env:`,
//! `working-directory`, `run:` and `if:` when the step starts, with the contexts of that
//! moment (`runner.*` and `github.workspace` are only known once there is a machine).
//! The environment a step's process gets is layered, later wins:
//!
//! 1. what the machine brings ([`Machine::env`], an egress proxy), `CI`, `GITHUB_ACTIONS`;
//! 2. workflow and job `env:` (evaluated once, when the job starts);
//! 3. what earlier steps wrote to `$GITHUB_ENV`;
//! 4. the step's own `env:`;
//! 5. the defaults a job cannot change: `GITHUB_*` from the `github` context,
//!    `GITHUB_WORKSPACE`, the `RUNNER_*` variables. GitHub documents "You can't overwrite
//!    the value of the default environment variables named `GITHUB_*` and `RUNNER_*`"
//!    (docs: "Store information in variables", default environment variables).
//!
//! Only layers 2–4 are the `env` context: GitHub's `env` context "does not contain
//! variables inherited by the runner process".

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::condition::{JobStatus, interpolate};
use crate::{JobRequest, Machine};

/// The `github` context keys the runner exports as `GITHUB_<KEY>` to every step, as
/// GitHub's runner does for its `github` context (`GitHubContext` in actions/runner).
/// `workspace` is the machine's and is set apart.
const GITHUB_ENV_KEYS: &[&str] = &[
    "action", "action_path", "action_ref", "action_repository", "actor", "actor_id", "api_url", "base_ref",
    "event_name", "graphql_url", "head_ref", "job", "ref", "ref_name", "ref_protected", "ref_type", "repository",
    "repository_id", "repository_owner", "repository_owner_id", "retention_days", "run_attempt", "run_id",
    "run_number", "server_url", "sha", "triggering_actor", "workflow", "workflow_ref", "workflow_sha",
];

/// Contexts every expression may name on GitHub, even when nothing fills them (a push
/// has no `inputs`, a job without `needs` has an empty `needs`).
const ALWAYS_PRESENT: &[&str] = &["github", "vars", "secrets", "inputs", "needs", "matrix", "strategy"];

/// Forgejo documents `forge` as another name of `github`, and Gitea names it `gitea`.
const GITHUB_ALIASES: &[&str] = &["forge", "gitea"];

/// Where the job's event payload is in the machine, as GitHub's runner puts it
/// (`<runner.temp>/_github_workflow/event.json`, actions/runner `JobExtension.cs`);
/// `None` for a machine without a temporary directory.
pub(crate) fn event_path(machine: &Machine) -> Option<String> {
    let temp = machine.runner.temp.trim_end_matches('/');
    (!temp.is_empty()).then(|| format!("{temp}/_github_workflow/event.json"))
}

/// The event payload as the file at [`event_path`] holds it: `github.event`, or `{}`.
pub(crate) fn event_payload(job: &JobRequest) -> String {
    let event = job.contexts.get("github").and_then(|github| github.get("event")).filter(|e| !e.is_null());
    event.map_or_else(|| "{}".to_owned(), Value::to_string)
}

/// A job's `env:` (workflow then job, already merged by the translator), evaluated when
/// the job starts against the job's contexts.
///
/// GitHub's runner evaluates workflow env then job env with the `env` context growing as
/// it goes, so a job value may read a workflow value (`${{ env.GREETING }}`). The order
/// is not kept here; plain values are known first, then expressions are evaluated in
/// name order, each seeing the plain values and those evaluated before it.
///
/// # Errors
/// The first variable whose expression fails, with the reason; GitHub's runner fails
/// the job then.
pub(crate) fn job_env(job: &JobRequest, contexts: &mut JobContexts) -> Result<BTreeMap<String, String>, String> {
    let mut env: BTreeMap<String, String> =
        job.env.iter().filter(|(_, value)| !value.contains("${{")).map(|(k, v)| (k.clone(), v.clone())).collect();
    for (name, value) in job.env.iter().filter(|(_, value)| value.contains("${{")) {
        let now = contexts.at(&env, JobStatus::Success);
        let value = interpolate(value, now).map_err(|e| format!("The job's env `{name}` could not be evaluated: {e}"))?;
        env.insert(name.clone(), value);
    }
    Ok(env)
}

/// The `GITHUB_*` variables of a `github` context ([`GITHUB_ENV_KEYS`]); strings,
/// numbers and booleans only, as text.
pub(crate) fn github_env(github: Option<&Value>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let Some(github) = github.and_then(Value::as_object) else { return env };
    for key in GITHUB_ENV_KEYS {
        let value = match github.get(*key) {
            Some(Value::String(s)) if *key == "server_url" || key.ends_with("api_url") => s.trim_end_matches('/').to_owned(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => b.to_string(),
            _ => continue,
        };
        env.insert(format!("GITHUB_{}", key.to_ascii_uppercase()), value);
    }
    env
}

/// The environment of a step's process: the layers of the module docs, with `env`
/// (layers 2–4, the `env` context) in the middle.
pub(crate) fn process_env(job: &JobRequest, machine: &Machine, env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut process = machine.env.clone();
    process.insert("CI".to_owned(), "true".to_owned());
    process.insert("GITHUB_ACTIONS".to_owned(), "true".to_owned());
    process.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
    process.extend(github_env(job.contexts.get("github")));
    process.insert("GITHUB_WORKSPACE".to_owned(), machine.workspace.clone());
    if let Some(path) = event_path(machine) {
        process.insert("GITHUB_EVENT_PATH".to_owned(), path);
    }
    process.extend(machine.runner.env());
    process.insert("SOLSTICE_JOB_ID".to_owned(), job.id.to_string());
    process.insert("SOLSTICE_MACHINE".to_owned(), machine.id.clone());
    process
}

/// The contexts an expression of one job sees, kept for the whole job: what the job
/// brought (`github`, `matrix`, `strategy`, `needs`, `vars`, `secrets`, `inputs`),
/// completed once with what only the running engine knows (`github.workspace`,
/// `runner`), and the parts that change as the job goes (`steps`, `env`, `job`) updated
/// in place. A push event can be tens of kilobytes: it is never copied per step.
#[derive(Debug)]
pub(crate) struct JobContexts {
    map: Map<String, Value>,
}

impl JobContexts {
    pub(crate) fn new(job: &JobRequest, machine: &Machine) -> Self {
        let mut map = job.contexts.clone();
        for name in ALWAYS_PRESENT {
            if !map.get(*name).is_some_and(Value::is_object) {
                map.insert((*name).to_owned(), Value::Object(Map::new()));
            }
        }
        if let Some(Value::Object(github)) = map.get_mut("github") {
            github.insert("workspace".into(), Value::String(machine.workspace.clone()));
            if let Some(path) = event_path(machine) {
                github.insert("event_path".into(), Value::String(path));
            }
        }
        for alias in GITHUB_ALIASES {
            if !map.contains_key(*alias) {
                let github = map.get("github").cloned().unwrap_or_else(|| json!({}));
                map.insert((*alias).to_owned(), github);
            }
        }
        // The machine is the only one that knows what it is: whatever a job brought is replaced.
        let runner = &machine.runner;
        map.insert(
            "runner".into(),
            json!({
                "os": runner.os, "arch": runner.arch, "name": runner.name, "temp": runner.temp,
                "tool_cache": runner.tool_cache, "workspace": machine.workspace, "environment": "self-hosted",
            }),
        );
        map.insert("steps".into(), Value::Object(Map::new()));
        let mut contexts = Self { map };
        contexts.at(&BTreeMap::new(), JobStatus::Success);
        contexts
    }

    /// The `steps` context, for recording a finished step.
    pub(crate) fn steps_mut(&mut self) -> &mut Map<String, Value> {
        let steps = self.map.entry("steps").or_insert_with(|| Value::Object(Map::new()));
        if !steps.is_object() {
            *steps = Value::Object(Map::new());
        }
        match steps {
            Value::Object(steps) => steps,
            _ => unreachable!("made an object just above"),
        }
    }

    /// The contexts with `env` (the `env` context: layers 2–4) and the job's status as
    /// they are now.
    pub(crate) fn at(&mut self, env: &BTreeMap<String, String>, status: JobStatus) -> &Map<String, Value> {
        self.map.insert("env".into(), json!(env));
        let status = match status {
            JobStatus::Success => "success",
            JobStatus::Failure => "failure",
            JobStatus::Cancelled => "cancelled",
        };
        self.map.insert("job".into(), json!({ "status": status }));
        &self.map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MachineAccess, RunnerInfo};

    fn machine() -> Machine {
        Machine {
            id: "m-1".into(),
            label: "omnios".into(),
            workspace: "/work/ws".into(),
            access: MachineAccess::Local,
            runner: RunnerInfo {
                os: "SunOS".into(),
                arch: "X64".into(),
                name: "m-1".into(),
                temp: "/work/tmp".into(),
                tool_cache: "/work/tools".into(),
            },
            env: [("http_proxy".to_owned(), "http://10.0.2.100:3128".to_owned())].into(),
        }
    }

    #[test]
    fn defaults_named_github_and_runner_win_over_the_job_and_ci_does_not() {
        let mut job = JobRequest::new("j", vec!["host".into()], vec![]);
        job.contexts.insert("github".into(), json!({ "sha": "abc", "run_number": 7, "server_url": "https://code.example/" }));
        let env: BTreeMap<String, String> = [("GITHUB_SHA", "mine"), ("RUNNER_OS", "Plan9"), ("CI", "false"), ("http_proxy", "")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let process = process_env(&job, &machine(), &env);
        assert_eq!(process["GITHUB_SHA"], "abc");
        assert_eq!(process["GITHUB_RUN_NUMBER"], "7");
        assert_eq!(process["GITHUB_SERVER_URL"], "https://code.example");
        assert_eq!(process["GITHUB_WORKSPACE"], "/work/ws");
        assert_eq!(process["GITHUB_EVENT_PATH"], "/work/tmp/_github_workflow/event.json");
        assert_eq!(process["RUNNER_OS"], "SunOS");
        // GitHub: "Currently you can overwrite the value of the CI variable".
        assert_eq!(process["CI"], "false");
        assert_eq!(process["http_proxy"], "", "the machine's own variables are the lowest layer");
    }

    #[test]
    fn every_context_is_there_and_forge_names_the_github_context() {
        let mut job = JobRequest::new("j", vec!["host".into()], vec![]);
        job.contexts.insert("github".into(), json!({ "sha": "abc", "workspace": "" }));
        let mut contexts = JobContexts::new(&job, &machine());
        let contexts = contexts.at(&BTreeMap::new(), JobStatus::Failure);
        assert_eq!(contexts["job"]["status"], "failure");
        assert_eq!(contexts["github"]["workspace"], "/work/ws");
        assert_eq!(contexts["forge"]["sha"], "abc");
        assert_eq!(contexts["gitea"]["workspace"], "/work/ws");
        for name in ["vars", "secrets", "inputs", "needs", "matrix", "strategy", "steps", "env", "job", "runner"] {
            assert!(contexts[name].is_object(), "{name}");
        }
        assert_eq!(contexts["runner"]["os"], "SunOS");
    }

    #[test]
    fn the_job_env_is_evaluated_with_the_machine_known() {
        let mut job = JobRequest::new("j", vec!["host".into()], vec![]);
        job.contexts.insert("github".into(), json!({ "sha": "abc" }));
        job.env.insert("BUILD".into(), "${{ github.workspace }}/build".into());
        job.env.insert("OS".into(), "${{ runner.os }}-${{ github.sha }}".into());
        job.env.insert("GREETING".into(), "hello".into());
        job.env.insert("ALSO".into(), "${{ env.GREETING }} world".into());
        let env = job_env(&job, &mut JobContexts::new(&job, &machine())).expect("evaluates");
        assert_eq!(env["BUILD"], "/work/ws/build");
        assert_eq!(env["OS"], "SunOS-abc");
        assert_eq!(env["ALSO"], "hello world", "job values may read workflow values");
        job.env.insert("BAD".into(), "${{ fromJSON('{') }}".into());
        let error = job_env(&job, &mut JobContexts::new(&job, &machine())).expect_err("a bad expression fails the job");
        assert!(error.contains("`BAD`"), "{error}");
    }
}
