//! One configuration for every Solstice CI program: [`ServiceConfig`], the sections
//! each [`Program`] reads, and the environment variables that override its keys.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{BadValue, ConfigError, EnvOverride, LogFormat, Loaded, load, parse};

/// The configuration file of every Solstice CI program (`--config`, or
/// `SOLSTICE_CONFIG`). Every key has a default, so an empty file is valid wherever the
/// program needs nothing more; [`Program::check`] says what each program needs and
/// refuses what it does not read. docs/operator-guide.md ("Configuration") lists every
/// key with its default and variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// The name this process records as the owner of the jobs it claims, and gives its
    /// connections. Default: empty, which [`Program::load`] replaces with the host name
    /// (`$HOSTNAME`), else the program's name.
    pub name: String,
    /// Jobs run at once (the engine's); for a runner without an engine, the tasks taken
    /// at once. Default: 1.
    pub capacity: usize,
    /// After the first SIGTERM or SIGINT, how long running jobs may still finish before
    /// they are cancelled. Default: `"10m"`.
    #[serde(with = "crate::duration")]
    pub shutdown_grace: Duration,
    /// `[log]`: diagnostics.
    pub log: LogConfig,
    /// `[queue]`: where jobs travel between the runners and the engines.
    pub queue: QueueConfig,
    /// `[store]`: the job state store (the orchestrator and `solstice serve`).
    pub store: StoreConfig,
    /// `[engine]`: the engine that runs jobs in this process, and its machines.
    pub engine: EngineConfig,
    /// `[vm_limits]`: how much of this host the VMs may use at once.
    pub vm_limits: VmLimitsConfig,
    /// `[debug_ssh]`: SSH into the machines of failed jobs that opt in (the orchestrator
    /// and `solstice serve`). Default: off.
    pub debug_ssh: DebugSshConfig,
    /// `[metrics]`: the `/metrics` and `/healthz` endpoint.
    pub metrics: MetricsConfig,
    /// `[forgejo]`: a Forgejo runner (`solstice-forgejo-runner`, `solstice serve`).
    /// Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forgejo: Option<ForgejoConfig>,
    /// `[github]`: a GitHub runner (`solstice-github-runner`, `solstice serve`).
    /// Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub github: Option<GithubConfig>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            capacity: 1,
            shutdown_grace: Duration::from_secs(600),
            log: LogConfig::default(),
            queue: QueueConfig::default(),
            store: StoreConfig::default(),
            engine: EngineConfig::default(),
            vm_limits: VmLimitsConfig::default(),
            debug_ssh: DebugSshConfig::default(),
            metrics: MetricsConfig::default(),
            forgejo: None,
            github: None,
        }
    }
}

/// `[log]`: what is logged, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// An `EnvFilter` directive: `info`, `debug`, `solstice_core=debug,warn`. The
    /// programs' `--log` flag wins over it. Default: `info`.
    pub level: String,
    /// `text` for people, `json` (one object per line) for a log collector. The
    /// programs' `--log-format` flag wins over it. Default: `text`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".to_owned(), format: LogFormat::Text }
    }
}

/// `[queue]`: which queue jobs travel through.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Empty: the in-process queue (a runner and its engine in one process). An
    /// `amqp://user:pass@host:5672/vhost` or `amqps://…` URL: RabbitMQ, shared with
    /// orchestrators or runners on other hosts. `memory` is read as empty (an older
    /// spelling). Default: empty.
    pub url: String,
}

impl QueueConfig {
    /// Whether jobs stay in this process (no RabbitMQ).
    pub fn is_in_process(&self) -> bool {
        self.url.is_empty() || self.url == "memory"
    }
}

/// `[store]`: which state store to use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://PATH` or `postgres://user:pass@host/db`. Default:
    /// `sqlite://solstice-state.db` in the working directory.
    pub url: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { url: "sqlite://solstice-state.db".into() }
    }
}

/// `[engine]`: the engine of this process and the machines its jobs run in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Run jobs in this process. A runner turns it off when orchestrators elsewhere
    /// consume a RabbitMQ `[queue]`; the orchestrator and `solstice serve` need it.
    /// Default: true.
    pub enabled: bool,
    /// Labels whose jobs run directly on this host, without a VM (trusted jobs only).
    /// Default: none.
    pub host_labels: Vec<String>,
    /// Labels whose jobs run in fresh QEMU VMs, each mapped to an image of
    /// `image_catalog` (or `tiny-linux`, the small guest built from the host's Debian
    /// packages), e.g. `{ omnios = "omnios-r151056" }`. Default: none.
    pub vm_images: BTreeMap<String, String>,
    /// The image catalog (TOML, see docs/images.md). Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_catalog: Option<PathBuf>,
    /// Where images, the test guest and the KVM verdict are cached; machines keep their
    /// files in its `run` directory. Default: `~/.cache/solstice`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<PathBuf>,
    /// Where host jobs get their workspaces. Default: the system temporary directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work_dir: Option<PathBuf>,
    /// How long a claim on a job lasts unless renewed (every third of it while the job
    /// runs). A job whose orchestrator died is taken over by another once its claim
    /// expires; orchestrators' clocks must agree to well within it. Default: `"30s"`.
    #[serde(with = "crate::duration")]
    pub claim_lease: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            host_labels: Vec::new(),
            vm_images: BTreeMap::new(),
            image_catalog: None,
            cache_dir: None,
            work_dir: None,
            claim_lease: Duration::from_secs(30),
        }
    }
}

