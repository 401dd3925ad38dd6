//! `solstice serve`: an orchestrator engine and the configured runner services in one
//! process, on the in-process queue and the state store.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use solstice_core::{JobQueue, MemoryQueue, Store};
use solstice_forgejo::{ForgejoClient, ForgejoSource, ForgejoSourceBuilder, LabelScheme, LabelSpec, RunnerFile, RunnerSection, Service, seconds};
use solstice_github::{GithubSource, GithubSourceBuilder, RunnerStore};
use solstice_orchestrator::{LabelPlan, MetricsEndpoint, machines, shutdown_signal, start_engine};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{GithubSection, ServeConfig};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The configuration file (see docs/deploy/solstice.toml). Without it, the
    /// environment overrides alone must configure a runner.
    #[arg(long, short, env = "SOLSTICE_CONFIG")]
    config: Option<PathBuf>,
}

/// A runner service's task, named for the logs.
type RunnerTask = (&'static str, JoinHandle<anyhow::Result<()>>);

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = crate::config::load_serve(args.config.as_deref()).map_err(|e| crate::CliError::Config(e.into()))?;
    serve(config).await.map_err(|e| if e.is::<crate::CliError>() { e } else { crate::CliError::Service(e).into() })
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    // The runners' files first: a runner that is not registered is a configuration
    // error, found before anything is created. The Forgejo runner file names the labels
    // (unless [forgejo] labels replaces them), which decide the machines needed.
    let forgejo = match &config.forgejo {
        Some(section) => Some(forgejo_parts(section).map_err(crate::CliError::Config)?),
        None => None,
    };
    let github = match &config.github {
        Some(section) => Some(github_source(section).map_err(crate::CliError::Config)?),
        None => None,
    };
    let orchestrator = config.orchestrator();
    let plan = label_plan(&config, forgejo.as_ref().map(|(_, specs)| specs.as_slice()));
    if plan.is_empty() {
        anyhow::bail!("no label to serve: set host_labels or vm_images, or give the runners labels");
    }
    let store = Store::connect(&config.store.url).await.context("opening the state store")?;
    let queue: Arc<dyn JobQueue> = Arc::new(MemoryQueue::new());
    let machines = machines(&orchestrator, config.cache_dir.clone().unwrap_or_else(crate::machines::cache_dir), &plan).await?;
    let labels = machines.labels.clone();
    // Before taking any job: what a crashed run under the same name left running.
    let orchestrator = start_engine(&orchestrator, &machines, store, queue.as_ref()).await?;
    let engine = orchestrator.engine().clone();
    // The sources count their failed forge calls in the engine's metrics.
    let forgejo = match forgejo {
        Some((builder, _)) => Some(builder.metrics(engine.metrics().clone()).build().map_err(|e| crate::CliError::Config(e.into()))?),
        None => None,
    };
    // A stopping GitHub runner reports its jobs for as long as they may still run
    // here (the grace period), plus a minute to send the last of it.
    let github_drain = Duration::from_secs(config.shutdown_grace_seconds) + Duration::from_secs(60);
    let github = match github {
        Some(builder) => Some(
            builder.metrics(engine.metrics().clone()).drain_limit(github_drain).build().map_err(|e| crate::CliError::Config(e.into()))?,
        ),
        None => None,
    };
    let http = MetricsEndpoint::start(&config.metrics.listen, engine.metrics().clone()).await?;

    // `fetch_stop`: the runners stop taking jobs; `engine_stop`: the engine takes no
    // new job; `abort`: running jobs are cancelled.
    let (fetch_stop, engine_stop, abort) = (CancellationToken::new(), CancellationToken::new(), CancellationToken::new());
    let grace = Duration::from_secs(config.shutdown_grace_seconds);
    let mut runners: Vec<RunnerTask> = Vec::new();
    let mut forgejo_source = None;
    if let (Some(source), Some(section)) = (forgejo, &config.forgejo) {
        forgejo_source = Some(source.clone());
        // The engine is this process's own: the runner only fetches and reports, and
        // gets the whole grace period plus its own to report its tasks.
        let service = Service { source, queue: queue.clone(), engine: None, grace: grace + seconds(section.shutdown_grace) };
        let (stop, abort) = (fetch_stop.clone(), abort.clone());
        runners.push(("forgejo", tokio::spawn(async move { Ok(solstice_forgejo::run_service(service, stop, abort).await?) })));
    }
    if let Some(source) = github {
        let (queue, stop) = (queue.clone(), fetch_stop.clone());
        runners.push(("github", tokio::spawn(async move { Ok(solstice_github::serve_with_queue(source, queue, None, stop).await?) })));
    }

    let engine_task = {
        let (engine, queue, labels, stop, abort) = (engine.clone(), queue.clone(), labels.clone(), engine_stop.clone(), abort.clone());
        tokio::spawn(async move { engine.serve(queue, &labels, stop, abort).await })
    };
    tracing::info!(name = %config.name, ?labels, capacity = config.capacity, runners = runners.len(), "serving jobs");

    // Until a signal, or a runner that stops on its own (not registered, refused).
    let mut failure: Option<anyhow::Error> = None;
    let signalled = tokio::select! {
        () = shutdown_signal() => true,
        (result, index) = first_to_end(&mut runners) => {
            let (name, _) = runners.remove(index);
            failure = Some(match result {
                Ok(Ok(())) => anyhow::anyhow!("the {name} runner stopped on its own"),
                Ok(Err(e)) => e.context(format!("the {name} runner failed")),
                Err(e) => anyhow::Error::new(e).context(format!("the {name} runner panicked")),
            });
            false
        }
    };
    let running = engine.metrics().running();
    if signalled {
        tracing::info!(running, grace_seconds = grace.as_secs(), "shutting down: no new jobs; running jobs may finish");
    } else {
        tracing::error!(running, "shutting down");
    }
    fetch_stop.cancel();
    engine_stop.cancel();
    let deadline = {
        let abort = abort.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(grace) => tracing::warn!("grace period over: cancelling running jobs"),
                () = shutdown_signal() => tracing::warn!("second signal: cancelling running jobs"),
            }
            abort.cancel();
        })
    };
    let before = engine.metrics().finished(solstice_core::JobResult::Cancelled);
    match engine_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => failure = failure.or(Some(anyhow::Error::new(e).context("the engine failed"))),
        Err(e) => failure = failure.or(Some(anyhow::Error::new(e).context("the engine panicked"))),
    }
    deadline.abort();
    let cancelled = engine.metrics().finished(solstice_core::JobResult::Cancelled) - before;
    if cancelled > 0 {
        tracing::warn!(cancelled, "jobs were cancelled at shutdown and reported as cancelled");
    }
    // Jobs still in the in-process queue will never run here.
    if let Some(source) = forgejo_source {
        source.fail_unstarted("The runner stopped before the job started.");
    }
    for (name, task) in runners {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = failure.or(Some(e.context(format!("the {name} runner failed")))),
            Err(e) => failure = failure.or(Some(anyhow::Error::new(e).context(format!("the {name} runner panicked")))),
        }
    }
    // Machines kept for debugging go with the process, whatever their time left.
    orchestrator.shutdown().await;
    if let Some(http) = http {
        http.stop().await;
    }
    drop(machines);
    tracing::info!(cancelled, "stopped");
    failure.map_or(Ok(()), Err)
}

