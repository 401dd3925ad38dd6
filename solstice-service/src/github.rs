//! The GitHub runner: registration and removal, the source built from `[github]`, and
//! `run` (on [`solstice_core::RunnerService`], like every service).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use solstice_config::{GithubConfig, ServiceConfig};
use solstice_core::Secret;
use solstice_github::{GithubSource, GithubSourceBuilder, RegistrationConfig, RunnerConfig, RunnerStore};

use crate::runner::{RunnerParts, runner_service, with_metrics};
use crate::{ProgramError, ServiceError, Shutdown};

/// `[github]`, or its defaults when the file has none.
pub(crate) fn github_section(config: &ServiceConfig) -> GithubConfig {
    config.github.clone().unwrap_or_default()
}

/// Registers a runner with a repository or organisation and writes its credential
/// files to `[github] dir`.
///
/// # Errors
/// A refused token (exit 4), GitHub unreachable or files that cannot be written
/// (exit 5).
pub async fn register_github(config: &ServiceConfig, registration: &RegistrationConfig) -> anyhow::Result<RunnerConfig> {
    let runner = solstice_github::register(registration).await.context("registration failed")?;
    RunnerStore::new(github_section(config).dir).save(&runner).context("saving the credentials")?;
    tracing::info!(name = %runner.settings.agent_name, id = runner.settings.agent_id, "runner registered");
    Ok(runner)
}

/// Unregisters the runner of `[github] dir` with a removal token and deletes its files.
///
/// # Errors
/// No registration there (exit 2), a refused token (exit 4), GitHub unreachable
/// (exit 5).
pub async fn remove_github(config: &ServiceConfig, token: &Secret, api_url: Option<&str>) -> anyhow::Result<()> {
    let store = RunnerStore::new(github_section(config).dir);
    let runner = load_runner(config)?;
    solstice_github::unregister(&runner, token, api_url).await.context("removal failed")?;
    store.remove()?;
    tracing::info!("runner removed");
    Ok(())
}

/// The registration in `[github] dir`.
fn load_runner(config: &ServiceConfig) -> Result<RunnerConfig, ServiceError> {
    let dir = github_section(config).dir;
    RunnerStore::new(&dir).load().map_err(|e| ServiceError::NotRegistered { key: "github.dir", path: dir, source: e.into() })
}

/// How the runner was registered: for one job, and through the runner-admin API.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Registered {
    ephemeral: bool,
    admin_flow: bool,
}

/// The source of the registered runner, to be given its metrics and built: it records
/// jobs in flight next to the credentials (a restart after a crash completes them as
/// failed).
pub(crate) fn github_source(config: &ServiceConfig) -> Result<(Registered, GithubSourceBuilder), ServiceError> {
    let runner = load_runner(config)?;
    let registered = Registered { ephemeral: runner.settings.ephemeral, admin_flow: runner.settings.use_runner_admin_flow };
    tracing::info!(name = %runner.settings.agent_name, "GitHub runner configured");
    let builder = GithubSource::builder(runner).state_dir(github_section(config).dir);
    Ok((registered, builder))
}

/// `solstice-github-runner run`: takes jobs from GitHub and runs them (or hands them to
/// orchestrators over RabbitMQ) until SIGTERM or SIGINT; with `ephemeral` (or a
/// runner registered as ephemeral) one job, then the registration is removed.
///
/// # Errors
/// No registration (exit 2), GitHub refusing the runner (exit 4), the queue, the
/// machines or the engine failing (exit 5).
pub async fn run_github_runner(mut config: ServiceConfig, ephemeral: bool) -> anyhow::Result<()> {
    // The runner's labels are `[github] labels`, by default `host`, even without a section.
    config.github = Some(github_section(&config));
    let (registered, builder) = github_source(&config)?;
    let ephemeral = ephemeral || registered.ephemeral;
    let shutdown = Shutdown::on_signals(config.shutdown_grace);
    let parts = RunnerParts::start(&config, &[]).await?;
    let source = builder.ephemeral(ephemeral).metrics(parts.metrics.clone()).build().map_err(ProgramError::invalid)?;
    let service = runner_service(Arc::new(source.clone()), parts.queue.clone(), parts.engine.clone(), config.shutdown_grace, &shutdown);
    let served = with_metrics(config.metrics.listen(), parts.metrics.clone(), service).await;
    shutdown.finish();
    served??;
    if ephemeral && source.is_spent() {
        if registered.admin_flow && !registered.ephemeral {
            // The runner-admin API removes runners only with a removal token.
            tracing::warn!("one job done; the registration stays (run `remove` with a removal token, or register with --ephemeral)");
        } else {
            RunnerStore::new(github_section(&config).dir).remove()?;
            tracing::info!("ephemeral runner done; credentials removed");
        }
    }
    Ok(())
}

/// `[github] dir` with the runner binary's `--dir` over it.
pub fn with_github_dir(mut config: ServiceConfig, dir: Option<&Path>) -> ServiceConfig {
    if let Some(dir) = dir {
        config.github.get_or_insert_with(GithubConfig::default).dir = dir.to_path_buf();
    }
    config
}
