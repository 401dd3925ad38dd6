//! Turning a GitHub job message into a [`JobRequest`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value, json};
use solstice_core::support::Masker;
use solstice_core::{CheckoutSource, CheckoutStep, JobId, JobOrigin, JobRequest, Secret, StepAction, StepCommand};

use crate::protocol::job::{JobMessage, Reference, StepMessage};
use crate::protocol::template::Token;

/// What a workflow step looks like at GitHub (its record).
#[derive(Debug, Clone)]
pub(crate) struct StepPlan {
    /// The step's record id (`steps[].id`).
    pub record_id: String,
    /// The step's ref name (`__run`, …).
    pub ref_name: String,
    /// The UI name.
    pub display_name: String,
    /// The key in the `steps` context.
    pub context_name: Option<String>,
    /// `run`, `repository` or `docker`, for `completejob`'s `stepResults`.
    pub kind: &'static str,
}

/// A translated job.
#[derive(Debug)]
pub(crate) struct Translation {
    pub request: JobRequest,
    pub steps: Vec<StepPlan>,
    /// A step the runner cannot execute, and why; the job is failed without running.
    pub unsupported: Option<(Option<usize>, String)>,
    /// `mask[]` regular expressions, applied to every line before it leaves.
    pub regex_masks: Vec<regex::Regex>,
    /// The contexts known at the start, for `jobOutputs` at the end.
    pub contexts: Map<String, Value>,
    /// The job's secrets, for what the runner reports itself (job outputs, its own lines).
    pub masker: Masker,
}

impl Translation {
    /// Where a job that opted in to debug SSH gets its keys: the forge's web address
    /// (`github.server_url`, `https://github.com` when missing) and the user who started
    /// the run (`github.actor`, `None` when GitHub named nobody). `None` for jobs that
    /// did not opt in.
    pub(crate) fn debug_user(&self) -> Option<(String, Option<String>)> {
        if !self.request.debug_ssh {
            return None;
        }
        let github = self.request.contexts.get("github");
        let field = |key: &str| github.and_then(|g| g.get(key)).and_then(Value::as_str).filter(|s| !s.is_empty());
        let server = field("server_url").unwrap_or("https://github.com").trim_end_matches('/').to_owned();
        Some((server, field("actor").map(str::to_owned)))
    }
}