/// `[vm_limits]`: VMs at once, and memory and vCPUs for all of them together. A job
/// waits until its image's share is free; an image larger than a whole budget fails
/// at once with a message that says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VmLimitsConfig {
    /// VMs running at once. Default: 4.
    pub max_vms: usize,
    /// Memory of all VMs together, in MiB. Default: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u32>,
    /// vCPUs of all VMs together. Default: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
}

impl Default for VmLimitsConfig {
    fn default() -> Self {
        Self { max_vms: 4, memory_mib: None, vcpus: None }
    }
}

/// `[debug_ssh]`: where kept machines of failed, opted-in jobs are reachable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugSshConfig {
    /// The IP address forwards listen on (usually public; one port per kept machine,
    /// open only while it is kept). Empty disables debug SSH. Default: empty.
    pub listen: String,
    /// The host name printed in the `ssh` command. Default: empty, meaning `listen`.
    pub host: String,
    /// First port of the forwards' range. Default: 2200.
    pub first_port: u16,
    /// Last port of the range (inclusive). Default: 2299.
    pub last_port: u16,
    /// How long a failed job's machine is kept; not renewable. Default: `"30m"`.
    #[serde(with = "crate::duration")]
    pub ttl: Duration,
}

impl Default for DebugSshConfig {
    fn default() -> Self {
        Self { listen: String::new(), host: String::new(), first_port: 2200, last_port: 2299, ttl: Duration::from_secs(1800) }
    }
}

/// `[metrics]`: the HTTP endpoint for `/metrics` (Prometheus text) and `/healthz`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// The address to listen on; empty turns the endpoint off. Default: the program's
    /// ([`Program::default_metrics_listen`]: `127.0.0.1:9464` for the orchestrator and
    /// `solstice serve`, `:9465` for the Forgejo runner, `:9466` for the GitHub runner,
    /// so that all of them fit on one host). [`Program::load`] fills it in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

impl MetricsConfig {
    /// The address to serve on, if any (after [`Program::load`] filled in the default).
    pub fn listen(&self) -> &str {
        self.listen.as_deref().unwrap_or_default()
    }
}

/// `[forgejo]`: a Forgejo Actions runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForgejoConfig {
    /// The runner file `solstice-forgejo-runner register` writes. Default: `.runner`.
    pub file: PathBuf,
    /// Label specs that replace those of the runner file: `name` or `name:vm[:image]`
    /// (a VM of `image`, else of the image named like the label), `name:host` (this
    /// host). Default: none (the runner file's).
    pub labels: Vec<String>,
    /// The pause between two `FetchTask` calls. Default: `"2s"`.
    #[serde(with = "crate::duration")]
    pub fetch_interval: Duration,
    /// The deadline of one `FetchTask`. Default: `"5s"`.
    #[serde(with = "crate::duration")]
    pub fetch_timeout: Duration,
    /// The pause between two reports of a running task. Default: `"1s"`.
    #[serde(with = "crate::duration")]
    pub report_interval: Duration,
}

impl Default for ForgejoConfig {
    fn default() -> Self {
        Self {
            file: PathBuf::from(".runner"),
            labels: Vec::new(),
            fetch_interval: Duration::from_secs(2),
            fetch_timeout: Duration::from_secs(5),
            report_interval: Duration::from_secs(1),
        }
    }
}

/// `[github]`: a GitHub Actions self-hosted runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GithubConfig {
    /// The directory of the credential files `solstice-github-runner register` writes
    /// (the runner's `--dir` flag wins over it). Default: the current directory.
    pub dir: PathBuf,
    /// The queue routes of the GitHub jobs this process runs (a job's route is its
    /// first `runs-on` label that is not `self-hosted` or an OS or architecture).
    /// Labels in `[engine] vm_images` run in VMs, the others on this host.
    /// Default: `["host"]`.
    pub labels: Vec<String>,
}

impl Default for GithubConfig {
    fn default() -> Self {
        Self { dir: PathBuf::from("."), labels: vec!["host".to_owned()] }
    }
}

