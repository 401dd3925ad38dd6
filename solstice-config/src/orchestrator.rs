//! The orchestrator's configuration: read by `solstice-orchestrator`, and by `solstice`
//! (`config check`, and `serve`, which runs an orchestrator in the same process).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::{BadValue, EnvOverride};

/// Everything the orchestrator reads at start-up. Every field has a default, so an
/// empty file is valid (it serves `host` jobs from the in-process queue: useful only
/// for trying it out).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrchestratorConfig {
    /// The name recorded as the owner of the jobs it claims. Default: empty, which the
    /// binaries replace with the host name.
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
    /// Seconds a claim on a job lasts unless renewed (every third of it while the job
    /// runs). A job whose orchestrator died is taken over by another once its claim
    /// expires; orchestrators' clocks must agree to well within it. Default: 30.
    pub claim_lease_seconds: u64,
    /// Debug SSH into failed jobs that opt in (docs/debug-ssh.md). Default: off.
    pub debug_ssh: DebugSshConfig,
    /// How much of this host the VMs may use at once.
    pub vm_limits: VmLimitsConfig,
}

/// `[vm_limits]`: VMs at once, and memory and vCPUs for all of them together. A job
/// waits until its image's share is free; an image larger than a whole budget fails
/// at once with a message that says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VmLimitsConfig {
    /// VMs running at once. Default: 4.
    pub max_vms: usize,
    /// Memory of all VMs together, in MiB. Default: no limit.
    pub memory_mib: Option<u32>,
    /// vCPUs of all VMs together. Default: no limit.
    pub vcpus: Option<u32>,
}

impl Default for VmLimitsConfig {
    fn default() -> Self {
        Self { max_vms: 4, memory_mib: None, vcpus: None }
    }
}

/// `[debug_ssh]`: where kept machines of failed, opted-in jobs are reachable.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugSshConfig {
    /// The address forwards listen on (usually public; one port per kept machine, open
    /// only while it is kept). Empty disables debug SSH. Default: empty.
    pub listen: String,
    /// The host name printed in the `ssh` command. Default: empty, meaning `listen`.
    pub host: String,
    /// First port of the forwards' range. Default: 2200.
    pub first_port: u16,
    /// Last port of the range (inclusive). Default: 2299.
    pub last_port: u16,
    /// How long a failed job's machine is kept, in seconds; not renewable. Default:
    /// 1800 (30 minutes).
    pub ttl_seconds: u64,
}

