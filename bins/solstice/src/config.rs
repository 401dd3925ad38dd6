//! `solstice.toml`, the configuration of `solstice serve`, and `solstice config check`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Subcommand, ValueEnum};
use serde::Deserialize;
use solstice_config::{
    BadValue, DebugSshConfig, EnvOverride, GithubRunnerConfig, MetricsConfig, OrchestratorConfig, QueueConfig, StoreConfig,
    VmLimitsConfig, load, parse,
};
use solstice_forgejo::{LabelSpec, RunnerConfig, RunnerSection};

/// `solstice.toml`: an orchestrator (the keys of `solstice-orchestrator`'s file, except
/// `[queue]`: the queue is in-process) plus the runner services to run with it.
/// [`ServeConfig::orchestrator`] is that orchestrator part, which `solstice_orchestrator`
/// composes as it does for `solstice-orchestrator`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// The name recorded as the owner of the jobs. Default: the host name.
    pub name: String,
    /// Jobs run at once, whichever forge they come from. Default: 1.
    pub capacity: usize,
    /// Labels whose jobs run on this host, without a VM. Default: none.
    pub host_labels: Vec<String>,
    /// Labels whose jobs run in fresh QEMU VMs, each mapped to an image. Default: none.
    pub vm_images: BTreeMap<String, String>,
    /// The image catalog (TOML, see docs/images.md). Default: none.
    pub image_catalog: Option<PathBuf>,
    /// Where images, the test guest and the KVM verdict are cached. Default:
    /// `~/.cache/solstice`.
    pub cache_dir: Option<PathBuf>,
    /// Seconds running jobs get to finish after SIGTERM before they are cancelled.
    /// Default: 600.
    pub shutdown_grace_seconds: u64,
    /// The job state store.
    pub store: StoreConfig,
    /// The `/metrics` and `/healthz` endpoint.
    pub metrics: MetricsConfig,
    /// `[vm_limits]`: how much of this host the VMs may use at once.
    pub vm_limits: VmLimitsConfig,
    /// `[debug_ssh]`: where machines of failed jobs that opted in stay reachable, as in
    /// the orchestrator's file. Default: off.
    pub debug_ssh: DebugSshConfig,
    /// `[forgejo]`: a Forgejo runner in this process. Default: none.
    pub forgejo: Option<RunnerSection>,
    /// `[github]`: a GitHub runner in this process. Default: none.
    pub github: Option<GithubSection>,
}

/// `[github]` of `solstice.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GithubSection {
    /// The directory of the credential files written by
    /// `solstice-github-runner register`. Default: the current directory.
    pub dir: PathBuf,
    /// The queue routes of GitHub jobs this process runs (a job's route is its first
    /// `runs-on` label that is not `self-hosted` or an OS/architecture). Labels in
    /// `vm_images` run in VMs, the others on this host. Default: `["host"]`.
    pub labels: Vec<String>,
}

impl Default for GithubSection {
    fn default() -> Self {
        Self { dir: PathBuf::from("."), labels: vec!["host".to_owned()] }
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        let orchestrator = OrchestratorConfig::default();
        Self {
            name: orchestrator.name,
            capacity: orchestrator.capacity,
            host_labels: orchestrator.host_labels,
            vm_images: orchestrator.vm_images,
            image_catalog: orchestrator.image_catalog,
            cache_dir: orchestrator.cache_dir,
            shutdown_grace_seconds: orchestrator.shutdown_grace_seconds,
            store: orchestrator.store,
            metrics: orchestrator.metrics,
            vm_limits: orchestrator.vm_limits,
            debug_ssh: orchestrator.debug_ssh,
            forgejo: None,
            github: None,
        }
    }
}

/// The environment variables that override `solstice.toml`.
pub const SERVE_ENV: &[EnvOverride] = &[
    EnvOverride::text("SOLSTICE_NAME", "name"),
    EnvOverride::toml("SOLSTICE_CAPACITY", "capacity"),
    EnvOverride::list("SOLSTICE_HOST_LABELS", "host_labels"),
    EnvOverride::text("SOLSTICE_STORE_URL", "store.url"),
    EnvOverride::text("SOLSTICE_METRICS_LISTEN", "metrics.listen"),
    EnvOverride::toml("SOLSTICE_SHUTDOWN_GRACE_SECONDS", "shutdown_grace_seconds"),
    EnvOverride::text("SOLSTICE_FORGEJO_RUNNER_FILE", "forgejo.file"),
    EnvOverride::text("SOLSTICE_GITHUB_DIR", "github.dir"),
];

