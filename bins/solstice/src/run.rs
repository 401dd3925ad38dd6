//! `solstice run`: a workflow's jobs, in `needs` order, on the in-process engine.

mod dotenv;
mod github;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use serde_json::{Map, Value};
use solstice_core::{
    CheckoutSource, Engine, JobOrigin, JobQueue, MemoryQueue, Secret, WorkflowEvent, WorkflowRun, job_request_from_plan,
};
use solstice_workflow::{
    PlanOptions, RunInputs, WorkflowFormat, WorkflowPlan, has_trigger, parse_kdl_workflow, parse_workflow, plan_any, run_inputs,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::printer::Printer;
use crate::read_workflow;
use solstice_service::ProgramError;
use crate::output::outln;

/// The flags follow nektos/act where it has the same thing (`-s`, `--secret-file`,
/// `--var`, `--input`, `-e/--eventpath`, `--actor`, `-j`, `--matrix`).
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The workflow file to run.
    workflow: PathBuf,
    /// Run every job on this host, whatever its `runs-on` (no virtual machine).
    #[arg(long)]
    host: bool,
    /// An image catalog (TOML) for the `runs-on` labels of virtual machines. The
    /// `tiny-linux` label (a small Linux guest built from this host's packages) needs none.
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Run only the job with this id (all its matrix combinations) and the jobs it needs.
    #[arg(short = 'j', long)]
    job: Option<String>,
    /// Run only the matrix combinations with this value (`KEY:VALUE`; repeat to allow
    /// more values or keys).
    #[arg(long = "matrix", value_name = "KEY:VALUE")]
    matrix: Vec<String>,
    /// A secret, `NAME=VALUE`, or `NAME` to take the value of the environment variable
    /// NAME. Secrets are masked as *** in the output.
    #[arg(short = 's', long = "secret", value_name = "NAME[=VALUE]")]
    secrets: Vec<String>,
    /// A file of secrets in .env format (`NAME=VALUE` lines). --secret wins over it.
    #[arg(long = "secrets-file", alias = "secret-file", value_name = "FILE")]
    secrets_file: Option<PathBuf>,
    /// A configuration variable for the `vars` context, `NAME=VALUE`.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// An input for the `inputs` context (`workflow_dispatch`), `NAME=VALUE`.
    #[arg(long = "input", value_name = "NAME=VALUE")]
    inputs: Vec<String>,
    /// The name of the event that triggers the run (`github.event_name`). Default: push.
    #[arg(long)]
    event: Option<String>,
    /// A JSON file with the event's payload (`github.event`). Default: `{}`.
    #[arg(short = 'e', long)]
    eventpath: Option<PathBuf>,
    /// The user who triggered the run (`github.actor`). Default: `git config user.name`,
    /// else $USER.
    #[arg(long)]
    actor: Option<String>,
    /// The directory checked out by `actions/checkout` (default: the git repository
    /// around the workflow file, else the current directory).
    #[arg(long)]
    repo: Option<PathBuf>,
    /// Run as Forgejo's runner does where it differs from GitHub's: the jobs get
    /// `FORGEJO_ACTIONS` and `GITEA_ACTIONS`, and `github.server_url` and `github.api_url`
    /// are a Forgejo instance's (its API under `/api/v1`).
    #[arg(long)]
    forgejo: bool,
}

/// The variables Forgejo's runner gives every job (forgejo/runner `internal/app/run`,
/// `NewRunner`: `GITEA_ACTIONS`, `FORGEJO_ACTIONS` and the runner's version under both names).
const FORGEJO_RUNNER_ENV: [(&str, &str); 4] = [
    ("GITEA_ACTIONS", "true"),
    ("GITEA_ACTIONS_RUNNER_VERSION", env!("CARGO_PKG_VERSION")),
    ("FORGEJO_ACTIONS", "true"),
    ("FORGEJO_ACTIONS_RUNNER_VERSION", env!("CARGO_PKG_VERSION")),
];

/// The repository a local run checks out: the workflow's git top level, or the cwd.
fn repository_dir(workflow: &Path) -> PathBuf {
    let start = workflow.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let start = std::fs::canonicalize(start).unwrap_or_else(|_| start.to_path_buf());
    start
        .ancestors()
        .find(|dir| dir.join(".git").exists())
        .map(Path::to_path_buf)
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or(start)
}

/// `NAME=VALUE` flags as pairs; `separator` is `=` or `:`.
fn pairs(flag: &str, values: &[String], separator: char) -> anyhow::Result<Vec<(String, String)>> {
    values
        .iter()
        .map(|v| {
            v.split_once(separator)
                .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| ProgramError::usage(anyhow::anyhow!("{flag} takes NAME{separator}VALUE, not `{v}`")).into())
        })
        .collect()
}