/// Builds the [`JobRequest`] for a job message.
pub(crate) fn translate(msg: &JobMessage, source: &str, runs_on: &[String]) -> Translation {
    let mut contexts = msg.contexts.clone();
    let token = msg.variable("system.github.token").or_else(|| msg.variable("github_token")).unwrap_or("").to_owned();

    // secrets: every secret variable but the system ones, plus GITHUB_TOKEN.
    let mut secrets_ctx = Map::new();
    let mut secrets: Vec<Secret> = Vec::new();
    for (name, value, is_secret) in &msg.variables {
        if !is_secret || value.is_empty() {
            continue;
        }
        secrets.push(Secret::new(value.clone()));
        if !name.to_ascii_lowercase().starts_with("system.") {
            secrets_ctx.insert(name.clone(), Value::String(value.clone()));
        }
    }
    if !token.is_empty() {
        secrets_ctx.insert("GITHUB_TOKEN".to_owned(), Value::String(token.clone()));
        secrets.push(Secret::new(token.clone()));
    }
    secrets.push(msg.endpoint.token.clone());
    let mut regex_masks = Vec::new();
    for (is_regex, value) in &msg.masks {
        if *is_regex {
            if let Ok(re) = regex::Regex::new(value) {
                regex_masks.push(re);
            }
        } else {
            secrets.push(Secret::new(value.clone()));
        }
    }
    contexts.insert("secrets".to_owned(), Value::Object(secrets_ctx));
    let github = contexts.entry("github").or_insert_with(|| json!({}));
    if let Value::Object(github) = github {
        if !token.is_empty() {
            github.insert("token".to_owned(), Value::String(token.clone()));
        }
        if let Some(job) = msg.variable("system.github.job") {
            github.entry("job").or_insert_with(|| Value::String(job.to_owned()));
        }
    }
    for name in ["needs", "matrix", "strategy", "inputs", "vars"] {
        if contexts.get(name).is_none_or(Value::is_null) {
            contexts.insert(name.to_owned(), json!({}));
        }
    }
    // No `runner` context here: only the machine the job gets knows its OS, architecture
    // and directories. The engine adds it when the job runs, and values that read it are
    // left to the engine (`deferred`).

    let mut problems: Option<(Option<usize>, String)> = None;
    let mut note = |index: Option<usize>, why: String| {
        if problems.is_none() {
            problems = Some((index, why));
        }
    };
    if msg.job_container.as_ref().is_some_and(|c| !matches!(c, Token::Null) && *c != Token::String(String::new())) {
        note(None, "This runner does not support job containers (`container:`); the job runs in a virtual machine.".into());
    }

    // Job env: workflow env, then job env. The values go to the engine as templates: it
    // evaluates them when the job starts, with the machine known (`github.workspace`),
    // as GitHub's runner does. Here they are evaluated as far as they can be only for the
    // `env` context of what is decided before the job runs (display names, defaults).
    let mut env = BTreeMap::new();
    let mut env_ctx: Map<String, Value> = Map::new();
    for mapping in &msg.environment {
        if let Token::Mapping(pairs) = mapping {
            for (k, v) in pairs {
                let mut ctx = contexts.clone();
                ctx.insert("env".to_owned(), Value::Object(env_ctx.clone()));
                match k.evaluate_string(&ctx) {
                    Ok(k) => {
                        if let Ok(value) = v.evaluate_string(&ctx) {
                            env_ctx.insert(k.clone(), Value::String(value));
                        }
                        env.insert(k, v.template_text());
                    }
                    Err(e) => note(None, format!("The job's env could not be evaluated: {e}")),
                }
            }
        }
    }
    let (default_shell, default_dir) = run_defaults(&msg.defaults, &contexts);

    let mut steps = Vec::new();
    let mut plans = Vec::new();
    for (index, step) in msg.steps.iter().enumerate() {
        let mut ctx = contexts.clone();
        ctx.insert("env".to_owned(), Value::Object(env_ctx.clone()));
        match translate_step(step, &ctx, &default_shell, &default_dir, msg) {
            Ok((command, plan)) => {
                steps.push(command);
                plans.push(plan);
            }
            Err(failed) => {
                let (plan, why) = *failed;
                note(Some(index), why);
                steps.push(StepCommand::run(plan.display_name.clone(), "exit 1"));
                plans.push(plan);
            }
        }
    }

    let repository = contexts.get("github").and_then(|g| g.get("repository")).and_then(Value::as_str).map(str::to_owned);
    let checkout = repository.as_ref().map(|repo| {
        let server = contexts
            .get("github")
            .and_then(|g| g.get("server_url"))
            .and_then(Value::as_str)
            .unwrap_or("https://github.com")
            .trim_end_matches('/')
            .to_owned();
        let sha = contexts.get("github").and_then(|g| g.get("sha")).and_then(Value::as_str).unwrap_or("HEAD");
        CheckoutSource::Git {
            url: format!("{server}/{repo}"),
            rev: sha.to_owned(),
            token: (!token.is_empty()).then(|| Secret::new(token.clone())),
        }
    });

    let name = if msg.job_display_name.is_empty() { msg.job_name.clone() } else { msg.job_display_name.clone() };
    let mut request = JobRequest::new(name, runs_on.to_vec(), steps);
    request.id = JobId::from_external(source, &msg.job_id);
    request.origin = JobOrigin { source: source.to_owned(), external_id: msg.job_id.clone(), repository };
    // The opt-in is read from the job's env as evaluated above (workflow env, then job
    // env), the same way the planner reads it for Forgejo and KDL jobs.
    // The opt-in is read from the value evaluated here (the job's env is evaluated again
    // when the job starts, but whether to keep a machine must be known before).
    request.debug_ssh = env_ctx
        .get(solstice_workflow::DEBUG_SSH_ENV)
        .and_then(Value::as_str)
        .is_some_and(solstice_workflow::debug_ssh_requested);
    // Display names are evaluated with the `secrets` context and shown in the timeline;
    // GitHub's runner masks them like log lines (issue 16 item 5), and so the reasons a
    // step cannot run, which may quote an evaluated value.
    let masker = Masker::new(secrets.iter().map(Secret::expose));
    for plan in &mut plans {
        plan.display_name = masker.mask(&plan.display_name);
    }
    for step in &mut request.steps {
        step.name = masker.mask(&step.name);
    }
    let problems = problems.map(|(index, why)| (index, masker.mask(&why)));
    request.env = env;
    request.secrets = secrets;
    request.checkout = checkout;
    request.contexts = contexts.clone();
    Translation { request, steps: plans, unsupported: problems, regex_masks, contexts, masker }
}

