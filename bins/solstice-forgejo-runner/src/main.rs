//! `solstice-forgejo-runner`: a native Forgejo Actions runner.
//!
//! Exit codes: 0 success, 1 runtime error, 2 usage error, 3 configuration error,
//! 4 Forgejo refused the runner (bad registration token, unknown runner).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use solstice_core::{AmqpQueue, Engine, EngineMetrics, JobQueue, MemoryQueue, Secret};
use solstice_vm::{ImageCatalog, MachineSetup, Machines};
use solstice_forgejo::{
    DaemonError, ForgejoClient, ForgejoSource, LabelScheme, LabelSpec, Registration, RegisterError, RunnerConfig,
    RunnerFile, Service, seconds,
};
use solstice_orchestrator::MetricsEndpoint;
use tokio_util::sync::CancellationToken;

/// A native Forgejo Actions runner that runs each job in a fresh machine.
///
/// Configuration: a TOML file (`--config`), overridden by environment variables
/// `SOLSTICE_FORGEJO__<SECTION>__<KEY>` (for example `SOLSTICE_FORGEJO__RUNNER__CAPACITY=2`).
/// `daemon` serves `/metrics` and `/healthz` on `[metrics] listen` (default
/// `127.0.0.1:9465`; empty: off).
///
/// Exit codes: 0 success, 1 runtime error, 2 usage error, 3 configuration error,
/// 4 Forgejo refused the runner.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The configuration file (TOML). Optional: defaults apply without it.
    #[arg(long, short, env = "SOLSTICE_FORGEJO_CONFIG")]
    config: Option<PathBuf>,
    /// Log lines as `text` or `json` (one object per line, for a log collector).
    #[arg(long, global = true, env = "SOLSTICE_LOG_FORMAT", default_value = "text")]
    log_format: solstice_config::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Register this runner with a Forgejo instance and write the runner file (mode 0600).
    Register {
        /// The instance URL, e.g. `https://codeberg.org`.
        #[arg(long)]
        instance: String,
        /// The registration token from the runner settings page.
        #[arg(long, env = "SOLSTICE_FORGEJO_REGISTRATION_TOKEN", hide_env_values = true)]
        token: String,
        /// The runner's name.
        #[arg(long, default_value = "solstice")]
        name: String,
        /// Comma-separated labels: `name` or `name:vm[:image]` (a VM), `name:host` (the host).
        #[arg(long, value_delimiter = ',', required = true)]
        labels: Vec<String>,
        /// Take a single job, then be removed by Forgejo.
        #[arg(long)]
        ephemeral: bool,
    },
    /// Poll Forgejo for jobs and run them until SIGINT/SIGTERM (twice: cancel running jobs).
    Daemon,
}

/// An error with its exit code.
struct Failure(u8, anyhow::Error);

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The level follows RUST_LOG, as it always has for this program.
    solstice_config::init_logging(&std::env::var("RUST_LOG").unwrap_or_default(), "info", cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let config = load_config(cli.config.as_deref()).map_err(|e| Failure(3, e))?;
    match cli.command {
        Command::Register { instance, token, name, labels, ephemeral } => {
            let labels = labels.iter().map(|l| LabelSpec::parse(l.trim())).collect::<Result<Vec<_>, _>>();
            let labels = labels.context("invalid --labels").map_err(|e| Failure(2, e))?;
            let client = ForgejoClient::builder(&instance).build().context("invalid --instance").map_err(|e| Failure(2, e))?;
            let registration = Registration { name, token: Secret::new(token), labels, ephemeral };
            let cancel = shutdown_signal(CancellationToken::new(), CancellationToken::new());
            let file = solstice_forgejo::register(&client, &registration, seconds(60.0), &cancel).await.map_err(|e| {
                let code = if matches!(e, RegisterError::Refused(_)) { 4 } else { 1 };
                Failure(code, anyhow::Error::new(e).context(format!("could not register with {instance}")))
            })?;
            file.save(&config.runner.file).map_err(|e| Failure(1, e.into()))?;
            println!("Registered runner {} ({}); wrote {}", file.name, file.uuid, config.runner.file.display());
            Ok(())
        }
        Command::Daemon => daemon(config).await,
    }
}

