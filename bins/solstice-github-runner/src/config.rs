//! The runner's TOML configuration with its environment overrides.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use serde::Deserialize;

use crate::Cli;

/// The TOML configuration; every key has a default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RunnerFileConfig {
    /// Directory of the credential files. Default: the current directory.
    pub(crate) dir: PathBuf,
    /// Queue routes the in-process engine serves. Default: `["host"]`.
    pub(crate) labels: Vec<String>,
    /// Jobs run at once. Default: 1.
    pub(crate) capacity: usize,
    /// Labels whose jobs run in fresh QEMU VMs, each mapped to an image of
    /// `image_catalog` (or `tiny-linux`, the small guest built from the host's Debian
    /// packages), e.g. `{ omnios = "omnios-r151056" }`. Labels not listed run on this
    /// host. Default: none.
    pub(crate) vm_images: BTreeMap<String, String>,
    /// The image catalog (TOML, see docs/images.md). Default: none.
    pub(crate) image_catalog: Option<PathBuf>,
    /// Where images, the test guest and the KVM verdict are cached. Default:
    /// `~/.cache/solstice`.
    pub(crate) cache_dir: Option<PathBuf>,
    /// A RabbitMQ URL (`amqp://…`) to hand jobs to orchestrators on other hosts; none
    /// means the in-process queue. Env `SOLSTICE_GITHUB_QUEUE_URL`. Default: none.
    pub(crate) queue_url: Option<String>,
    /// Run jobs in this process too. Turn off when orchestrators elsewhere consume the
    /// RabbitMQ queue. Default: true.
    pub(crate) engine: bool,
    /// Where `/metrics` (Prometheus text) and `/healthz` are served; empty: nowhere.
    /// Env `SOLSTICE_GITHUB_METRICS_LISTEN`. Default: `127.0.0.1:9466` (the
    /// orchestrator's default is 9464, the Forgejo runner's 9465).
    pub(crate) metrics_listen: String,
}

impl Default for RunnerFileConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("."),
            labels: vec!["host".into()],
            capacity: 1,
            vm_images: BTreeMap::new(),
            image_catalog: None,
            cache_dir: None,
            queue_url: None,
            engine: true,
            metrics_listen: "127.0.0.1:9466".to_owned(),
        }
    }
}

pub(crate) fn load_config(cli: &Cli) -> anyhow::Result<RunnerFileConfig> {
    let mut config = match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => RunnerFileConfig::default(),
    };
    if let Some(dir) = &cli.dir {
        config.dir = dir.clone();
    }
    if let Ok(url) = std::env::var("SOLSTICE_GITHUB_QUEUE_URL") {
        config.queue_url = Some(url).filter(|u| !u.is_empty());
    }
    if let Ok(listen) = std::env::var("SOLSTICE_GITHUB_METRICS_LISTEN") {
        config.metrics_listen = listen;
    }
    if let Ok(labels) = std::env::var("SOLSTICE_GITHUB_LABELS") {
        config.labels = labels.split(',').map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deployment_example_parses_into_the_real_type() {
        let text = include_str!("../../../docs/deploy/github-runner.toml");
        let config: RunnerFileConfig = toml::from_str(text).expect("docs/deploy/github-runner.toml is valid");
        assert_eq!(config.labels, ["omnios", "host"]);
        assert_eq!(config.vm_images.get("omnios").map(String::as_str), Some("omnios-r151054"));
        assert_eq!(config.metrics_listen, RunnerFileConfig::default().metrics_listen);
        assert_eq!(config.metrics_listen, "127.0.0.1:9466");
    }
}