type StepError = Box<(StepPlan, String)>;

fn translate_step(
    step: &StepMessage,
    ctx: &Map<String, Value>,
    default_shell: &Option<String>,
    default_dir: &Option<String>,
    msg: &JobMessage,
) -> Result<(StepCommand, StepPlan), StepError> {
    let display = |fallback: String| -> String {
        step.display_name
            .as_ref()
            .and_then(|t| t.evaluate_string(ctx).ok())
            .filter(|n| !n.trim().is_empty())
            .unwrap_or(fallback)
    };
    let mut plan = StepPlan {
        record_id: step.id.clone(),
        ref_name: step.name.clone(),
        display_name: String::new(),
        context_name: step.context_name.clone(),
        kind: "run",
    };
    let action = match &step.reference {
        Reference::Script => {
            let script = step.inputs.get("script").map(Token::template_text).unwrap_or_default();
            let first = script.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").to_owned();
            plan.display_name = display(format!("Run {first}"));
            let shell = match step.inputs.get("shell") {
                Some(t) => Some(t.evaluate_string(ctx).map_err(|e| Box::new((plan.clone(), format!("The step's shell could not be evaluated: {e}"))))?),
                None => default_shell.clone(),
            };
            let shell = resolve_shell(shell.as_deref().filter(|s| !s.trim().is_empty()))
                .map_err(|why| Box::new((plan.clone(), why)))?;
            StepAction::Run { script, shell }
        }
        Reference::Repository { name, git_ref, path, kind } => {
            let label = if path.is_empty() || kind.eq_ignore_ascii_case("self") {
                if name.is_empty() { path.clone() } else { format!("{name}@{git_ref}") }
            } else {
                format!("{name}/{path}@{git_ref}")
            };
            plan.display_name = display(format!("Run {label}"));
            plan.kind = "repository";
            if !name.eq_ignore_ascii_case("actions/checkout") || !path.is_empty() {
                return Err(Box::new((plan, format!("This runner only runs `run:` steps and `actions/checkout`; `uses: {label}` is not supported."))));
            }
            let input = |key: &str| step.inputs.get(key).and_then(|t| t.evaluate_string(ctx).ok()).filter(|s| !s.is_empty());
            StepAction::Checkout(CheckoutStep {
                path: input("path").unwrap_or_default(),
                git_ref: input("ref"),
                fetch_depth: input("fetch-depth").and_then(|d| d.parse().ok()).unwrap_or(1),
                submodules: input("submodules").filter(|s| s != "false"),
            })
        }
        Reference::Container { image } => {
            plan.display_name = display(format!("Run {image}"));
            plan.kind = "docker";
            return Err(Box::new((plan, format!("This runner does not run container actions (`uses: docker://{image}`)."))));
        }
        Reference::Other(kind) => {
            plan.display_name = display(format!("Run {}", step.name));
            return Err(Box::new((plan, format!("This runner does not support steps of type `{kind}`."))));
        }
    };
    let mut env = BTreeMap::new();
    if let Some(Token::Mapping(pairs)) = &step.environment {
        let mut ctx = ctx.clone();
        for (k, v) in pairs {
            let v = deferred(v).map_or_else(|| v.evaluate_string(&ctx), Ok);
            let (k, v) = match (k.evaluate_string(&ctx), v) {
                (Ok(k), Ok(v)) => (k, v),
                (Err(e), _) | (_, Err(e)) => return Err(Box::new((plan, format!("The step's env could not be evaluated: {e}")))),
            };
            if let Some(Value::Object(env_ctx)) = ctx.get_mut("env") {
                env_ctx.insert(k.clone(), Value::String(v.clone()));
            }
            env.insert(k, v);
        }
    }
    let working_directory = match step.inputs.get("workingDirectory") {
        Some(t) => Some(match deferred(t) {
            Some(text) => text,
            None => t.evaluate_string(ctx).map_err(|e| Box::new((plan.clone(), format!("The step's working directory could not be evaluated: {e}"))))?,
        }),
        None => default_dir.clone(),
    }
    .filter(|d| !d.is_empty());
    let continue_on_error = match &step.continue_on_error {
        Some(t) => truthy(&t.evaluate(ctx).map_err(|e| Box::new((plan.clone(), format!("continue-on-error could not be evaluated: {e}"))))?),
        None => false,
    };
    let timeout = match &step.timeout_minutes {
        Some(t) => {
            let v = t.evaluate(ctx).map_err(|e| Box::new((plan.clone(), format!("timeout-minutes could not be evaluated: {e}"))))?;
            let minutes = v.as_f64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()));
            minutes.filter(|m| *m > 0.0).and_then(|m| Duration::try_from_secs_f64(m * 60.0).ok())
        }
        None => None,
    };
    let _ = msg;
    let command = StepCommand {
        id: step.context_name.clone(),
        name: plan.display_name.clone(),
        action,
        env,
        working_directory,
        condition: step.condition.clone(),
        continue_on_error,
        timeout,
    };
    Ok((command, plan))
}