async fn daemon(config: RunnerConfig) -> Result<(), Failure> {
    let file = RunnerFile::load(&config.runner.file).context("run `register` first").map_err(|e| Failure(3, e))?;
    let specs = if config.runner.labels.is_empty() {
        file.label_specs().map_err(|e| Failure(3, e.into()))?
    } else {
        config.runner.labels.iter().map(|l| LabelSpec::parse(l)).collect::<Result<_, _>>().map_err(|e| Failure(3, e.into()))?
    };
    let names: Vec<String> = specs.iter().map(|l| l.name.clone()).collect();
    let host_labels: Vec<String> = specs.iter().filter(|l| l.scheme == LabelScheme::Host).map(|l| l.name.clone()).collect();
    let client = ForgejoClient::builder(&file.address).build().map_err(|e| Failure(3, e.into()))?.with_credentials(file.credentials());
    let queue: Arc<dyn JobQueue> = match &config.queue.url {
        Some(url) => Arc::new(AmqpQueue::connect(url).await.context("could not connect to RabbitMQ").map_err(|e| Failure(1, e))?),
        None => Arc::new(MemoryQueue::new()),
    };
    let engine = if config.engine.enabled {
        let machines = machines(&config, &specs, host_labels).await.map_err(|e| Failure(3, e))?;
        let engine = Engine::builder()
            .hypervisor(machines.hypervisor)
            .executor(machines.executor)
            .capacity(config.runner.capacity)
            .name(config.engine.name.clone())
            .build()
            .map_err(|e| Failure(3, e.into()))?;
        Some((engine, names.clone()))
    } else {
        None
    };
    // The engine's metrics; without an engine only the forge API errors count.
    let metrics = engine.as_ref().map_or_else(EngineMetrics::new, |(engine, _)| engine.metrics().clone());
    let source = ForgejoSource::builder(client)
        .labels(names)
        .runner_name(file.name.clone())
        .capacity(config.runner.capacity)
        .fetch_interval(seconds(config.runner.fetch_interval))
        .fetch_timeout(seconds(config.runner.fetch_timeout))
        .report_interval(seconds(config.runner.report_interval))
        .metrics(metrics.clone())
        .build()
        .map_err(|e| Failure(3, e.into()))?;
    let endpoint = MetricsEndpoint::start(&config.metrics.listen, metrics).await.map_err(|e| Failure(3, e.into()))?;
    let service = Service { source, queue, engine, grace: seconds(config.runner.shutdown_grace) };
    let (shutdown, abort) = (CancellationToken::new(), CancellationToken::new());
    shutdown_signal(shutdown.clone(), abort.clone());
    tracing::info!(runner = %file.name, uuid = %file.uuid, instance = %file.address, "polling for jobs");
    let result = solstice_forgejo::run_service(service, shutdown, abort).await.map_err(|e| {
        let code = if matches!(&e, DaemonError::Declare(f) if f.is_auth()) { 4 } else { 1 };
        Failure(code, e.into())
    });
    if let Some(endpoint) = endpoint {
        endpoint.stop().await;
    }
    result
}

/// The host for `name:host` labels, QEMU VMs for `name:vm[:image]` labels.
async fn machines(config: &RunnerConfig, specs: &[LabelSpec], host_labels: Vec<String>) -> anyhow::Result<Machines> {
    let cache = config.engine.cache_dir.clone().unwrap_or_else(solstice_config::default_cache_dir);
    let catalog = config.engine.image_catalog.as_deref().map(ImageCatalog::load).transpose()?.unwrap_or_default();
    let mut setup = MachineSetup::new(cache).catalog(catalog);
    if let Some(dir) = &config.engine.work_dir {
        setup = setup.host_dir(dir);
    }
    for label in host_labels {
        setup = setup.host_label(label);
    }
    for spec in specs {
        if let LabelScheme::Vm(image) = &spec.scheme {
            setup = setup.vm_label(spec.name.clone(), image.clone().unwrap_or_else(|| spec.name.clone()));
        }
    }
    let machines = setup.build().await.context("could not set up the machines for the labels")?;
    Ok(machines)
}

/// Fires `first` on the first SIGINT/SIGTERM and `second` on the next one; returns `first`.
fn shutdown_signal(first: CancellationToken, second: CancellationToken) -> CancellationToken {
    let token = first.clone();
    tokio::spawn(async move {
        for token in [first, second] {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                let Ok(mut term) = signal(SignalKind::terminate()) else { return };
                tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
            tracing::warn!("signal received; stopping (send another to cancel running jobs)");
            token.cancel();
        }
    });
    token
}

/// The TOML file (if any) with `SOLSTICE_FORGEJO__SECTION__KEY` overrides applied.
fn load_config(path: Option<&Path>) -> anyhow::Result<RunnerConfig> {
    let mut table: toml::Table = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("could not read {}", path.display()))?;
            // The file alone first, through the shared loader, so that a mistake in it is
            // reported at its file:line:column (as `solstice config check` does).
            solstice_config::parse::<RunnerConfig>(&text, &path.display().to_string())?;
            toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?
        }
        None => toml::Table::new(),
    };
    let mut applied = Vec::new();
    for (name, value) in std::env::vars() {
        let Some(key) = name.strip_prefix("SOLSTICE_FORGEJO__") else { continue };
        let Some((section, field)) = key.to_lowercase().split_once("__").map(|(s, f)| (s.to_owned(), f.to_owned())) else { continue };
        let parsed = toml::from_str::<toml::Table>(&format!("v = {value}")).ok().and_then(|mut t| t.remove("v"));
        let entry = table.entry(section).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(section) = entry {
            section.insert(field, parsed.unwrap_or(toml::Value::String(value)));
            applied.push(name);
        }
    }
    // The file alone was fine (checked above), so a mistake now is in an override:
    // name them, since the error itself only knows the key.
    applied.sort();
    toml::Value::Table(table).try_into().with_context(|| match applied.as_slice() {
        [] => "invalid configuration".to_owned(),
        names => format!("invalid configuration from the environment ({})", names.join(", ")),
    })
}
