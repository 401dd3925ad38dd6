//! The runner service's configuration, as plain data (TOML in the binary).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The whole configuration file of `solstice-forgejo-runner`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunnerConfig {
    /// `[runner]`: identity file, polling and reporting.
    pub runner: RunnerSection,
    /// `[queue]`: where jobs go.
    pub queue: QueueSection,
    /// `[engine]`: the in-process orchestrator.
    pub engine: EngineSection,
    /// `[metrics]`: the `/metrics` and `/healthz` endpoint.
    pub metrics: MetricsSection,
}

/// `[runner]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunnerSection {
    /// The runner file written by `register`. Default: `.runner`.
    pub file: PathBuf,
    /// Tasks run at once. Default: 1.
    pub capacity: usize,
    /// Seconds between two `FetchTask` calls. Default: 2.
    pub fetch_interval: f64,
    /// Deadline of one `FetchTask`, in seconds. Default: 5.
    pub fetch_timeout: f64,
    /// Seconds between two reports of a running task. Default: 1.
    pub report_interval: f64,
    /// Label specs that replace those of the runner file (`name[:vm[:image]]`,
    /// `name:host`). Default: none (use the runner file's).
    pub labels: Vec<String>,
    /// Seconds running tasks get to finish and be reported at shutdown. Default: 300.
    pub shutdown_grace: f64,
}

impl Default for RunnerSection {
    fn default() -> Self {
        Self {
            file: PathBuf::from(".runner"),
            capacity: 1,
            fetch_interval: 2.0,
            fetch_timeout: 5.0,
            report_interval: 1.0,
            labels: Vec::new(),
            shutdown_grace: 300.0,
        }
    }
}

/// `[queue]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSection {
    /// A RabbitMQ URL (`amqp://…`); none means the in-process queue. Default: none.
    pub url: Option<String>,
}

/// `[engine]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    /// Run jobs in this process (all-in-one). Turn off when orchestrators consume a
    /// RabbitMQ queue elsewhere. Default: true.
    pub enabled: bool,
    /// The name the engine reports. Default: `forgejo-runner`.
    pub name: String,
    /// Where host jobs get their workspaces. Default: the system temporary directory.
    pub work_dir: Option<PathBuf>,
    /// The image catalog (TOML, see docs/images.md) for `name:vm[:image]` labels. The
    /// image `tiny-linux` (a small Linux guest built from the host's Debian packages)
    /// needs none. Default: none.
    pub image_catalog: Option<PathBuf>,
    /// Where images, the test guest and the KVM verdict are cached. Default:
    /// `~/.cache/solstice`.
    pub cache_dir: Option<PathBuf>,
}

impl Default for EngineSection {
    fn default() -> Self {
        Self { enabled: true, name: "forgejo-runner".to_owned(), work_dir: None, image_catalog: None, cache_dir: None }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Where `/metrics` (Prometheus text) and `/healthz` are served; empty: nowhere.
    /// Default: `127.0.0.1:9465` (the orchestrator's default is 9464, the GitHub
    /// runner's 9466, so all three fit on one host).
    pub listen: String,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self { listen: "127.0.0.1:9465".to_owned() }
    }
}

/// A number of seconds from the configuration as a duration (negative or invalid → 0).
pub fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_what_the_file_leaves_out_and_unknown_keys_are_refused() {
        let config: RunnerConfig = serde_json::from_str(r#"{"runner":{"capacity":3}}"#).expect("valid");
        assert_eq!(config.runner.capacity, 3);
        assert_eq!(config.runner.file, PathBuf::from(".runner"));
        assert!(config.engine.enabled);
        assert_eq!(config.metrics.listen, "127.0.0.1:9465");
        let off: RunnerConfig = serde_json::from_str(r#"{"metrics":{"listen":""}}"#).expect("valid");
        assert_eq!(off.metrics.listen, "");
        let err = serde_json::from_str::<RunnerConfig>(r#"{"runner":{"capacty":3}}"#).expect_err("typo refused");
        assert!(err.to_string().contains("capacty"), "{err}");
    }

    #[test]
    fn the_deployment_example_parses_into_the_real_type() {
        let text = include_str!("../../docs/deploy/forgejo-runner.toml");
        let config: RunnerConfig = toml::from_str(text).expect("docs/deploy/forgejo-runner.toml is a valid RunnerConfig");
        assert_eq!(config.runner.file, PathBuf::from("/var/lib/solstice/forgejo/.runner"));
        assert_eq!(config.engine.image_catalog, Some(PathBuf::from("/etc/solstice/images.toml")));
        assert_eq!(config.metrics, MetricsSection::default());
    }
}
