//! Which machines `solstice run` can make: the host, the built-in tiny test guest,
//! and the images of a catalog file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use solstice_core::{ExecutorByAccess, HostExecutor, HostHypervisor, Hypervisor, HypervisorSet, StepExecutor};
use solstice_vm::{AccelChoice, ImageCatalog, QemuHypervisor, SshExecutor, TestGuest};

/// The label of the tiny Linux guest built from this host's Debian packages.
pub const TINY_LINUX: &str = "tiny-linux";

/// Where `solstice` caches images, the test guest and the accelerator verdict.
fn cache_dir() -> PathBuf {
    std::env::var_os("SOLSTICE_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/solstice")))
        .unwrap_or_else(|| std::env::temp_dir().join("solstice-cache"))
}

/// The hypervisors and executors for a run.
pub struct Machines {
    pub hypervisor: HypervisorSet,
    pub executor: ExecutorByAccess,
    /// Labels some hypervisor serves (for the engine's queue subscription).
    pub labels: Vec<String>,
    /// Keeps the run directory of the VMs alive until the run ends.
    _run_dir: Option<tempfile::TempDir>,
}

/// Sets up what the `needed` labels require. `host_labels` run on the host; the tiny
/// guest is built on first use; other labels come from `catalog` when given.
pub async fn for_labels(needed: &[String], host_labels: &[String], catalog: Option<&Path>) -> anyhow::Result<Machines> {
    let host = HostHypervisor::with_labels(host_labels.to_vec());
    let mut hypervisor = HypervisorSet::new().with(Arc::new(host));
    let mut labels: Vec<String> = host_labels.to_vec();
    let mut ssh: Option<Arc<dyn StepExecutor>> = None;
    let mut run_dir = None;

    let vm_labels: Vec<&String> = needed.iter().filter(|l| !host_labels.contains(l)).collect();
    if !vm_labels.is_empty() {
        let mut builder = QemuHypervisor::builder().accel(AccelChoice::Auto).cache_dir(cache_dir());
        let mut served = Vec::new();
        if let Some(path) = catalog {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading the image catalog {}", path.display()))?;
            let catalog = ImageCatalog::from_toml(&text).with_context(|| format!("in the image catalog {}", path.display()))?;
            for label in &vm_labels {
                if catalog.lookup(label).is_some() {
                    served.push((*label).clone());
                }
            }
            builder = builder.catalog(catalog);
        }
        if vm_labels.iter().any(|l| l.as_str() == TINY_LINUX) {
            println!("· preparing the tiny Linux test guest (built once from this host's Debian packages)");
            let guest = tokio::task::spawn_blocking(|| TestGuest::builder(cache_dir()).ensure())
                .await
                .context("building the test guest")?
                .context("building the test guest (scripts/demo installs the packages it needs)")?;
            builder = builder.image(TINY_LINUX, guest.catalog_entry()).probe_kernel(&guest.kernel);
            served.push(TINY_LINUX.to_owned());
        }
        if !served.is_empty() {
            let dir = tempfile::Builder::new().prefix("solstice-run-").tempdir().context("creating the VM run directory")?;
            let qemu = builder.run_dir(dir.path()).boot_timeout(Duration::from_secs(300)).build();
            debug_assert!(served.iter().all(|l| qemu.serves(l)));
            hypervisor = hypervisor.with(Arc::new(qemu));
            ssh = Some(Arc::new(SshExecutor::new()));
            labels.extend(served);
            run_dir = Some(dir);
        }
    }
    let executor = ExecutorByAccess::new(Some(Arc::new(HostExecutor::new())), ssh);
    Ok(Machines { hypervisor, executor, labels, _run_dir: run_dir })
}