/// The environment variables that override the file, for every program. The rule:
/// `SOLSTICE_` and the key's path upper-cased, dots as underscores (`queue.url` →
/// `SOLSTICE_QUEUE_URL`, `engine.host_labels` → `SOLSTICE_ENGINE_HOST_LABELS`). Lists
/// are comma-separated (`host,linux`), maps TOML inline tables
/// (`{ omnios = "omnios-r151056" }`), durations as in the file (`30s`, `10m`, or
/// seconds), booleans `true`/`false`.
pub const SERVICE_ENV: &[EnvOverride] = &[
    EnvOverride::text("SOLSTICE_NAME", "name"),
    EnvOverride::toml("SOLSTICE_CAPACITY", "capacity"),
    EnvOverride::toml("SOLSTICE_SHUTDOWN_GRACE", "shutdown_grace"),
    EnvOverride::text("SOLSTICE_LOG_LEVEL", "log.level"),
    EnvOverride::text("SOLSTICE_LOG_FORMAT", "log.format"),
    EnvOverride::text("SOLSTICE_QUEUE_URL", "queue.url"),
    EnvOverride::text("SOLSTICE_STORE_URL", "store.url"),
    EnvOverride::toml("SOLSTICE_ENGINE_ENABLED", "engine.enabled"),
    EnvOverride::list("SOLSTICE_ENGINE_HOST_LABELS", "engine.host_labels"),
    EnvOverride::toml("SOLSTICE_ENGINE_VM_IMAGES", "engine.vm_images"),
    EnvOverride::text("SOLSTICE_ENGINE_IMAGE_CATALOG", "engine.image_catalog"),
    EnvOverride::text("SOLSTICE_ENGINE_CACHE_DIR", "engine.cache_dir"),
    EnvOverride::text("SOLSTICE_ENGINE_WORK_DIR", "engine.work_dir"),
    EnvOverride::toml("SOLSTICE_ENGINE_CLAIM_LEASE", "engine.claim_lease"),
    EnvOverride::toml("SOLSTICE_VM_LIMITS_MAX_VMS", "vm_limits.max_vms"),
    EnvOverride::toml("SOLSTICE_VM_LIMITS_MEMORY_MIB", "vm_limits.memory_mib"),
    EnvOverride::toml("SOLSTICE_VM_LIMITS_VCPUS", "vm_limits.vcpus"),
    EnvOverride::text("SOLSTICE_DEBUG_SSH_LISTEN", "debug_ssh.listen"),
    EnvOverride::text("SOLSTICE_DEBUG_SSH_HOST", "debug_ssh.host"),
    EnvOverride::toml("SOLSTICE_DEBUG_SSH_FIRST_PORT", "debug_ssh.first_port"),
    EnvOverride::toml("SOLSTICE_DEBUG_SSH_LAST_PORT", "debug_ssh.last_port"),
    EnvOverride::toml("SOLSTICE_DEBUG_SSH_TTL", "debug_ssh.ttl"),
    EnvOverride::text("SOLSTICE_METRICS_LISTEN", "metrics.listen"),
    EnvOverride::text("SOLSTICE_FORGEJO_FILE", "forgejo.file"),
    EnvOverride::list("SOLSTICE_FORGEJO_LABELS", "forgejo.labels"),
    EnvOverride::toml("SOLSTICE_FORGEJO_FETCH_INTERVAL", "forgejo.fetch_interval"),
    EnvOverride::toml("SOLSTICE_FORGEJO_FETCH_TIMEOUT", "forgejo.fetch_timeout"),
    EnvOverride::toml("SOLSTICE_FORGEJO_REPORT_INTERVAL", "forgejo.report_interval"),
    EnvOverride::text("SOLSTICE_GITHUB_DIR", "github.dir"),
    EnvOverride::list("SOLSTICE_GITHUB_LABELS", "github.labels"),
];

/// The programs that read a [`ServiceConfig`], each its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Program {
    /// `solstice-orchestrator`: jobs from RabbitMQ (or the in-process queue) into its
    /// engine, on the state store.
    Orchestrator,
    /// `solstice-forgejo-runner`: `[forgejo]`, with an engine or over RabbitMQ.
    ForgejoRunner,
    /// `solstice-github-runner`: `[github]`, with an engine or over RabbitMQ.
    GithubRunner,
    /// `solstice serve`: the runners of `[forgejo]` and `[github]` and an orchestrator in
    /// one process, on the in-process queue and the state store.
    Serve,
}

impl Program {
    /// Every program.
    pub const ALL: [Program; 4] = [Program::Orchestrator, Program::ForgejoRunner, Program::GithubRunner, Program::Serve];

