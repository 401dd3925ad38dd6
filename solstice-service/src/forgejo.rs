//! The Forgejo runner: registration, the source built from `[forgejo]`, and
//! `daemon` (on [`solstice_core::RunnerService`], like every service).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use solstice_config::{ForgejoConfig, ServiceConfig};
use solstice_core::Secret;
use solstice_forgejo::{ForgejoClient, ForgejoSource, ForgejoSourceBuilder, LabelSpec, Registration, RunnerFile};

use crate::runner::{RunnerParts, runner_service, with_metrics};
use crate::{ProgramError, ServiceError, Shutdown};

/// What `solstice-forgejo-runner register` was given.
#[derive(Debug)]
pub struct ForgejoRegistration {
    /// The instance URL, e.g. `https://codeberg.org`.
    pub instance: String,
    /// The registration token from the runner settings page.
    pub token: Secret,
    /// The runner's name.
    pub name: String,
    /// Label specs: `name` or `name:vm[:image]` (a VM), `name:host` (the host).
    pub labels: Vec<String>,
    /// Take a single job, then be removed by Forgejo.
    pub ephemeral: bool,
}

/// Registers a runner with a Forgejo instance and writes the runner file to
/// `[forgejo] file` (mode 0600). A signal cancels it.
///
/// # Errors
/// Bad `--labels` or `--instance` (exit 3), a refused token (exit 4), an unreachable
/// instance or a file that cannot be written (exit 5).
pub async fn register_forgejo(config: &ServiceConfig, registration: ForgejoRegistration) -> anyhow::Result<RunnerFile> {
    let file = config.forgejo.clone().unwrap_or_default().file;
    let ForgejoRegistration { instance, token, name, labels, ephemeral } = registration;
    let labels = labels.iter().map(|l| LabelSpec::parse(l.trim())).collect::<Result<Vec<_>, _>>();
    let labels = labels.context("invalid --labels").map_err(ProgramError::usage)?;
    let client = ForgejoClient::builder(&instance).build().context("invalid --instance").map_err(ProgramError::usage)?;
    let shutdown = Shutdown::on_signals(Duration::ZERO);
    let registered = solstice_forgejo::register(&client, &Registration { name, token, labels, ephemeral }, Duration::from_secs(60), shutdown.stop()).await;
    shutdown.finish();
    let runner = registered.with_context(|| format!("could not register with {instance}"))?;
    runner.save(&file).map_err(ProgramError::failed)?;
    Ok(runner)
}

/// The runner file `[forgejo] file` names, its label specs (or `[forgejo] labels`), and
/// the source for them, to be given its metrics and built.
pub(crate) fn forgejo_parts(config: &ServiceConfig, section: &ForgejoConfig) -> anyhow::Result<(RunnerFile, Vec<LabelSpec>, ForgejoSourceBuilder)> {
    let file = RunnerFile::load(&section.file)
        .map_err(|e| ServiceError::NotRegistered { key: "forgejo.file", path: section.file.clone(), source: e.into() })?;
    let specs: Vec<LabelSpec> = if section.labels.is_empty() {
        file.label_specs()?
    } else {
        section.labels.iter().map(|l| LabelSpec::parse(l)).collect::<Result<_, _>>()?
    };
    let client = ForgejoClient::builder(&file.address).build().map_err(ProgramError::invalid)?.with_credentials(file.credentials());
    let source = ForgejoSource::builder(client)
        .labels(specs.iter().map(|s| s.name.clone()).collect())
        .runner_name(file.name.clone())
        .capacity(config.capacity)
        .fetch_interval(section.fetch_interval)
        .fetch_timeout(section.fetch_timeout)
        .report_interval(section.report_interval);
    tracing::info!(runner = %file.name, uuid = %file.uuid, instance = %file.address, "Forgejo runner configured");
    Ok((file, specs, source))
}

/// `solstice-forgejo-runner daemon`: polls Forgejo for tasks and runs them (or hands
/// them to orchestrators over RabbitMQ) until SIGTERM or SIGINT.
///
/// # Errors
/// A missing runner file or bad labels (exit 2), Forgejo refusing the runner (exit 4),
/// the queue, the machines or the engine failing (exit 5).
pub async fn run_forgejo_runner(config: ServiceConfig) -> anyhow::Result<()> {
    let section = config.forgejo.clone().unwrap_or_default();
    let (_file, specs, source) = forgejo_parts(&config, &section)?;
    let shutdown = Shutdown::on_signals(config.shutdown_grace);
    let parts = RunnerParts::start(&config, &specs).await?;
    let source = source.metrics(parts.metrics.clone()).build().map_err(ProgramError::invalid)?;
    tracing::info!(labels = ?specs.iter().map(|s| &s.name).collect::<Vec<_>>(), "polling for jobs");
    let service = runner_service(Arc::new(source), parts.queue.clone(), parts.engine.clone(), config.shutdown_grace, &shutdown);
    let served = with_metrics(config.metrics.listen(), parts.metrics.clone(), service).await;
    shutdown.finish();
    Ok(served??)
}