fn object(pairs: Vec<(String, String)>) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect::<Map<_, _>>())
}

/// The secrets of --secrets-file, then of --secret (later wins).
fn secrets(args: &RunArgs) -> anyhow::Result<Vec<(String, String)>> {
    let mut secrets = Vec::new();
    if let Some(file) = &args.secrets_file {
        let text = std::fs::read_to_string(file).with_context(|| format!("could not read {}", file.display()))?;
        let parsed = dotenv::parse(&text).map_err(|e| ProgramError::usage(anyhow::anyhow!("{}: {e}", file.display())))?;
        secrets.extend(parsed);
    }
    for flag in &args.secrets {
        let pair = match flag.split_once('=') {
            Some((name, value)) => (name.trim().to_owned(), value.to_owned()),
            None => {
                let value = std::env::var(flag).map_err(|_| {
                    ProgramError::usage(anyhow::anyhow!("--secret {flag}: give a value (NAME=VALUE) or set the environment variable {flag}"))
                })?;
                (flag.clone(), value)
            }
        };
        secrets.retain(|(name, _)| *name != pair.0);
        secrets.push(pair);
    }
    Ok(secrets)
}

/// The workflow's `on:` as written (null when it cannot be read: planning reports why).
fn triggers(text: &str, display: &str) -> Value {
    let workflow = match WorkflowFormat::from_file_name(display) {
        Some(WorkflowFormat::Yaml) => parse_workflow(text, display).ok(),
        Some(WorkflowFormat::Kdl) => parse_kdl_workflow(text, display).ok(),
        _ => None,
    };
    workflow.map(|w| w.on).unwrap_or(Value::Null)
}

/// The event a run without --event stands for: `push`, unless the workflow runs only on
/// demand (`workflow_dispatch`, else `workflow_call`, without `push`).
fn default_event(on: &Value) -> String {
    let on_demand = ["workflow_dispatch", "workflow_call"].into_iter().find(|e| has_trigger(on, e));
    match on_demand {
        Some(event) if !has_trigger(on, "push") => event.to_owned(),
        _ => "push".to_owned(),
    }
}

/// The options the workflow is planned with: the contexts a forge would give.
fn plan_options(args: &RunArgs, repo: &Path, workflow_name: &str, on: &Value) -> anyhow::Result<PlanOptions> {
    let payload = match &args.eventpath {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("could not read {}", path.display()))?;
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| ProgramError::usage(anyhow::anyhow!("{} is not a JSON event payload: {e}", path.display())))?;
            Some(value)
        }
    };
    let event = args.event.clone().unwrap_or_else(|| default_event(on));
    // The inputs given: --input, else (as act does) the payload's `inputs`.
    let given = match object(pairs("--input", &args.inputs, '=')?) {
        Value::Object(flags) if !flags.is_empty() => flags,
        _ => payload.as_ref().and_then(|p| p.get("inputs")).and_then(Value::as_object).cloned().unwrap_or_default(),
    };
    // Typed and checked against the declarations as GitHub does when it accepts a
    // dispatch; other events have no inputs.
    let inputs = match event.as_str() {
        "workflow_dispatch" | "workflow_call" => run_inputs(on, &event, &given)
            .map_err(|e| ProgramError::usage(anyhow::anyhow!("cannot start a {event} run: {e}")))?,
        _ if !args.inputs.is_empty() => {
            return Err(ProgramError::usage(anyhow::anyhow!(
                "--input is for workflow_dispatch and workflow_call runs; this run's event is {event} (see --event)"
            ))
            .into());
        }
        _ => RunInputs::default(),
    };
    let flags = github::EventFlags {
        name: Some(event.clone()),
        payload,
        actor: args.actor.clone(),
        forgejo: args.forgejo,
        // A dispatch event carries its inputs as strings (`github.event.inputs`).
        inputs: if event == "workflow_dispatch" { inputs.event_inputs.clone() } else { Map::new() },
    };
    let github = github::context(repo, workflow_name, flags);
    Ok(PlanOptions::new()
        .context("github", github)
        .context("vars", object(pairs("--var", &args.vars, '=')?))
        .context("inputs", Value::Object(inputs.context)))
}