impl ServeConfig {
    /// The orchestrator part, on the in-process queue.
    pub fn orchestrator(&self) -> OrchestratorConfig {
        OrchestratorConfig {
            name: self.name.clone(),
            capacity: self.capacity,
            host_labels: self.host_labels.clone(),
            vm_images: self.vm_images.clone(),
            image_catalog: self.image_catalog.clone(),
            cache_dir: self.cache_dir.clone(),
            queue: QueueConfig::default(),
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            shutdown_grace_seconds: self.shutdown_grace_seconds,
            // One process on the in-process queue: no other orchestrator could take a
            // job over, so the lease only matters to a restart of this one.
            claim_lease_seconds: OrchestratorConfig::default().claim_lease_seconds,
            debug_ssh: self.debug_ssh.clone(),
            vm_limits: self.vm_limits,
        }
    }

    /// Checks what the schema cannot; keys shared with the orchestrator are checked the
    /// same way.
    pub fn check(&self) -> Result<(), BadValue> {
        self.orchestrator().check()?;
        if self.forgejo.is_none() && self.github.is_none() {
            return Err(BadValue::new("forgejo", "serve needs a [forgejo] or a [github] section: no job would ever arrive"));
        }
        if let Some(forgejo) = &self.forgejo {
            if forgejo.capacity == 0 {
                return Err(BadValue::new("forgejo.capacity", "must be at least 1"));
            }
            for spec in &forgejo.labels {
                LabelSpec::parse(spec).map_err(|e| BadValue::new("forgejo.labels", e.to_string()))?;
            }
        }
        if let Some(github) = &self.github
            && github.labels.is_empty()
        {
            return Err(BadValue::new("github.labels", "is empty: GitHub jobs would have nowhere to run"));
        }
        Ok(())
    }
}

/// Loads `solstice.toml` (if any) with the [`SERVE_ENV`] overrides and checks it.
pub fn load_serve(path: Option<&Path>) -> Result<ServeConfig, solstice_config::ConfigError> {
    let mut config = load::<ServeConfig>(path, SERVE_ENV, |name| std::env::var(name).ok())?.check(ServeConfig::check)?.into_value();
    if config.name.is_empty() {
        config.name = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "solstice".into());
    }
    Ok(config)
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file and say what is wrong and where (file:line:column).
    /// Environment overrides are not applied: this checks the file alone.
    Check {
        /// The file: `solstice.toml`, an orchestrator, a Forgejo runner or a GitHub runner
        /// configuration.
        file: PathBuf,
        /// What the file configures. Default: guessed from its keys (`[queue]`: the
        /// orchestrator, `[runner]`: the Forgejo runner, a top-level `dir`, `labels`,
        /// `queue_url`, `engine` or `metrics_listen`: the GitHub runner, else `solstice serve`).
        #[arg(long, value_enum)]
        kind: Option<Kind>,
    },
}

/// The configuration files `config check` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// `solstice.toml`, for `solstice serve`.
    Serve,
    /// `solstice-orchestrator`'s file.
    Orchestrator,
    /// `solstice-forgejo-runner`'s file.
    ForgejoRunner,
    /// `solstice-github-runner`'s file.
    GithubRunner,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::Serve => "`solstice serve` configuration",
            Kind::Orchestrator => "`solstice-orchestrator` configuration",
            Kind::ForgejoRunner => "`solstice-forgejo-runner` configuration",
            Kind::GithubRunner => "`solstice-github-runner` configuration",
        }
    }

    /// Guesses from the top-level keys; a file that is not TOML is checked as
    /// `solstice.toml`, which reports where the syntax breaks.
    ///
    /// A GitHub runner file is one with a top-level `dir`, `labels`, `queue_url`,
    /// `metrics_listen`, or an `engine` that is not a table, and no `[runner]`, `[queue]`,
    /// `[forgejo]` or `[github]`. None of those keys is a top-level key of the other three
    /// kinds (they are `[github] dir`, `[github] labels`, `[runner] labels`, `host_labels`,
    /// `[queue] url`, `[metrics] listen`; the Forgejo runner's `[engine]` is a table), and
    /// those tables are not keys of a GitHub runner file, so no valid file of another kind
    /// is taken for one; a file with both is guessed as the other kind, which then names
    /// the stray key. A GitHub runner file with none of those keys (only `capacity` or
    /// `[vm_images]`, say) is guessed as `solstice.toml`: pass `--kind github-runner`.
    fn guess(text: &str) -> Self {
        let table: toml::Table = toml::from_str(text).unwrap_or_default();
        let github_runner = ["dir", "labels", "queue_url", "metrics_listen"].iter().any(|key| table.contains_key(*key))
            || table.get("engine").is_some_and(|engine| !engine.is_table());
        if table.contains_key("runner") {
            Kind::ForgejoRunner
        } else if table.contains_key("queue") {
            Kind::Orchestrator
        } else if github_runner && !table.contains_key("forgejo") && !table.contains_key("github") {
            Kind::GithubRunner
        } else {
            Kind::Serve
        }
    }
}

