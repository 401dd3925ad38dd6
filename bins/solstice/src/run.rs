//! `solstice run`: a workflow's jobs, in order, on the in-process engine.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use serde_json::{Map, Value, json};
use solstice_core::{
    CheckoutSource, Engine, JobOrigin, JobQueue, JobResult, LocalSource, MemoryQueue, job_request_from_plan,
    serve_source,
};
use solstice_workflow::{JobPlan, JobStatus, PlanOptions, evaluate_condition, plan_any};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::printer::Printer;
use solstice_service::ProgramError;
use crate::read_workflow;

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
    /// Run only the job with this id (all its matrix combinations).
    #[arg(long)]
    job: Option<String>,
    /// The directory checked out by `actions/checkout` (default: the git repository
    /// around the workflow file, else the current directory).
    #[arg(long)]
    repo: Option<PathBuf>,
}

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

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let text = read_workflow(&args.workflow)?;
    let display = args.workflow.display().to_string();
    let repo = args.repo.clone().unwrap_or_else(|| repository_dir(&args.workflow));
    let github = json!({
        "event_name": "push",
        "workspace": "",
        "repository": repo.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        "actor": std::env::var("USER").unwrap_or_default(),
    });
    let options = PlanOptions::new().context("github", github);
    let plan = match plan_any(&text, &display, &options) {
        Ok(plan) => plan,
        Err(errors) => {
            eprintln!("{errors}");
            return Err(ProgramError::InvalidWorkflow.into());
        }
    };
    let jobs: Vec<&JobPlan> = plan.jobs.iter().filter(|j| args.job.as_ref().is_none_or(|id| &j.id == id)).collect();
    if jobs.is_empty() {
        anyhow::bail!("the workflow has no job{}", args.job.map(|j| format!(" with id `{j}`")).unwrap_or_default());
    }

    // The labels the jobs need: with --host all run on this host; otherwise `host`
    // does, and the others run in virtual machines.
    let mut needed: Vec<String> = Vec::new();
    for job in &jobs {
        let label = job_request_from_plan(job, JobOrigin::default()).route_label().to_owned();
        if !needed.contains(&label) {
            needed.push(label);
        }
    }
    let host_labels = if args.host { needed.clone() } else { vec!["host".to_owned()] };
    let machines = crate::machines::for_labels(&needed, &host_labels, args.catalog.as_deref()).await?;
    let labels = machines.labels.clone();
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

    let mut results: HashMap<String, Vec<JobResult>> = HashMap::new();
    let mut summary: Vec<(String, JobResult)> = Vec::new();
    for job in jobs {
        println!("━━ {} ━━", job.name);
        let needs = needs_context(job, &results);
        let result = if abort.is_cancelled() {
            JobResult::Cancelled
        } else if !should_run(job, &needs, &results)? {
            println!("○ skipped (its `if:` is false or a job it needs did not succeed)");
            JobResult::Skipped
        } else {
            let mut request = job_request_from_plan(job, JobOrigin { source: "solstice-run".into(), ..JobOrigin::default() });
            request.contexts.insert("needs".into(), Value::Object(needs));
            request.checkout = Some(CheckoutSource::LocalDir { path: repo.to_string_lossy().into_owned() });
            if !labels.iter().any(|l| l == request.route_label()) {
                println!(
                    "✗ no machine serves `{}` here: give an image catalog with --catalog, use `runs-on: tiny-linux` or `host`, or run with --host",
                    request.route_label()
                );
                JobResult::Failure
            } else {
                run_one(request, queue.clone()).await?
            }
        };
        results.entry(job.id.clone()).or_default().push(result);
        summary.push((job.name.clone(), result));
    }
    stop.cancel();
    serving.await??;
    drop(machines);

    println!("━━ summary ━━");
    for (name, result) in &summary {
        println!("{result:>9}  {name}");
    }
    let failed = summary.iter().filter(|(_, r)| matches!(r, JobResult::Failure | JobResult::Cancelled)).count();
    if failed > 0 {
        return Err(ProgramError::JobsFailed(format!("{failed} of {} jobs did not succeed", summary.len())).into());
    }
    Ok(())
}

/// Runs one job through the queue and the engine, printing its events.
async fn run_one(request: solstice_core::JobRequest, queue: Arc<dyn JobQueue>) -> anyhow::Result<JobResult> {
    let id = request.id;
    let mut printer = Printer::new(request.steps.iter().map(|s| s.name.clone()).collect());
    let (tx, mut rx) = mpsc::channel(1024);
    let source = Arc::new(LocalSource::new("solstice-run", vec![request], tx));
    let print = tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            printer.print(&event);
        }
    });
    // The source ends once its job finished; Ctrl-C cancels the job through the
    // engine's abort token, and the source then sees it finish as cancelled.
    serve_source(source.clone(), queue, CancellationToken::new()).await?;
    let result = source.results().get(&id).copied().unwrap_or(JobResult::Failure);
    drop(source);
    let _ = print.await;
    Ok(result)
}

/// The `needs` context of a job: each needed job's result.
fn needs_context(job: &JobPlan, results: &HashMap<String, Vec<JobResult>>) -> Map<String, Value> {
    job.needs
        .iter()
        .map(|need| {
            let result = combined(results.get(need).map(Vec::as_slice).unwrap_or(&[]));
            (need.clone(), json!({ "result": result.as_str(), "outputs": {} }))
        })
        .collect()
}

/// The result of a job over all its matrix combinations, as `needs.X.result` shows it.
fn combined(results: &[JobResult]) -> JobResult {
    if results.contains(&JobResult::Failure) {
        JobResult::Failure
    } else if results.contains(&JobResult::Cancelled) {
        JobResult::Cancelled
    } else if !results.is_empty() && results.iter().all(|r| *r == JobResult::Skipped) {
        JobResult::Skipped
    } else {
        JobResult::Success
    }
}

/// Evaluates a job's `if:` with the status of the jobs it needs.
fn should_run(job: &JobPlan, needs: &Map<String, Value>, results: &HashMap<String, Vec<JobResult>>) -> anyhow::Result<bool> {
    let needed: Vec<JobResult> =
        job.needs.iter().map(|n| combined(results.get(n).map(Vec::as_slice).unwrap_or(&[]))).collect();
    let status = if needed.contains(&JobResult::Cancelled) {
        JobStatus::Cancelled
    } else if needed.iter().any(|r| matches!(r, JobResult::Failure | JobResult::Skipped)) {
        JobStatus::Failure
    } else {
        JobStatus::Success
    };
    let mut contexts = job.contexts.clone();
    contexts.insert("needs".into(), Value::Object(needs.clone()));
    let condition = if job.condition.trim().is_empty() { "success()" } else { job.condition.as_str() };
    evaluate_condition(condition, &contexts, status)
        .map_err(|e| anyhow::anyhow!("job `{}`: its `if:` could not be evaluated: {e}", job.id))
}
