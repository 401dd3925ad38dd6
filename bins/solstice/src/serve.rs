//! `solstice serve`: an orchestrator engine and the configured runner services in one
//! process, on the in-process queue and the state store.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use solstice_core::{Engine, JobQueue, MemoryQueue, Store};
use solstice_forgejo::{ForgejoClient, ForgejoSource, LabelScheme, LabelSpec, RunnerFile, RunnerSection, Service, seconds};
use solstice_github::{GithubSource, RunnerStore};
use solstice_vm::{ImageCatalog, MachineLimits, MachineSetup, Machines};
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
    let store = Store::connect(&config.store.url).await.context("opening the state store")?;
    let queue: Arc<dyn JobQueue> = Arc::new(MemoryQueue::new());
    let machines = machines(&config, forgejo.as_ref().map(|(_, specs)| specs.as_slice())).await?;
    let labels = machines.labels.clone();
    let engine = Engine::builder()
        .hypervisor(machines.hypervisor.clone())
        .executor(machines.executor.clone())
        .capacity(config.capacity)
        .name(config.name.clone())
        .store(store)
        .build()?;
    // Before taking any job: what a crashed run under the same name left running.
    for reaped in engine.reap_orphans(Some(queue.as_ref())).await.context("reaping machines left by a previous run")? {
        tracing::warn!(machine = %reaped.record.id, job_id = %reaped.record.job_id, job_failed = reaped.job_failed, "removed a machine left by a previous run");
    }

    let http_stop = CancellationToken::new();
    let http = if config.metrics.listen.is_empty() {
        None
    } else {
        let listener = tokio::net::TcpListener::bind(&config.metrics.listen)
            .await
            .with_context(|| format!("binding the metrics endpoint to {}", config.metrics.listen))?;
        tracing::info!(listen = %listener.local_addr()?, "metrics and health endpoint up");
        Some(tokio::spawn(crate::http::serve(listener, engine.metrics().clone(), http_stop.clone())))
    };

    // `fetch_stop`: the runners stop taking jobs; `engine_stop`: the engine takes no
    // new job; `abort`: running jobs are cancelled.
    let (fetch_stop, engine_stop, abort) = (CancellationToken::new(), CancellationToken::new(), CancellationToken::new());
    let grace = Duration::from_secs(config.shutdown_grace_seconds);
    let mut runners: Vec<RunnerTask> = Vec::new();
    let mut forgejo_source = None;
    if let (Some((source, _)), Some(section)) = (forgejo, &config.forgejo) {
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
    http_stop.cancel();
    if let Some(http) = http {
        let _ = http.await;
    }
    drop(machines);
    tracing::info!(cancelled, "stopped");
    failure.map_or(Ok(()), Err)
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the service");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// Waits for the first runner task to end (never, without any): its result and index.
async fn first_to_end(runners: &mut [RunnerTask]) -> (Result<anyhow::Result<()>, tokio::task::JoinError>, usize) {
    if runners.is_empty() {
        return std::future::pending().await;
    }
    let (result, index, _) = futures::future::select_all(runners.iter_mut().map(|(_, task)| task)).await;
    (result, index)
}

/// The Forgejo source and the label specs from the runner file (or `[forgejo] labels`).
fn forgejo_parts(section: &RunnerSection) -> anyhow::Result<(ForgejoSource, Vec<LabelSpec>)> {
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
        .report_interval(seconds(section.report_interval))
        .build()?;
    tracing::info!(runner = %file.name, instance = %file.address, "Forgejo runner configured");
    Ok((source, specs))
}

fn github_source(section: &GithubSection) -> anyhow::Result<GithubSource> {
    let runner = RunnerStore::new(&section.dir)
        .load()
        .with_context(|| format!("[github] dir: register the runner first ({})", section.dir.display()))
        ?;
    Ok(GithubSource::builder(runner).build()?)
}

/// The host for host labels, QEMU VMs for VM labels: those of the file, of the Forgejo
/// label specs, and of `[github] labels` (in `vm_images`: a VM, else the host).
async fn machines(config: &ServeConfig, forgejo: Option<&[LabelSpec]>) -> anyhow::Result<Machines> {
    let cache = config.cache_dir.clone().unwrap_or_else(crate::machines::cache_dir);
    let catalog = config.image_catalog.as_deref().map(ImageCatalog::load).transpose()?.unwrap_or_default();
    let mut host: Vec<String> = config.host_labels.clone();
    let mut vms: Vec<(String, String)> = config.vm_images.iter().map(|(l, i)| (l.clone(), i.clone())).collect();
    for spec in forgejo.unwrap_or_default() {
        match &spec.scheme {
            LabelScheme::Host => host.push(spec.name.clone()),
            LabelScheme::Vm(_) => vms.push((spec.name.clone(), spec.image().unwrap_or(&spec.name).to_owned())),
        }
    }
    for label in config.github.iter().flat_map(|g| &g.labels) {
        if !config.vm_images.contains_key(label) {
            host.push(label.clone());
        }
    }
    // A fixed place for the machines' files, so that what a crash leaves is where the
    // store's records say (and `solstice image prune` finds it).
    let run_dir = cache.join("run");
    let limits = MachineLimits {
        max_machines: Some(config.vm_limits.max_vms),
        memory_mib: config.vm_limits.memory_mib,
        vcpus: config.vm_limits.vcpus,
    };
    let mut setup = MachineSetup::new(cache).catalog(catalog).run_dir(run_dir).limits(limits);
    let mut seen = Vec::new();
    for label in host {
        if !seen.contains(&label) {
            seen.push(label.clone());
            setup = setup.host_label(label);
        }
    }
    for (label, image) in vms {
        if !seen.contains(&label) {
            seen.push(label.clone());
            setup = setup.vm_label(label, image);
        }
    }
    if seen.is_empty() {
        anyhow::bail!("no label to serve: set host_labels or vm_images, or give the runners labels");
    }
    setup.build().await.context("setting up the machines for the labels")
}
