//! `solstice serve`: an orchestrator engine and the configured runner services in one
//! process, on the in-process queue and the state store.

use std::sync::Arc;

use solstice_config::ServiceConfig;
use solstice_core::JobResult;
use tokio::task::JoinHandle;

use crate::forgejo::forgejo_parts;
use crate::github::github_source;
use crate::orchestrator::start_orchestrator;
use crate::runner::runner_service;
use crate::{MetricsEndpoint, ProgramError, ServiceError, Shutdown};

/// A runner service's task, named for the logs.
type RunnerTask = (&'static str, JoinHandle<anyhow::Result<()>>);

/// Serves until SIGTERM or SIGINT (see [`Shutdown`]), or until a runner stops on its
/// own (not registered any more, refused): then everything stops the same way.
///
/// # Errors
/// A runner that is not registered (exit 2, before anything is created), a runner
/// the forge refuses (exit 4), the store, the machines or the engine failing (exit 5).
pub async fn run_serve(config: ServiceConfig) -> anyhow::Result<()> {
    // The runners' files first: a runner that is not registered is found before
    // anything is created. The Forgejo runner file names the labels (unless [forgejo]
    // labels replaces them), which decide the machines needed.
    let forgejo = config.forgejo.as_ref().map(|section| forgejo_parts(&config, section)).transpose()?;
    let github = config.github.as_ref().map(|_| github_source(&config)).transpose()?;
    let specs = forgejo.as_ref().map(|(_, specs, _)| specs.as_slice()).unwrap_or_default();
    let (orchestrator, queue, machines) = start_orchestrator(&config, specs).await?;
    let labels = machines.labels.clone();
    let engine = orchestrator.engine().clone();
    // The sources count their failed forge calls in the engine's metrics.
    let metrics = engine.metrics().clone();
    let forgejo = forgejo.map(|(_, _, builder)| builder.metrics(metrics.clone()).build()).transpose().map_err(ProgramError::invalid)?;
    let github = github.map(|(_, builder)| builder.metrics(metrics.clone()).build()).transpose().map_err(ProgramError::invalid)?;
    let http = MetricsEndpoint::start(config.metrics.listen(), metrics.clone()).await?;

    let shutdown = Shutdown::on_signals(config.shutdown_grace);
    // The runners only fetch and report: the engine is this process's own.
    let mut runners: Vec<RunnerTask> = Vec::new();
    if let Some(source) = forgejo.clone() {
        let (queue, shutdown, grace) = (queue.clone(), shutdown.clone(), config.shutdown_grace);
        runners.push(("forgejo", tokio::spawn(async move { Ok(runner_service(Arc::new(source), queue, None, grace, &shutdown).await?) })));
    }
    if let Some(source) = github {
        let (queue, shutdown, grace) = (queue.clone(), shutdown.clone(), config.shutdown_grace);
        runners.push(("github", tokio::spawn(async move { Ok(runner_service(Arc::new(source), queue, None, grace, &shutdown).await?) })));
    }
    let engine_task = {
        let (engine, queue, labels) = (engine.clone(), queue.clone(), labels.clone());
        let (stop, abort) = (shutdown.stop().clone(), shutdown.abort().clone());
        tokio::spawn(async move { engine.serve(queue, &labels, stop, abort).await })
    };
    tracing::info!(name = %config.name, ?labels, capacity = config.capacity, runners = runners.len(), "serving jobs");

    // Until a signal, or a runner that stops on its own (not registered, refused).
    let mut failure: Option<anyhow::Error> = None;
    tokio::select! {
        biased;
        () = shutdown.stop().cancelled() => {}
        (result, index) = first_to_end(&mut runners) => {
            let (name, _) = runners.remove(index);
            // A runner that ended cleanly because the shutdown began is no failure.
            let stopping = shutdown.stop().is_cancelled();
            failure = runner_failure(name, result).or_else(|| (!stopping).then(|| ServiceError::RunnerEnded { runner: name }.into()));
            if failure.is_some() {
                tracing::error!(running = metrics.running(), "shutting down");
            }
            shutdown.begin();
        }
    }
    let before = metrics.finished(JobResult::Cancelled);
    match engine_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => failure = failure.or(Some(anyhow::Error::new(e).context("the engine failed"))),
        Err(e) => failure = failure.or(Some(anyhow::Error::new(e).context("the engine panicked"))),
    }
    let cancelled = metrics.finished(JobResult::Cancelled) - before;
    if cancelled > 0 {
        tracing::warn!(cancelled, "jobs were cancelled at shutdown (reported as each forge's runner reports a job its shutdown interrupted)");
    }
    // Jobs still in the in-process queue will never run here.
    if let Some(source) = forgejo {
        source.fail_unstarted("The runner stopped before the job started.");
    }
    for (name, task) in runners {
        failure = failure.or(runner_failure(name, task.await));
    }
    shutdown.finish();
    // Machines kept for debugging go with the process, whatever their time left.
    orchestrator.shutdown().await;
    if let Some(http) = http {
        http.stop().await;
    }
    drop(machines);
    tracing::info!(cancelled, "stopped");
    failure.map_or(Ok(()), Err)
}

/// The error of a runner task that ended, if it failed.
fn runner_failure(name: &str, result: Result<anyhow::Result<()>, tokio::task::JoinError>) -> Option<anyhow::Error> {
    match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.context(format!("the {name} runner failed"))),
        Err(e) => Some(anyhow::Error::new(e).context(format!("the {name} runner panicked"))),
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