impl Default for DebugSshConfig {
    fn default() -> Self {
        Self { listen: String::new(), host: String::new(), first_port: 2200, last_port: 2299, ttl_seconds: 1800 }
    }
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
            name: String::new(),
            capacity: 1,
            host_labels: Vec::new(),
            vm_images: BTreeMap::new(),
            image_catalog: None,
            cache_dir: None,
            queue: QueueConfig::default(),
            store: StoreConfig::default(),
            metrics: MetricsConfig::default(),
            shutdown_grace_seconds: 600,
            claim_lease_seconds: 30,
            debug_ssh: DebugSshConfig::default(),
            vm_limits: VmLimitsConfig::default(),
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

/// The environment variables that override the orchestrator's file.
pub const ORCHESTRATOR_ENV: &[EnvOverride] = &[
    EnvOverride::text("SOLSTICE_NAME", "name"),
    EnvOverride::toml("SOLSTICE_CAPACITY", "capacity"),
    EnvOverride::text("SOLSTICE_QUEUE_URL", "queue.url"),
    EnvOverride::text("SOLSTICE_STORE_URL", "store.url"),
    EnvOverride::text("SOLSTICE_METRICS_LISTEN", "metrics.listen"),
    EnvOverride::list("SOLSTICE_HOST_LABELS", "host_labels"),
    EnvOverride::toml("SOLSTICE_CLAIM_LEASE_SECONDS", "claim_lease_seconds"),
];

impl OrchestratorConfig {
    /// Checks what the schema cannot: capacity, the queue and store URL schemes, the
    /// metrics address.
    ///
    /// # Errors
    /// The first [`BadValue`]; [`Loaded::check`](crate::Loaded::check) places it.
    pub fn check(&self) -> Result<(), BadValue> {
        check_capacity(self.capacity)?;
        let queue = &self.queue.url;
        if queue != "memory" && !queue.starts_with("amqp://") && !queue.starts_with("amqps://") {
            return Err(BadValue::new("queue.url", format!("`{queue}` must be `memory` or an amqp:// URL")));
        }
        check_store_url(&self.store.url)?;
        check_listen(&self.metrics.listen)?;
        if self.claim_lease_seconds == 0 {
            return Err(BadValue::new("claim_lease_seconds", "must be at least 1"));
        }
        check_debug_ssh(&self.debug_ssh)?;
        check_vm_limits(&self.vm_limits)
    }
}

/// `[debug_ssh]`: an IP address (or empty), a port range, a time above zero.
pub(crate) fn check_debug_ssh(debug: &DebugSshConfig) -> Result<(), BadValue> {
    if debug.listen.is_empty() {
        return Ok(());
    }
    if debug.listen.parse::<std::net::IpAddr>().is_err() {
        return Err(BadValue::new("debug_ssh.listen", format!("`{}` is not an IP address like 203.0.113.10", debug.listen)));
    }
    if debug.first_port == 0 || debug.first_port > debug.last_port {
        return Err(BadValue::new("debug_ssh.last_port", "the range first_port..=last_port is empty"));
    }
    if debug.ttl_seconds == 0 {
        return Err(BadValue::new("debug_ssh.ttl_seconds", "must be at least 1"));
    }
    Ok(())
}

/// `[vm_limits]`: every limit, when set, is at least 1.
pub(crate) fn check_vm_limits(limits: &VmLimitsConfig) -> Result<(), BadValue> {
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

/// `capacity` is at least 1.
pub(crate) fn check_capacity(capacity: usize) -> Result<(), BadValue> {
    if capacity == 0 {
        return Err(BadValue::new("capacity", "must be at least 1"));
    }
    Ok(())
}

/// `store.url` is a SQLite or PostgreSQL URL.
pub(crate) fn check_store_url(url: &str) -> Result<(), BadValue> {
    if !["sqlite:", "postgres:", "postgresql:"].iter().any(|scheme| url.starts_with(scheme)) {
        return Err(BadValue::new("store.url", format!("`{url}` must be a sqlite:// or postgres:// URL")));
    }
    Ok(())
}

/// `metrics.listen` is empty or a socket address.
pub(crate) fn check_listen(listen: &str) -> Result<(), BadValue> {
    if !listen.is_empty() && listen.parse::<SocketAddr>().is_err() {
        return Err(BadValue::new("metrics.listen", format!("`{listen}` is not an address like 127.0.0.1:9464")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{load_str, parse};

    #[test]
    fn the_documented_example_parses_and_passes_the_checks() {
        let text = include_str!("../../bins/solstice-orchestrator/orchestrator.example.toml");
        let config = parse::<OrchestratorConfig>(text, "orchestrator.example.toml").expect("example parses");
        let config = config.check(OrchestratorConfig::check).expect("example is valid").into_value();
        assert_eq!(config.capacity, 2);
        assert_eq!(config.host_labels, ["host"]);
        assert_eq!(config.vm_images.get("tiny").map(String::as_str), Some("tiny-linux"));
        assert!(config.queue.url.starts_with("amqp://"));
        assert_eq!(config.vm_limits, VmLimitsConfig { max_vms: 4, memory_mib: None, vcpus: None });
        assert_eq!(config.claim_lease_seconds, 30);
        let err = parse::<OrchestratorConfig>("claim_lease_seconds = 0\n", "o.toml")
            .expect("parses")
            .check(OrchestratorConfig::check)
            .expect_err("zero lease");
        assert_eq!(err.to_string(), "o.toml:1:23: claim_lease_seconds: must be at least 1");
    }

    #[test]
    fn vm_limits_are_read_and_a_zero_budget_is_refused_at_its_line() {
        let config = parse::<OrchestratorConfig>("[vm_limits]\nmax_vms = 2\nmemory_mib = 8192\nvcpus = 6\n", "o.toml")
            .expect("parses")
            .check(OrchestratorConfig::check)
            .expect("valid")
            .into_value();
        assert_eq!(config.vm_limits, VmLimitsConfig { max_vms: 2, memory_mib: Some(8192), vcpus: Some(6) });
        let err = parse::<OrchestratorConfig>("[vm_limits]\nmemory_mib = 0\n", "o.toml")
            .expect("parses")
            .check(OrchestratorConfig::check)
            .expect_err("zero memory");
        assert!(err.to_string().starts_with("o.toml:2:14: vm_limits.memory_mib: must be at least 1"), "{err}");
    }

    #[test]
    fn bad_values_are_reported_at_their_line() {
        let err = parse::<OrchestratorConfig>("capacity = 2\n[metrics]\nlisten = \"everywhere\"\n", "o.toml")
            .expect("parses")
            .check(OrchestratorConfig::check)
            .expect_err("bad address");
        assert_eq!(err.to_string(), "o.toml:3:10: metrics.listen: `everywhere` is not an address like 127.0.0.1:9464");
        let err = load_str::<OrchestratorConfig>("", "o.toml", ORCHESTRATOR_ENV, |v| (v == "SOLSTICE_CAPACITY").then(|| "0".into()))
            .expect("parses")
            .check(OrchestratorConfig::check)
            .expect_err("zero");
        assert_eq!(err.to_string(), "environment variable SOLSTICE_CAPACITY: capacity: must be at least 1");
        let err = parse::<OrchestratorConfig>("[store]\nurl = \"mysql://x\"\n", "o.toml")
            .expect("parses")
            .check(OrchestratorConfig::check)
            .expect_err("mysql");
        assert!(err.to_string().starts_with("o.toml:2:7: store.url: "), "{err}");
        let err = parse::<OrchestratorConfig>("[debug_ssh]\nlisten = \"0.0.0.0\"\nfirst_port = 3000\nlast_port = 2999\n", "o.toml")
            .expect("parses")
            .check(OrchestratorConfig::check)
            .expect_err("empty range");
        assert!(err.to_string().starts_with("o.toml:4:13: debug_ssh.last_port: "), "{err}");
        assert_eq!(OrchestratorConfig::default().debug_ssh.listen, "", "debug SSH is off by default");
    }
}