    /// The program's name, as the user runs it.
    pub fn name(self) -> &'static str {
        match self {
            Program::Orchestrator => "solstice-orchestrator",
            Program::ForgejoRunner => "solstice-forgejo-runner",
            Program::GithubRunner => "solstice-github-runner",
            Program::Serve => "solstice serve",
        }
    }

    /// Where `/metrics` is served unless `[metrics] listen` says otherwise: a port each,
    /// so that all of them fit on one host.
    pub fn default_metrics_listen(self) -> &'static str {
        match self {
            Program::Orchestrator | Program::Serve => "127.0.0.1:9464",
            Program::ForgejoRunner => "127.0.0.1:9465",
            Program::GithubRunner => "127.0.0.1:9466",
        }
    }

    /// The programs that read `section` (a top-level table), for messages.
    fn readers_of(section: &str) -> &'static str {
        match section {
            "forgejo" => "solstice-forgejo-runner and `solstice serve`",
            "github" => "solstice-github-runner and `solstice serve`",
            _ => "solstice-orchestrator and `solstice serve`",
        }
    }

    /// Checks what the schema cannot, for this program: the values every program
    /// shares (capacity, URL schemes, addresses, ranges), then the sections it reads:
    /// the orchestrator refuses `[forgejo]`, `[github]` and `[engine] enabled = false`;
    /// a runner refuses the other forge's section and the sections of the state store;
    /// `solstice serve` needs `[forgejo]` or `[github]` and keeps its queue in-process;
    /// a runner without an engine needs a RabbitMQ `queue.url`.
    ///
    /// # Errors
    /// The first [`BadValue`]; [`Loaded::check`](crate::Loaded::check) places it.
    pub fn check(self, config: &ServiceConfig) -> Result<(), BadValue> {
        check_shared(config)?;
        let refuse = |section: &str| {
            BadValue::new(section, format!("[{section}] is read by {}, not by {}", Self::readers_of(section), self.name()))
        };
        match self {
            Program::Orchestrator => {
                if config.forgejo.is_some() {
                    return Err(refuse("forgejo"));
                }
                if config.github.is_some() {
                    return Err(refuse("github"));
                }
                if !config.engine.enabled {
                    return Err(BadValue::new("engine.enabled", "must be true: the orchestrator is an engine"));
                }
                if config.engine.host_labels.is_empty() && config.engine.vm_images.is_empty() {
                    return Err(BadValue::new(
                        "engine",
                        "serves no label: set engine.host_labels or engine.vm_images",
                    ));
                }
            }
            Program::ForgejoRunner | Program::GithubRunner => {
                let (other, present) =
                    if self == Program::ForgejoRunner { ("github", config.github.is_some()) } else { ("forgejo", config.forgejo.is_some()) };
                if present {
                    return Err(refuse(other));
                }
                if config.store != StoreConfig::default() {
                    return Err(refuse("store"));
                }
                if config.debug_ssh != DebugSshConfig::default() {
                    return Err(refuse("debug_ssh"));
                }
                if !config.engine.enabled && config.queue.is_in_process() {
                    return Err(BadValue::new(
                        "engine.enabled",
                        "is false but queue.url is not a RabbitMQ URL: no process would run the jobs (set queue.url to \
                         the RabbitMQ that orchestrators consume, or turn the engine on)",
                    ));
                }
                if self == Program::GithubRunner
                    && config.engine.enabled
                    && config.github.as_ref().is_some_and(|g| g.labels.is_empty())
                {
                    return Err(BadValue::new("github.labels", "is empty: the engine would serve no jobs"));
                }
            }
            Program::Serve => {
                if config.forgejo.is_none() && config.github.is_none() {
                    return Err(BadValue::new(
                        "forgejo",
                        "solstice serve needs a [forgejo] or a [github] section: no job would ever arrive",
                    ));
                }
                if !config.queue.is_in_process() {
                    return Err(BadValue::new(
                        "queue.url",
                        "solstice serve keeps its queue in-process: for RabbitMQ run solstice-orchestrator and the runners",
                    ));
                }
                if !config.engine.enabled {
                    return Err(BadValue::new("engine.enabled", "must be true: solstice serve runs the jobs itself"));
                }
                if let Some(github) = &config.github
                    && github.labels.is_empty()
                {
                    return Err(BadValue::new("github.labels", "is empty: GitHub jobs would have nowhere to run"));
                }
            }
        }
        Ok(())
    }

    /// Reads `path` (none: every key has its default), applies the [`SERVICE_ENV`]
    /// overrides that `env` returns, [checks](Program::check) the result and fills in the
    /// program's defaults ([`Program::resolve`]). Binaries pass
    /// `|name| std::env::var(name).ok()` as `env`; tests pass a map.
    ///
    /// # Errors
    /// [`ConfigError`]: placed at the file's line and column, or naming the variable.
    pub fn load(self, path: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Loaded<ServiceConfig>, ConfigError> {
        let hostname = env("HOSTNAME");
        let loaded = load::<ServiceConfig>(path, SERVICE_ENV, env)?.check(|c| self.check(c))?;
        Ok(loaded.map(|c| self.resolve(c, hostname)))
    }

    /// Checks a file's text alone (no environment), as `solstice config check` does.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] at the line and column of the first problem.
    pub fn parse(self, text: &str, name: &str) -> Result<Loaded<ServiceConfig>, ConfigError> {
        parse::<ServiceConfig>(text, name)?.check(|c| self.check(c))
    }

    /// Fills in what depends on the program: an empty `name` becomes `hostname` (if not
    /// empty), else the program's name; an unset `[metrics] listen` becomes
    /// [`Program::default_metrics_listen`]; the queue URL `memory` becomes empty.
    pub fn resolve(self, mut config: ServiceConfig, hostname: Option<String>) -> ServiceConfig {
        if config.name.is_empty() {
            config.name = hostname.filter(|h| !h.is_empty()).unwrap_or_else(|| self.name().replace(' ', "-"));
        }
        if config.metrics.listen.is_none() {
            config.metrics.listen = Some(self.default_metrics_listen().to_owned());
        }
        if config.queue.is_in_process() {
            config.queue.url.clear();
        }
        config
    }

    /// Guesses which program a file configures from its sections: `[forgejo]` and
    /// `[github]` both: `solstice serve`; one of them: that forge's runner; neither: the
    /// orchestrator. A text that is not TOML is guessed as the orchestrator's, whose
    /// check then says where the syntax breaks. `solstice serve` with one forge is
    /// guessed as that forge's runner: pass the program explicitly to check it as
    /// `serve`.
    pub fn guess(text: &str) -> Self {
        let table: toml::Table = toml::from_str(text).unwrap_or_default();
        match (table.contains_key("forgejo"), table.contains_key("github")) {
            (true, true) => Program::Serve,
            (true, false) => Program::ForgejoRunner,
            (false, true) => Program::GithubRunner,
            (false, false) => Program::Orchestrator,
        }
    }
}