/// The text for the engine, `${{ expr }}`, of a value whose expression reads the `runner`
/// context: only the machine knows it, so the engine evaluates it when the step runs.
/// `None` for every other value, which is evaluated here.
fn deferred(token: &Token) -> Option<String> {
    let Token::Expression(text) = token else { return None };
    let expression = solstice_workflow::Expression::parse(text).ok()?;
    expression.referenced_contexts().iter().any(|c| c == "runner").then(|| token.template_text())
}

/// The shell command line for a `shell:` value, as the official runner resolves it on
/// Linux and the other Unixes.
pub(crate) fn resolve_shell(shell: Option<&str>) -> Result<String, String> {
    Ok(match shell.map(str::trim) {
        None => "bash -e {0}".to_owned(),
        Some("bash") => "bash --noprofile --norc -e -o pipefail {0}".to_owned(),
        Some("sh") => "sh -e {0}".to_owned(),
        Some("python") => "python {0}".to_owned(),
        Some("pwsh") => "pwsh -command \". '{0}'\"".to_owned(),
        Some("powershell") => "powershell -command \". '{0}'\"".to_owned(),
        Some(custom) if custom.contains("{0}") => custom.to_owned(),
        Some(other) => return Err(format!("The shell `{other}` is not supported here (a custom shell must contain `{{0}}`).")),
    })
}