fn plan(text: &str, display: &str, options: &PlanOptions) -> anyhow::Result<WorkflowPlan> {
    plan_any(text, display, options).map_err(|errors| {
        eprintln!("{errors}");
        ProgramError::InvalidWorkflow.into()
    })
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let text = read_workflow(&args.workflow)?;
    let display = args.workflow.display().to_string();
    let repo = args.repo.clone().unwrap_or_else(|| repository_dir(&args.workflow));
    // `github.workflow` is the workflow's name, known once it is read.
    let name = plan(&text, &display, &PlanOptions::new())?.name;
    let options = plan_options(&args, &repo, &name, &triggers(&text, &display))?;
    let plan = plan(&text, &display, &options)?;

    let mut builder = WorkflowRun::builder(plan.clone(), options)
        .source_name("solstice-run")
        .checkout(CheckoutSource::LocalDir { path: repo.to_string_lossy().into_owned() });
    if let Some(job) = &args.job {
        builder = builder.job(job.clone());
    }
    for (key, value) in pairs("--matrix", &args.matrix, ':')? {
        builder = builder.matrix(key, value);
    }
    for (name, value) in secrets(&args)? {
        builder = builder.secret(name, Secret::new(value));
    }
    if args.forgejo {
        for (name, value) in FORGEJO_RUNNER_ENV {
            builder = builder.env(name, value);
        }
    }

    // The labels the planned jobs need: with --host all run on this host (jobs whose
    // matrix is expanded later too); otherwise `host` does, and the others run in
    // virtual machines.
    let mut needed: Vec<String> = Vec::new();
    for job in &plan.jobs {
        let label = job_request_from_plan(job, JobOrigin::default()).route_label().to_owned();
        if !needed.contains(&label) {
            needed.push(label);
        }
    }
    let host_labels = if args.host { needed.iter().cloned().chain(["host".to_owned()]).collect() } else { vec!["host".to_owned()] };
    if args.host {
        builder = builder.fallback_label("host");
    }
    crate::machines::reap_leftovers().await;
    let machines = crate::machines::for_labels(&needed, &host_labels, args.catalog.as_deref()).await?;
    let labels = machines.labels.clone();
    let workflow_run = builder.labels(labels.clone()).build().map_err(ProgramError::usage)?;
    let engine = Engine::builder()
        .hypervisor(machines.hypervisor.clone())
        .executor(machines.executor.clone())
        .name("solstice-run")
        .build()?;
    let queue: Arc<dyn JobQueue> = Arc::new(MemoryQueue::new());
    let stop = CancellationToken::new();
    let abort = CancellationToken::new();
    let serving = {
        let (engine, queue, labels, stop, abort) = (engine.clone(), queue.clone(), labels.clone(), stop.clone(), abort.clone());
        tokio::spawn(async move { engine.serve(queue, &labels, stop, abort).await })
    };
    {
        let abort = abort.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\ninterrupted: cancelling the running job");
                abort.cancel();
            }
        });
    }
    let (tx, rx) = mpsc::channel(1024);
    let printing = tokio::spawn(print_events(rx));
    let outcome = workflow_run.run(queue, tx, abort).await;
    let _ = printing.await;
    stop.cancel();
    serving.await??;
    drop(machines);
    let outcome = outcome?;

    let _ = outln!("━━ summary ━━");
    for (name, result) in &outcome.jobs {
        let _ = outln!("{result:>9}  {name}");
    }
    let failed = outcome.not_succeeded();
    if failed > 0 {
        return Err(ProgramError::JobsFailed(format!("{failed} of {} jobs did not succeed", outcome.jobs.len())).into());
    }
    Ok(())
}

/// Prints the run's events until the run ends.
async fn print_events(mut events: mpsc::Receiver<WorkflowEvent>) {
    let mut printer = Printer::new(Vec::new());
    while let Some(event) = events.recv().await {
        match event {
            WorkflowEvent::JobStarted { name, steps, .. } => {
                let _ = outln!("━━ {name} ━━");
                printer = Printer::new(steps);
            }
            WorkflowEvent::Job(event) => printer.print(&event),
            WorkflowEvent::JobNotRun { name, result, reason, .. } => {
                let _ = outln!("━━ {name} ━━");
                let _ = outln!("{} {result}: {reason}", if result == solstice_core::JobResult::Skipped { "○" } else { "✗" });
            }
            WorkflowEvent::JobUnroutable { name, label, .. } => {
                let _ = outln!("━━ {name} ━━");
                let _ = outln!(
                    "✗ no machine serves `{label}` here: give an image catalog with --catalog, use `runs-on: tiny-linux` or `host`, or run with --host"
                );
            }
            WorkflowEvent::OutputNotEvaluated { job, output, reason } => {
                let _ = outln!("! the output `{output}` of job `{job}` could not be evaluated: {reason}");
            }
            _ => {}
        }
    }
}
