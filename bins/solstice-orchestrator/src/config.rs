//! The orchestrator's configuration: a TOML file, then environment overrides.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Everything the orchestrator reads at start-up. Every field has a default, so an
/// empty file is valid (it serves `host` jobs from the in-process queue: useful only
/// for trying it out).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrchestratorConfig {
    /// The name recorded as the owner of the jobs it claims. Default: the host name.
    pub name: String,
    /// Jobs run at once. Default: 1.
    pub capacity: usize,
    /// Labels whose jobs run directly on this host, without a VM. Default: none.
    pub host_labels: Vec<String>,
    /// Labels whose jobs run in fresh QEMU VMs, each mapped to an image of
    /// `image_catalog` (or `tiny-linux`, the small guest built from the host's Debian
    /// packages). Default: none.
    pub vm_images: BTreeMap<String, String>,
    /// The image catalog (TOML, see docs/images.md). Default: none.
    pub image_catalog: Option<PathBuf>,
    /// Where images, the test guest and the KVM verdict are cached. Default:
    /// `~/.cache/solstice`.
    pub cache_dir: Option<PathBuf>,
    /// The job queue.
    pub queue: QueueConfig,
    /// The job state store.
    pub store: StoreConfig,
    /// The metrics and health endpoint.
    pub metrics: MetricsConfig,
    /// How long running jobs may take to finish after SIGTERM before they are cancelled,
    /// in seconds. Default: 600.
    pub shutdown_grace_seconds: u64,
}

/// Which queue to use.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// `memory` (in-process; only useful with a runner in the same process) or an
    /// `amqp://user:pass@host:5672/vhost` URL. Default: `memory`.
    pub url: String,
}

/// Which state store to use.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://PATH` or `postgres://user:pass@host/db`. Default:
    /// `sqlite://solstice-state.db` in the working directory.
    pub url: String,
}

/// The HTTP endpoint for `/metrics` and `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address to listen on; empty disables the endpoint. Default: `127.0.0.1:9464`.
    pub listen: String,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            name: std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "orchestrator".into()),
            capacity: 1,
            host_labels: Vec::new(),
            vm_images: BTreeMap::new(),
            image_catalog: None,
            cache_dir: None,
            queue: QueueConfig::default(),
            store: StoreConfig::default(),
            metrics: MetricsConfig::default(),
            shutdown_grace_seconds: 600,
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self { url: "memory".into() }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { url: "sqlite://solstice-state.db".into() }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { listen: "127.0.0.1:9464".into() }
    }
}

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("could not read {path}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// An environment override has a bad value.
    #[error("environment variable {name}: {message}")]
    Env {
        /// The variable.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range.
    #[error("{0}")]
    Value(String),
}

/// Line and column (1-based) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Parses a configuration text; `path` names it in errors.
pub fn parse(text: &str, path: &str) -> Result<OrchestratorConfig, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map_or((1, 1), |span| line_column(text, span.start));
        ConfigError::Invalid { path: path.to_owned(), line, column, message: e.message().to_owned() }
    })
}

/// Loads the file (if any), then applies `SOLSTICE_*` environment overrides, then checks it.
pub fn load(path: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<OrchestratorConfig, ConfigError> {
    let mut config = match path {
        Some(path) => {
            let display = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: display.clone(), source })?;
            parse(&text, &display)?
        }
        None => OrchestratorConfig::default(),
    };
    if let Some(v) = env("SOLSTICE_NAME") {
        config.name = v;
    }
    if let Some(v) = env("SOLSTICE_CAPACITY") {
        config.capacity = v
            .parse()
            .map_err(|_| ConfigError::Env { name: "SOLSTICE_CAPACITY", message: format!("`{v}` is not a number") })?;
    }
    if let Some(v) = env("SOLSTICE_QUEUE_URL") {
        config.queue.url = v;
    }
    if let Some(v) = env("SOLSTICE_STORE_URL") {
        config.store.url = v;
    }
    if let Some(v) = env("SOLSTICE_METRICS_LISTEN") {
        config.metrics.listen = v;
    }
    if let Some(v) = env("SOLSTICE_HOST_LABELS") {
        config.host_labels = v.split(',').map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
    }
    check(&config)?;
    Ok(config)
}

fn check(config: &OrchestratorConfig) -> Result<(), ConfigError> {
    if config.capacity == 0 {
        return Err(ConfigError::Value("capacity must be at least 1".into()));
    }
    if config.queue.url != "memory" && !config.queue.url.starts_with("amqp://") && !config.queue.url.starts_with("amqps://") {
        return Err(ConfigError::Value(format!("queue.url `{}` must be `memory` or an amqp:// URL", config.queue.url)));
    }
    if !config.metrics.listen.is_empty() && config.metrics.listen.parse::<SocketAddr>().is_err() {
        return Err(ConfigError::Value(format!("metrics.listen `{}` is not an address like 127.0.0.1:9464", config.metrics.listen)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let text = include_str!("../orchestrator.example.toml");
        let config = parse(text, "orchestrator.example.toml").expect("example parses");
        assert_eq!(config.capacity, 2);
        assert_eq!(config.host_labels, ["host"]);
        assert_eq!(config.vm_images.get("tiny").map(String::as_str), Some("tiny-linux"));
        assert!(config.queue.url.starts_with("amqp://"));
        check(&config).expect("example is valid");
    }

    #[test]
    fn errors_name_the_line_and_column() {
        let err = parse("capacity = 2\n\n[queue]\nurll = \"x\"\n", "o.toml").expect_err("unknown key");
        let text = err.to_string();
        assert!(text.starts_with("o.toml:4:1: "), "{text}");
        assert!(text.contains("unknown field `urll`"), "{text}");
    }

    #[test]
    fn environment_overrides_win_and_are_checked() {
        let env = |name: &str| match name {
            "SOLSTICE_CAPACITY" => Some("8".to_owned()),
            "SOLSTICE_QUEUE_URL" => Some("amqp://127.0.0.1".to_owned()),
            "SOLSTICE_HOST_LABELS" => Some("host, linux-host".to_owned()),
            _ => None,
        };
        let config = load(None, env).expect("load");
        assert_eq!((config.capacity, config.queue.url.as_str()), (8, "amqp://127.0.0.1"));
        assert_eq!(config.host_labels, ["host", "linux-host"]);
        let bad = load(None, |n| (n == "SOLSTICE_CAPACITY").then(|| "many".to_owned())).expect_err("bad number");
        assert!(bad.to_string().contains("SOLSTICE_CAPACITY"));
        let zero = load(None, |n| (n == "SOLSTICE_CAPACITY").then(|| "0".to_owned())).expect_err("zero");
        assert!(zero.to_string().contains("at least 1"));
    }
}