/// `defaults.run.shell` and `defaults.run.working-directory`, later entries winning.
fn run_defaults(defaults: &[Token], ctx: &Map<String, Value>) -> (Option<String>, Option<String>) {
    let mut shell = None;
    let mut dir = None;
    for d in defaults {
        if let Some(run) = d.get("run") {
            if let Some(s) = run.get("shell").and_then(|t| t.evaluate_string(ctx).ok()) {
                shell = Some(s);
            }
            if let Some(w) = run.get("working-directory").and_then(|t| t.evaluate_string(ctx).ok()) {
                dir = Some(w);
            }
        }
    }
    (shell, dir)
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty() && !s.eq_ignore_ascii_case("false"),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> JobMessage {
        let value = json!({
            "messageType": "PipelineAgentJobRequest",
            "plan": {"scopeIdentifier": "s", "planType": "actions", "planId": "p", "version": 12},
            "timeline": {"id": "t"},
            "jobId": "b0000000-0000-0000-0000-000000000002", "jobDisplayName": "build", "jobName": "build", "requestId": 7,
            "resources": {"endpoints": [{"name": "SystemVssConnection", "url": "http://h/tenant/",
                "authorization": {"scheme": "OAuth", "parameters": {"AccessToken": "job-token-1"}}}]},
            "contextData": {"github": {"t": 2, "d": [{"k": "repository", "v": "octo/demo"}, {"k": "sha", "v": "0123abcd"},
                                                    {"k": "server_url", "v": "http://h"}]},
                            "matrix": null},
            "variables": {"system.github.token": {"value": "ghs_fake", "isSecret": true},
                          "MY_SECRET": {"value": "hunter2", "isSecret": true}, "system.github.job": {"value": "build"}},
            "mask": [{"type": "regex", "value": "fake-secret-[0-9]+"}, {"type": "variable", "value": "plain-mask"}],
            "environmentVariables": [{"type": 2, "map": [{"Key": "GREETING", "Value": "hello"},
                                                         {"Key": "BOTH", "Value": {"type": 3, "expr": "format('{0} world', env.GREETING)"}}]}],
            "defaults": [{"type": 2, "map": [{"Key": "run", "Value": {"type": 2, "map": [{"Key": "shell", "Value": "sh"}]}}]}],
            "steps": [
                {"type": "action", "id": "c1", "name": "__run", "contextName": "first", "reference": {"type": "script"},
                 "inputs": {"type": 2, "map": [{"Key": "script", "Value": "echo $GREETING\n"}]}},
                {"type": 4, "id": "c2", "name": "__actions_checkout", "reference": {"type": 1, "name": "actions/checkout", "ref": "v4"},
                 "inputs": {"type": 2, "map": [{"Key": "fetch-depth", "Value": {"type": 6, "num": 0}}]}},
                {"type": "action", "id": "c3", "name": "__run_2", "displayNameToken": "Print sha", "reference": {"type": "Script"},
                 "condition": "success() && github.sha != ''", "continueOnError": {"type": 5, "bool": true},
                 "timeoutInMinutes": {"type": 6, "num": 2},
                 "environment": {"type": 2, "map": [{"Key": "S", "Value": {"type": 3, "expr": "secrets.MY_SECRET"}}]},
                 "inputs": {"type": 2, "map": [{"Key": "script", "Value": {"type": 3, "expr": "format('echo {0}', github.sha)"}},
                                                {"Key": "shell", "Value": "bash"}]}}
            ]
        });
        JobMessage::parse(&value).expect("parse")
    }

    #[test]
    fn values_that_read_the_runner_context_are_left_for_the_engine() {
        let step = |value: Value| Token::parse(&value);
        assert_eq!(deferred(&step(json!({"type": 3, "expr": "format('{0}-x', runner.os)"}))).as_deref(), Some("${{ format('{0}-x', runner.os) }}"));
        assert_eq!(deferred(&step(json!({"type": 3, "expr": "github.sha"}))), None);
        assert_eq!(deferred(&step(json!("runner.os"))), None, "a literal is only text");
        let t = translate(&message(), "github:r", &["host".into()]);
        assert!(!t.request.contexts.contains_key("runner"), "only the machine knows it");
    }

    #[test]
    fn a_job_message_becomes_a_job_request() {
        let t = translate(&message(), "github:r", &["self-hosted".into(), "host".into()]);
        assert!(t.unsupported.is_none(), "{:?}", t.unsupported);
        let job = &t.request;
        assert_eq!(job.id, JobId::from_external("github:r", "b0000000-0000-0000-0000-000000000002"));
        assert_eq!(job.route_label(), "host");
        // Evaluated when the job starts (the engine's `job_env`), reading GREETING.
        assert_eq!(job.env.get("BOTH").map(String::as_str), Some("${{ format('{0} world', env.GREETING) }}"));
        assert_eq!(job.contexts["github"]["sha"], "0123abcd", "the engine makes GITHUB_SHA of it");
        assert_eq!(job.steps[0].name, "Run echo $GREETING");
        assert_eq!(job.steps[0].action, StepAction::Run { script: "echo $GREETING\n".into(), shell: "sh -e {0}".into() });
        assert!(matches!(&job.steps[1].action, StepAction::Checkout(c) if c.fetch_depth == 0));
        let step = &job.steps[2];
        assert_eq!(step.name, "Print sha");
        assert_eq!(
            step.action,
            StepAction::Run { script: "${{ format('echo {0}', github.sha) }}".into(), shell: "bash --noprofile --norc -e -o pipefail {0}".into() }
        );
        assert_eq!(step.env.get("S").map(String::as_str), Some("hunter2"));
        assert!(step.continue_on_error);
        assert_eq!(step.timeout, Some(Duration::from_secs(120)));
        assert_eq!(step.condition.as_deref(), Some("success() && github.sha != ''"));
        let secrets: Vec<&str> = job.secrets.iter().map(Secret::expose).collect();
        for s in ["ghs_fake", "hunter2", "job-token-1", "plain-mask"] {
            assert!(secrets.contains(&s), "{s} is masked");
        }
        assert_eq!(t.regex_masks.len(), 1);
        assert!(matches!(&job.checkout, Some(CheckoutSource::Git { url, rev, token: Some(_) }) if url == "http://h/octo/demo" && rev == "0123abcd"));
        // The engine evaluates the deferred expression with the job's contexts.
        let script = solstice_workflow::interpolate("${{ format('echo {0}', github.sha) }}", &job.contexts).expect("eval");
        assert_eq!(script, "echo 0123abcd");
    }

    #[test]
    fn the_debug_ssh_opt_in_is_read_from_the_evaluated_job_env() {
        let t = translate(&message(), "github:r", &[]);
        assert!(!t.request.debug_ssh, "off unless asked for");
        assert_eq!(t.debug_user(), None);
        assert!(t.request.debug_keys.is_empty());

        for (value, on) in [
            (json!("true"), true),
            (json!("TRUE"), true),
            (json!("1"), true),
            (json!({"type": 3, "expr": "format('{0}', env.GREETING == 'hello')"}), true),
            (json!("false"), false),
            (json!("yes"), false),
            (json!({"type": 3, "expr": "env.GREETING"}), false),
        ] {
            let mut msg = message();
            msg.environment.push(Token::parse(&json!({"type": 2, "map": [{"Key": "SOLSTICE_DEBUG_SSH", "Value": value}]})));
            let t = translate(&msg, "github:r", &[]);
            assert_eq!(t.request.debug_ssh, on, "{:?}", t.request.env.get("SOLSTICE_DEBUG_SSH"));
        }
    }

    #[test]
    fn an_opted_in_job_names_the_forge_and_the_user_whose_keys_it_gets() {
        let mut msg = message();
        msg.environment.push(Token::parse(&json!({"type": 2, "map": [{"Key": "SOLSTICE_DEBUG_SSH", "Value": "true"}]})));
        let t = translate(&msg, "github:r", &[]);
        assert_eq!(t.debug_user(), Some(("http://h".to_owned(), None)), "no actor in the message");
        if let Some(Value::Object(github)) = msg.contexts.get_mut("github") {
            github.insert("actor".into(), json!("octocat"));
            github.insert("server_url".into(), json!("https://ghe.example/"));
        }
        let t = translate(&msg, "github:r", &[]);
        assert_eq!(t.debug_user(), Some(("https://ghe.example".to_owned(), Some("octocat".to_owned()))));
    }

    #[test]
    fn actions_other_than_checkout_make_the_job_unsupported() {
        let mut msg = message();
        msg.steps[1].reference = Reference::Repository { name: "actions/cache".into(), git_ref: "v4".into(), path: String::new(), kind: "GitHub".into() };
        let t = translate(&msg, "github:r", &[]);
        let (index, why) = t.unsupported.expect("unsupported");
        assert_eq!(index, Some(1));
        assert!(why.contains("actions/cache@v4"), "{why}");
    }

    #[test]
    fn shells_resolve_like_the_official_runner() {
        assert_eq!(resolve_shell(None).as_deref(), Ok("bash -e {0}"));
        assert_eq!(resolve_shell(Some("perl {0}")).as_deref(), Ok("perl {0}"));
        assert!(resolve_shell(Some("cmd")).expect_err("cmd is not a unix shell").contains("cmd"));
    }
}