/// The checks every program shares.
fn check_shared(config: &ServiceConfig) -> Result<(), BadValue> {
    if config.capacity == 0 {
        return Err(BadValue::new("capacity", "must be at least 1"));
    }
    let queue = &config.queue.url;
    if !config.queue.is_in_process() && !queue.starts_with("amqp://") && !queue.starts_with("amqps://") {
        return Err(BadValue::new(
            "queue.url",
            format!("`{queue}` must be empty (the in-process queue) or an amqp:// or amqps:// URL"),
        ));
    }
    let store = &config.store.url;
    if !["sqlite:", "postgres:", "postgresql:"].iter().any(|scheme| store.starts_with(scheme)) {
        return Err(BadValue::new("store.url", format!("`{store}` must be a sqlite:// or postgres:// URL")));
    }
    if let Some(listen) = &config.metrics.listen
        && !listen.is_empty()
        && listen.parse::<SocketAddr>().is_err()
    {
        return Err(BadValue::new("metrics.listen", format!("`{listen}` is not an address like 127.0.0.1:9464")));
    }
    if config.engine.claim_lease < Duration::from_secs(1) {
        return Err(BadValue::new("engine.claim_lease", "must be at least 1s"));
    }
    let debug = &config.debug_ssh;
    if !debug.listen.is_empty() {
        if debug.listen.parse::<IpAddr>().is_err() {
            return Err(BadValue::new("debug_ssh.listen", format!("`{}` is not an IP address like 203.0.113.10", debug.listen)));
        }
        if debug.first_port == 0 || debug.first_port > debug.last_port {
            return Err(BadValue::new("debug_ssh.last_port", "the range first_port..=last_port is empty"));
        }
        if debug.ttl < Duration::from_secs(1) {
            return Err(BadValue::new("debug_ssh.ttl", "must be at least 1s"));
        }
    }
    let limits = &config.vm_limits;
    if limits.max_vms == 0 {
        return Err(BadValue::new("vm_limits.max_vms", "must be at least 1"));
    }
    if limits.memory_mib == Some(0) {
        return Err(BadValue::new("vm_limits.memory_mib", "must be at least 1 (leave it out for no limit)"));
    }
    if limits.vcpus == Some(0) {
        return Err(BadValue::new("vm_limits.vcpus", "must be at least 1 (leave it out for no limit)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EnvValue, load_str};

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned())
    }

    fn check(program: Program, text: &str) -> Result<ServiceConfig, ConfigError> {
        program.parse(text, "s.toml").map(Loaded::into_value)
    }

    /// Every field set, every optional one present: written without `..Default::default()`
    /// so that a new field does not compile until it is added here (and so to the test
    /// below, which then asks for its variable).
    fn every_key_set() -> ServiceConfig {
        ServiceConfig {
            name: "n".into(),
            capacity: 1,
            shutdown_grace: Duration::from_secs(1),
            log: LogConfig { level: "info".into(), format: LogFormat::Json },
            queue: QueueConfig { url: "amqp://x".into() },
            store: StoreConfig { url: "sqlite://x".into() },
            engine: EngineConfig {
                enabled: true,
                host_labels: vec!["h".into()],
                vm_images: BTreeMap::from([("v".into(), "i".into())]),
                image_catalog: Some("c".into()),
                cache_dir: Some("d".into()),
                work_dir: Some("w".into()),
                claim_lease: Duration::from_secs(1),
            },
            vm_limits: VmLimitsConfig { max_vms: 1, memory_mib: Some(1), vcpus: Some(1) },
            debug_ssh: DebugSshConfig {
                listen: "127.0.0.1".into(),
                host: "h".into(),
                first_port: 1,
                last_port: 2,
                ttl: Duration::from_secs(1),
            },
            metrics: MetricsConfig { listen: Some(String::new()) },
            forgejo: Some(ForgejoConfig {
                file: "f".into(),
                labels: vec!["l".into()],
                fetch_interval: Duration::from_secs(1),
                fetch_timeout: Duration::from_secs(1),
                report_interval: Duration::from_secs(1),
            }),
            github: Some(GithubConfig { dir: "g".into(), labels: vec!["l".into()] }),
        }
    }

    /// The leaf keys of a table, dotted; a key that has a variable of its own (a map
    /// such as `engine.vm_images`) is a leaf too.
    fn leaves(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        for (key, value) in table {
            let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
            match value {
                toml::Value::Table(inner) if !SERVICE_ENV.iter().any(|o| o.key == path) => leaves(inner, &path, out),
                _ => out.push(path),
            }
        }
    }

    #[test]
    fn every_key_has_one_variable_named_by_the_rule() {
        for o in SERVICE_ENV {
            assert_eq!(o.var, format!("SOLSTICE_{}", o.key.to_uppercase().replace('.', "_")), "{o:?}");
        }
        let table = toml::Table::try_from(every_key_set()).expect("serializes");
        let mut keys = Vec::new();
        leaves(&table, "", &mut keys);
        assert!(keys.len() >= 30, "{keys:?}");
        for key in &keys {
            let mut entries = SERVICE_ENV.iter().filter(|o| o.key == *key);
            let entry = entries.next().unwrap_or_else(|| panic!("{key} has no environment variable"));
            assert!(entries.next().is_none(), "{key} has two variables");
            // Lists are comma-separated; maps, numbers, booleans and durations TOML.
            let (parents, last) = key.rsplit_once('.').map_or(("", key.as_str()), |(p, l)| (p, l));
            let parent = parents.split('.').filter(|p| !p.is_empty()).try_fold(&table, |t, k| t.get(k)?.as_table());
            match parent.and_then(|t| t.get(last)) {
                Some(toml::Value::Array(_)) => assert_eq!(entry.value, EnvValue::List, "{key}"),
                Some(toml::Value::String(_)) => {}
                Some(_) => assert_eq!(entry.value, EnvValue::Toml, "{key}"),
                None => panic!("{key} not found"),
            }
        }
        assert_eq!(keys.len(), SERVICE_ENV.len(), "a variable for a key that does not exist: {keys:?}");
    }

    #[test]
    fn defaults_are_documented_values_and_resolved_per_program() {
        let config = ServiceConfig::default();
        assert_eq!((config.capacity, config.shutdown_grace), (1, Duration::from_secs(600)));
        assert_eq!(config.engine.claim_lease, Duration::from_secs(30));
        assert_eq!(config.debug_ssh.ttl, Duration::from_secs(1800));
        assert_eq!(config.store.url, "sqlite://solstice-state.db");
        assert!(config.queue.is_in_process() && config.engine.enabled);
        for (program, port, name) in [
            (Program::Orchestrator, "9464", "solstice-orchestrator"),
            (Program::Serve, "9464", "solstice-serve"),
            (Program::ForgejoRunner, "9465", "solstice-forgejo-runner"),
            (Program::GithubRunner, "9466", "solstice-github-runner"),
        ] {
            let resolved = program.resolve(ServiceConfig::default(), None);
            assert_eq!(resolved.metrics.listen(), format!("127.0.0.1:{port}"));
            assert_eq!(resolved.name, name);
            assert_eq!(program.resolve(ServiceConfig::default(), Some("ci-1".into())).name, "ci-1");
        }
        let off = check(Program::ForgejoRunner, "[metrics]\nlisten = \"\"\n").expect("valid");
        assert_eq!(Program::ForgejoRunner.resolve(off, None).metrics.listen(), "");
        let memory = check(Program::Orchestrator, "[queue]\nurl = \"memory\"\n[engine]\nhost_labels = [\"h\"]\n").expect("alias");
        assert!(Program::Orchestrator.resolve(memory, None).queue.url.is_empty());
    }

    #[test]
    fn durations_read_units_or_seconds_and_bad_ones_are_placed() {
        let config = check(Program::ForgejoRunner, "shutdown_grace = \"1h30m\"\n[forgejo]\nfetch_interval = \"500ms\"\nfetch_timeout = 7\n")
            .expect("valid");
        assert_eq!(config.shutdown_grace, Duration::from_secs(5400));
        let forgejo = config.forgejo.expect("forgejo");
        assert_eq!((forgejo.fetch_interval, forgejo.fetch_timeout), (Duration::from_millis(500), Duration::from_secs(7)));
        let err = check(Program::ForgejoRunner, "[forgejo]\nfetch_interval = \"soon\"\n").expect_err("bad");
        assert!(err.to_string().starts_with("s.toml:2:18: `soon` is not a duration"), "{err}");
        let err = check(Program::ForgejoRunner, "shutdown_grace = -1\n").expect_err("negative");
        assert!(err.to_string().starts_with("s.toml:1:18: -1 is negative"), "{err}");
        let loaded = Program::GithubRunner.load(None, env(&[("SOLSTICE_SHUTDOWN_GRACE", "90"), ("SOLSTICE_ENGINE_CLAIM_LEASE", "1m")]));
        let config = loaded.expect("valid").into_value();
        assert_eq!((config.shutdown_grace, config.engine.claim_lease), (Duration::from_secs(90), Duration::from_secs(60)));
        let err = Program::GithubRunner.load(None, env(&[("SOLSTICE_SHUTDOWN_GRACE", "later")])).expect_err("bad");
        assert!(err.to_string().starts_with("environment variable SOLSTICE_SHUTDOWN_GRACE: `later` is not a duration"), "{err}");
    }

    #[test]
    fn environment_overrides_follow_the_rule() {
        let loaded = Program::ForgejoRunner.load(
            None,
            env(&[
                ("SOLSTICE_QUEUE_URL", "amqps://mq"),
                ("SOLSTICE_ENGINE_ENABLED", "false"),
                ("SOLSTICE_ENGINE_HOST_LABELS", " host, linux ,"),
                ("SOLSTICE_ENGINE_VM_IMAGES", "{ omnios = \"omnios-r151056\" }"),
                ("SOLSTICE_FORGEJO_FILE", "/srv/.runner"),
                ("SOLSTICE_LOG_FORMAT", "json"),
                ("HOSTNAME", "ci-7"),
            ]),
        );
        let config = loaded.expect("valid").into_value();
        assert_eq!(config.queue.url, "amqps://mq");
        assert!(!config.engine.enabled);
        assert_eq!(config.engine.host_labels, ["host", "linux"]);
        assert_eq!(config.engine.vm_images.get("omnios").map(String::as_str), Some("omnios-r151056"));
        assert_eq!(config.forgejo.map(|f| f.file), Some(PathBuf::from("/srv/.runner")));
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.name, "ci-7");
        let err = load_str::<ServiceConfig>("", "s.toml", SERVICE_ENV, env(&[("SOLSTICE_CAPACITY", "many")])).expect_err("nan");
        assert!(err.to_string().starts_with("environment variable SOLSTICE_CAPACITY: "), "{err}");
    }

    #[test]
    fn each_program_refuses_what_it_does_not_read_naming_who_does() {
        let cases = [
            (Program::Orchestrator, "[engine]\nhost_labels = [\"h\"]\n\n[forgejo]\n", "s.toml:4:1: forgejo: [forgejo] is read by solstice-forgejo-runner and `solstice serve`, not by solstice-orchestrator"),
            (Program::Orchestrator, "[engine]\nhost_labels = [\"h\"]\n[github]\n", "github: [github] is read by solstice-github-runner"),
            (Program::Orchestrator, "[engine]\nenabled = false\nhost_labels = [\"h\"]\n", "s.toml:2:11: engine.enabled: must be true"),
            (Program::Orchestrator, "capacity = 2\n", "engine: serves no label"),
            (Program::ForgejoRunner, "[github]\n", "github: [github] is read by solstice-github-runner and `solstice serve`, not by solstice-forgejo-runner"),
            (Program::GithubRunner, "[forgejo]\n", "forgejo: [forgejo] is read by solstice-forgejo-runner"),
            (Program::GithubRunner, "[store]\nurl = \"sqlite://x\"\n", "store: [store] is read by solstice-orchestrator"),
            (Program::ForgejoRunner, "[engine]\nenabled = false\n", "s.toml:2:11: engine.enabled: is false but queue.url is not a RabbitMQ URL"),
            (Program::GithubRunner, "[github]\nlabels = []\n", "s.toml:2:10: github.labels: is empty"),
            (Program::Serve, "capacity = 2\n", "forgejo: solstice serve needs a [forgejo] or a [github] section"),
            (Program::Serve, "[queue]\nurl = \"amqp://x\"\n[forgejo]\n", "s.toml:2:7: queue.url: solstice serve keeps its queue in-process"),
            (Program::Serve, "capacity = 0\n[forgejo]\n", "s.toml:1:12: capacity: must be at least 1"),
            (Program::Serve, "[forgejo]\n[metrics]\nlisten = \"anywhere\"\n", "s.toml:3:10: metrics.listen: `anywhere` is not an address"),
            (Program::Serve, "[forgejo]\n[debug_ssh]\nlisten = \"127.0.0.1\"\nfirst_port = 3000\nlast_port = 2999\n", "s.toml:5:13: debug_ssh.last_port: "),
            (Program::Serve, "[forgejo]\n[vm_limits]\nmemory_mib = 0\n", "s.toml:3:14: vm_limits.memory_mib: must be at least 1"),
            (Program::Serve, "[forgejo]\n[store]\nurl = \"mysql://x\"\n", "s.toml:3:7: store.url: "),
            (Program::GithubRunner, "[queue]\nurl = \"rabbitmq:5672\"\n", "s.toml:2:7: queue.url: `rabbitmq:5672` must be empty"),
            (Program::Orchestrator, "[engine]\nhost_labels = [\"h\"]\nclaim_lease = 0\n", "s.toml:3:15: engine.claim_lease: must be at least 1s"),
        ];
        for (program, text, expected) in cases {
            let err = check(program, text).expect_err(text);
            assert!(err.to_string().contains(expected), "{program:?} {text:?}: expected `{expected}`, got `{err}`");
        }
        for (program, text) in [
            (Program::ForgejoRunner, ""),
            (Program::GithubRunner, ""),
            (Program::ForgejoRunner, "[queue]\nurl = \"amqp://x\"\n[engine]\nenabled = false\n[forgejo]\n"),
            (Program::Serve, "[github]\n"),
            (Program::Orchestrator, "[engine]\nvm_images = { tiny = \"tiny-linux\" }\n[queue]\nurl = \"amqp://x\"\n"),
        ] {
            check(program, text).unwrap_or_else(|e| panic!("{program:?} {text:?}: {e}"));
        }
    }

    #[test]
    fn unknown_keys_and_old_spellings_are_refused_at_their_line() {
        let err = check(Program::Serve, "capacity = 2\n\n[forgejo]\ncapacty = 3\n").expect_err("typo");
        assert!(err.to_string().starts_with("s.toml:4:1: unknown field `capacty`"), "{err}");
        let err = check(Program::GithubRunner, "queue_url = \"amqp://x\"\n").expect_err("old key");
        assert!(err.to_string().starts_with("s.toml:1:1: unknown field `queue_url`"), "{err}");
    }

    #[test]
    fn files_are_guessed_by_their_forge_sections() {
        assert_eq!(Program::guess("[forgejo]\n[github]\n"), Program::Serve);
        assert_eq!(Program::guess("[forgejo]\n"), Program::ForgejoRunner);
        assert_eq!(Program::guess("[github]\nlabels = [\"host\"]\n"), Program::GithubRunner);
        assert_eq!(Program::guess("[queue]\nurl = \"amqp://x\"\n"), Program::Orchestrator);
        assert_eq!(Program::guess("not toml ["), Program::Orchestrator);
    }

    /// The example files of the repository are valid for their program and guessed as it.
    #[test]
    fn the_example_files_are_valid_for_their_program() {
        for (file, text, program) in [
            ("docs/deploy/solstice.toml", include_str!("../../docs/deploy/solstice.toml"), Program::Serve),
            ("orchestrator.example.toml", include_str!("../../bins/solstice-orchestrator/orchestrator.example.toml"), Program::Orchestrator),
            ("docs/deploy/forgejo-runner.toml", include_str!("../../docs/deploy/forgejo-runner.toml"), Program::ForgejoRunner),
            ("docs/deploy/github-runner.toml", include_str!("../../docs/deploy/github-runner.toml"), Program::GithubRunner),
        ] {
            assert_eq!(Program::guess(text), program, "{file}");
            program.parse(text, file).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