pub fn run(command: ConfigCommand) -> anyhow::Result<()> {
    let ConfigCommand::Check { file, kind } = command;
    let name = file.display().to_string();
    let text = std::fs::read_to_string(&file).map_err(|source| solstice_config::ConfigError::Read { path: name.clone(), source })?;
    let kind = kind.unwrap_or_else(|| Kind::guess(&text));
    match kind {
        Kind::Serve => check::<ServeConfig>(&text, &name, ServeConfig::check)?,
        Kind::Orchestrator => check::<OrchestratorConfig>(&text, &name, OrchestratorConfig::check)?,
        Kind::ForgejoRunner => check::<RunnerConfig>(&text, &name, check_forgejo_runner)?,
        Kind::GithubRunner => check::<GithubRunnerConfig>(&text, &name, GithubRunnerConfig::check)?,
    }
    println!("{name}: a valid {}", kind.describe());
    Ok(())
}

/// The `[store] url` of `solstice.toml` or of an orchestrator's file (checked as
/// `config check` would).
pub fn store_url_of(path: &Path) -> anyhow::Result<String> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| solstice_config::ConfigError::Read { path: name.clone(), source })?;
    match Kind::guess(&text) {
        Kind::Serve => Ok(parse::<ServeConfig>(&text, &name)?.check(ServeConfig::check)?.into_value().store.url),
        Kind::Orchestrator => {
            Ok(parse::<OrchestratorConfig>(&text, &name)?.check(OrchestratorConfig::check)?.into_value().store.url)
        }
        Kind::ForgejoRunner => anyhow::bail!("{name} configures a Forgejo runner, which has no state store"),
        Kind::GithubRunner => anyhow::bail!("{name} configures a GitHub runner, which has no state store"),
    }
}

fn check<T: serde::de::DeserializeOwned>(
    text: &str,
    name: &str,
    check: impl FnOnce(&T) -> Result<(), BadValue>,
) -> Result<(), solstice_config::ConfigError> {
    parse::<T>(text, name)?.check(check).map(drop)
}

