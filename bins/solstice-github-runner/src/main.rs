//! `solstice-github-runner`: a GitHub Actions self-hosted runner that runs jobs with
//! Solstice CI's engine.
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use solstice_core::{AmqpQueue, Engine, EngineMetrics, JobQueue, MemoryQueue, Secret};
use solstice_github::{GithubSource, RegistrationConfig, RunnerStore};
use solstice_orchestrator::MetricsEndpoint;
use tokio_util::sync::CancellationToken;

mod config;
mod machines;

use config::load_config;
use machines::machines;

/// A GitHub Actions self-hosted runner that runs jobs in fresh virtual machines.
///
/// Exit codes: 0 success, 1 runtime failure, 2 invalid arguments or configuration.
#[derive(Debug, Parser)]
#[command(version, about)]
pub(crate) struct Cli {
    /// TOML configuration file (keys: `dir`, `labels`, `capacity`, `vm_images`, `image_catalog`, `cache_dir`,
    /// `queue_url`, `engine`, `metrics_listen`).
    #[arg(long, env = "SOLSTICE_GITHUB_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Directory of the runner's credential files (overrides `dir`).
    #[arg(long, env = "SOLSTICE_GITHUB_DIR")]
    pub(crate) dir: Option<PathBuf>,
    /// Log lines as `text` or `json` (one object per line, for a log collector).
    #[arg(long, global = true, env = "SOLSTICE_LOG_FORMAT", default_value = "text")]
    log_format: solstice_config::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Register this runner with a repository or organisation.
    Register {
        /// The repository or organisation: `https://github.com/OWNER` or `https://github.com/OWNER/REPO`.
        #[arg(long)]
        url: String,
        /// The registration token from the repository's settings.
        #[arg(long, env = "SOLSTICE_GITHUB_TOKEN", hide_env_values = true)]
        token: String,
        /// The runner's name.
        #[arg(long)]
        name: String,
        /// Extra labels, comma-separated (the first one routes jobs, e.g. `omnios`).
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        /// Replace a runner of the same name.
        #[arg(long)]
        replace: bool,
        /// Register for a single job.
        #[arg(long)]
        ephemeral: bool,
        /// Runner group (default group if absent).
        #[arg(long)]
        runner_group: Option<String>,
        /// REST API base, if it does not follow from the URL.
        #[arg(long)]
        api_url: Option<String>,
    },
    /// Unregister this runner and delete its credential files.
    Remove {
        /// The removal token from the repository's settings.
        #[arg(long, env = "SOLSTICE_GITHUB_TOKEN", hide_env_values = true)]
        token: String,
        /// REST API base, if it does not follow from the URL.
        #[arg(long)]
        api_url: Option<String>,
    },
    /// Take jobs and run them until stopped (SIGINT/SIGTERM); serves `/metrics` and `/healthz` on `metrics_listen`.
    Run {
        /// Take one job, then unregister and exit.
        #[arg(long)]
        ephemeral: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The level follows RUST_LOG, as it always has for this program.
    solstice_config::init_logging(&std::env::var("RUST_LOG").unwrap_or_default(), "info", cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // A configuration file (or override) the shared loader refused is a bad configuration too.
            let config = e.chain().any(|c| {
                matches!(c.downcast_ref::<solstice_github::GithubError>(), Some(solstice_github::GithubError::Config(_)))
                    || c.is::<solstice_config::ConfigError>()
            });
            ExitCode::from(if config { 2 } else { 1 })
        }
    }
}

async fn shutdown_signal(stop: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    stop.cancel();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = load_config(&cli)?;
    let store = RunnerStore::new(&config.dir);
    match cli.command {
        Command::Register { url, token, name, labels, replace, ephemeral, runner_group, api_url } => {
            let registration = RegistrationConfig {
                url,
                token: Secret::new(token),
                name,
                labels,
                replace,
                ephemeral,
                runner_group,
                api_url,
                ..Default::default()
            };
            let runner = solstice_github::register(&registration).await.context("registration failed")?;
            store.save(&runner).context("saving the credentials")?;
            tracing::info!(name = %runner.settings.agent_name, id = runner.settings.agent_id, "runner registered");
        }
        Command::Remove { token, api_url } => {
            let runner = store.load().context("reading the runner's files")?;
            solstice_github::unregister(&runner, &Secret::new(token), api_url.as_deref()).await.context("removal failed")?;
            store.remove()?;
            tracing::info!("runner removed");
        }
        Command::Run { ephemeral } => {
            let runner = store.load().context("reading the runner's files")?;
            let (registered_ephemeral, admin_flow) = (runner.settings.ephemeral, runner.settings.use_runner_admin_flow);
            let ephemeral = ephemeral || registered_ephemeral;
            let stop = CancellationToken::new();
            tokio::spawn(shutdown_signal(stop.clone()));
            let queue: Arc<dyn JobQueue> = match &config.queue_url {
                Some(url) => Arc::new(AmqpQueue::connect(url).await.context("connecting to RabbitMQ")?),
                None => Arc::new(MemoryQueue::new()),
            };
            // Without an engine, orchestrators elsewhere run the jobs from the queue.
            let machines = if config.engine { Some(machines(&config).await?) } else { None };
            let engine = match &machines {
                Some(machines) => {
                    let engine = Engine::builder()
                        .hypervisor(machines.hypervisor.clone())
                        .executor(machines.executor.clone())
                        .capacity(config.capacity)
                        .build()?;
                    Some((engine, machines.labels.clone()))
                }
                None => None,
            };
            // The engine's metrics; without an engine only the GitHub API errors count.
            let metrics = engine.as_ref().map_or_else(EngineMetrics::new, |(engine, _)| engine.metrics().clone());
            // Jobs in flight are recorded next to the credentials: a restart after a crash
            // completes them as failed.
            let source =
                GithubSource::builder(runner).ephemeral(ephemeral).state_dir(&config.dir).metrics(metrics.clone()).build()?;
            let endpoint = MetricsEndpoint::start(&config.metrics_listen, metrics).await?;
            let served = solstice_github::serve_with_queue(source.clone(), queue, engine, stop).await;
            if let Some(endpoint) = endpoint {
                endpoint.stop().await;
            }
            served?;
            drop(machines);
            if ephemeral && source.is_spent() {
                if admin_flow && !registered_ephemeral {
                    // The runner-admin API removes runners only with a removal token.
                    tracing::warn!("one job done; the registration stays (run `remove` with a removal token, or register with --ephemeral)");
                } else {
                    store.remove()?;
                    tracing::info!("ephemeral runner done; credentials removed");
                }
            }
        }
    }
    Ok(())
}