/// Waits for the first runner task to end (never, without any): its result and index.
async fn first_to_end(runners: &mut [RunnerTask]) -> (Result<anyhow::Result<()>, tokio::task::JoinError>, usize) {
    if runners.is_empty() {
        return std::future::pending().await;
    }
    let (result, index, _) = futures::future::select_all(runners.iter_mut().map(|(_, task)| task)).await;
    (result, index)
}

/// The Forgejo source, to be built once the engine's metrics exist, and the label specs
/// from the runner file (or `[forgejo] labels`).
fn forgejo_parts(section: &RunnerSection) -> anyhow::Result<(ForgejoSourceBuilder, Vec<LabelSpec>)> {
    let file = RunnerFile::load(&section.file)
        .with_context(|| format!("[forgejo] file: register the runner first ({})", section.file.display()))?;
    let specs: Vec<LabelSpec> = if section.labels.is_empty() {
        file.label_specs()?
    } else {
        section.labels.iter().map(|l| LabelSpec::parse(l)).collect::<Result<_, _>>()?
    };
    let client = ForgejoClient::builder(&file.address).build()?.with_credentials(file.credentials());
    let source = ForgejoSource::builder(client)
        .labels(specs.iter().map(|s| s.name.clone()).collect())
        .runner_name(file.name.clone())
        .capacity(section.capacity)
        .fetch_interval(seconds(section.fetch_interval))
        .fetch_timeout(seconds(section.fetch_timeout))
        .report_interval(seconds(section.report_interval));
    tracing::info!(runner = %file.name, instance = %file.address, "Forgejo runner configured");
    Ok((source, specs))
}

/// The GitHub source, to be built once the engine's metrics exist.
fn github_source(section: &GithubSection) -> anyhow::Result<GithubSourceBuilder> {
    let runner = RunnerStore::new(&section.dir)
        .load()
        .with_context(|| format!("[github] dir: register the runner first ({})", section.dir.display()))
        ?;
    Ok(GithubSource::builder(runner))
}

/// The labels of the file, of the Forgejo label specs, and of `[github] labels` (in
/// `vm_images`: a VM, else the host).
fn label_plan(config: &ServeConfig, forgejo: Option<&[LabelSpec]>) -> LabelPlan {
    let mut plan = LabelPlan::default();
    for label in &config.host_labels {
        plan.host(label.clone());
    }
    for (label, image) in &config.vm_images {
        plan.vm(label.clone(), image.clone());
    }
    for spec in forgejo.unwrap_or_default() {
        match &spec.scheme {
            LabelScheme::Host => plan.host(spec.name.clone()),
            LabelScheme::Vm(_) => plan.vm(spec.name.clone(), spec.image().unwrap_or(&spec.name).to_owned()),
        };
    }
    for label in config.github.iter().flat_map(|g| &g.labels) {
        if !config.vm_images.contains_key(label) {
            plan.host(label.clone());
        }
    }
    plan
}