fn check_forgejo_runner(config: &RunnerConfig) -> Result<(), BadValue> {
    if config.runner.capacity == 0 {
        return Err(BadValue::new("runner.capacity", "must be at least 1"));
    }
    for spec in &config.runner.labels {
        LabelSpec::parse(spec).map_err(|e| BadValue::new("runner.labels", e.to_string()))?;
    }
    if let Some(url) = &config.queue.url
        && !url.starts_with("amqp://")
        && !url.starts_with("amqps://")
    {
        return Err(BadValue::new("queue.url", format!("`{url}` is not an amqp:// URL")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deployment_example_parses_into_the_real_type_and_passes_the_checks() {
        let text = include_str!("../../../docs/deploy/solstice.toml");
        let config = parse::<ServeConfig>(text, "docs/deploy/solstice.toml")
            .and_then(|c| c.check(ServeConfig::check))
            .unwrap_or_else(|e| panic!("{e}"))
            .into_value();
        let forgejo = config.forgejo.expect("the example configures Forgejo");
        assert_eq!(forgejo.file, PathBuf::from("/var/lib/solstice/forgejo/.runner"));
        assert_eq!(config.github.expect("and GitHub").dir, PathBuf::from("/var/lib/solstice/github"));
        assert_eq!(config.store.url, "sqlite:///var/lib/solstice/state.db");
        assert_eq!(config.vm_images.get("omnios").map(String::as_str), Some("omnios-r151054"));
    }

    /// The `toml` blocks of the pages that show `solstice.toml` are valid `solstice.toml`s.
    #[test]
    fn the_toml_snippets_of_the_getting_started_and_operator_pages_are_serve_configurations() {
        let pages = [
            ("docs/getting-started.md", include_str!("../../../docs/getting-started.md")),
            ("docs/operator-guide.md", include_str!("../../../docs/operator-guide.md")),
        ];
        let mut checked = 0;
        for (page, text) in pages {
            let mut block: Option<(usize, String)> = None;
            for (n, line) in text.lines().enumerate() {
                match &mut block {
                    None if line.trim_start().starts_with("```toml") => block = Some((n + 1, String::new())),
                    None => {}
                    Some((start, body)) if line.trim_start().starts_with("```") => {
                        let name = format!("{page} (block at line {start})");
                        parse::<ServeConfig>(body, &name)
                            .and_then(|c| c.check(ServeConfig::check))
                            .unwrap_or_else(|e| panic!("{e}"));
                        checked += 1;
                        block = None;
                    }
                    Some((_, body)) => {
                        body.push_str(line);
                        body.push('\n');
                    }
                }
            }
        }
        assert!(checked >= 1, "no toml block found: did the pages change?");
    }

    #[test]
    fn a_runner_section_alone_is_enough() {
        let config = parse::<ServeConfig>("[forgejo]\n", "s.toml").expect("parses").check(ServeConfig::check).expect("valid");
        assert_eq!(config.value().forgejo.as_ref().map(|f| f.capacity), Some(1));
        assert_eq!(config.value().store.url, "sqlite://solstice-state.db");
        let err = parse::<ServeConfig>("capacity = 2\n", "s.toml").expect("parses").check(ServeConfig::check).expect_err("no source");
        assert!(err.to_string().contains("[forgejo] or a [github] section"), "{err}");
    }

    #[test]
    fn kinds_are_guessed_from_the_tables() {
        assert_eq!(Kind::guess("[runner]\ncapacity = 1\n"), Kind::ForgejoRunner);
        assert_eq!(Kind::guess("[queue]\nurl = \"memory\"\n"), Kind::Orchestrator);
        assert_eq!(Kind::guess("[forgejo]\n"), Kind::Serve);
        assert_eq!(Kind::guess("not toml ["), Kind::Serve);
        assert_eq!(Kind::guess("engine = false\nqueue_url = \"amqp://x\"\n"), Kind::GithubRunner);
        assert_eq!(Kind::guess("capacity = 2\nlabels = [\"host\"]\n"), Kind::GithubRunner);
        // The Forgejo runner's `[engine]` is a table, not the GitHub runner's switch.
        assert_eq!(Kind::guess("[engine]\nenabled = false\n"), Kind::Serve);
        // A runner's keys next to another kind's tables: that kind, which names the stray key.
        assert_eq!(Kind::guess("dir = \"/srv\"\n[github]\n"), Kind::Serve);
        assert_eq!(Kind::guess("labels = [\"host\"]\n[runner]\n"), Kind::ForgejoRunner);
        assert_eq!(Kind::guess("queue_url = \"amqp://x\"\n[queue]\n"), Kind::Orchestrator);
    }

    /// Every example file of the repository is guessed as what it configures.
    #[test]
    fn the_example_files_are_guessed_as_their_kind() {
        for (file, text, kind) in [
            ("docs/deploy/solstice.toml", include_str!("../../../docs/deploy/solstice.toml"), Kind::Serve),
            (
                "orchestrator.example.toml",
                include_str!("../../solstice-orchestrator/orchestrator.example.toml"),
                Kind::Orchestrator,
            ),
            ("docs/deploy/forgejo-runner.toml", include_str!("../../../docs/deploy/forgejo-runner.toml"), Kind::ForgejoRunner),
            ("docs/deploy/github-runner.toml", include_str!("../../../docs/deploy/github-runner.toml"), Kind::GithubRunner),
        ] {
            assert_eq!(Kind::guess(text), kind, "{file}");
        }
    }
}
