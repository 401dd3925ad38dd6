//! One way for every binary to turn "these labels on the host, those in VMs" into a
//! hypervisor and an executor for the engine.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use solstice_core::{ExecutorByAccess, HostExecutor, HostHypervisor, HypervisorSet, StepExecutor};

use crate::egress::EgressProxy;
use crate::{AccelChoice, ImageCatalog, ImageEntry, QemuHypervisor, SshExecutor};
#[cfg(feature = "test-guest")]
use crate::{TINY_LINUX, TestGuest, TestGuestError};

/// Why the machines for a service could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A VM label names an image the catalog does not have.
    #[error("label `{label}` needs image `{image}`, which the image catalog does not have")]
    UnknownImage {
        /// The runs-on label.
        label: String,
        /// The image it was mapped to.
        image: String,
    },
    /// The tiny test guest could not be built.
    #[cfg(feature = "test-guest")]
    #[cfg_attr(docsrs, doc(cfg(feature = "test-guest")))]
    #[error("could not build the tiny test guest")]
    TestGuest(#[source] TestGuestError),
    /// The run directory could not be made.
    #[error("could not create the run directory for virtual machines")]
    RunDir(#[source] std::io::Error),
}

/// What runs where: labels on the host, labels in VMs (each mapped to an image of the
/// catalog, or, with the `test-guest` feature, to the built-in `tiny-linux` guest).
#[derive(Debug, Clone)]
#[must_use]
pub struct MachineSetup {
    host_labels: Vec<String>,
    host_dir: Option<PathBuf>,
    vm_labels: Vec<(String, String)>,
    catalog: ImageCatalog,
    cache_dir: PathBuf,
    run_dir: Option<PathBuf>,
    accel: AccelChoice,
    boot_timeout: Duration,
    egress: bool,
    limits: MachineLimits,
}

/// How much of the host the VMs may use at once. `None` is no limit of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MachineLimits {
    /// VMs at once (default 4).
    pub max_machines: Option<usize>,
    /// Memory of all VMs together, in MiB.
    pub memory_mib: Option<u32>,
    /// vCPUs of all VMs together.
    pub vcpus: Option<u32>,
}

/// The hypervisor and executor for an engine, with the labels they serve.
#[derive(Debug)]
pub struct Machines {
    /// The host for host labels, QEMU for the others.
    pub hypervisor: HypervisorSet,
    /// The host executor for host machines, SSH for VMs.
    pub executor: ExecutorByAccess,
    /// Every label served.
    pub labels: Vec<String>,
    _run_dir: Option<crate::run_dir::OwnedRunDir>,
}

impl MachineSetup {
    /// Nothing served yet; images and the test guest are cached under `cache_dir`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            host_labels: Vec::new(),
            host_dir: None,
            vm_labels: Vec::new(),
            catalog: ImageCatalog::default(),
            cache_dir: cache_dir.into(),
            run_dir: None,
            accel: AccelChoice::Auto,
            boot_timeout: Duration::from_secs(300),
            egress: true,
            limits: MachineLimits::default(),
        }
    }

    /// Jobs with this label run on the host (trusted jobs only).
    pub fn host_label(mut self, label: impl Into<String>) -> Self {
        self.host_labels.push(label.into());
        self
    }

    /// Where host jobs get their workspaces. Default: the system temporary directory.
    pub fn host_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.host_dir = Some(dir.into());
        self
    }

    /// Jobs with `label` run in a VM of `image` (a catalog label or alias, or, with the
    /// `test-guest` feature, `tiny-linux` for the built-in test guest).
    pub fn vm_label(mut self, label: impl Into<String>, image: impl Into<String>) -> Self {
        self.vm_labels.push((label.into(), image.into()));
        self
    }

    /// The image catalog. Default: empty (only `tiny-linux` is available, with the
    /// `test-guest` feature).
    pub fn catalog(mut self, catalog: ImageCatalog) -> Self {
        self.catalog = catalog;
        self
    }

    /// Where machines keep their files. Default: a fresh `solstice-vms-*` directory in
    /// the system temporary directory, removed with the [`Machines`], or by
    /// [`reap_abandoned_run_dirs`](crate::reap_abandoned_run_dirs) in a later process if
    /// this one is killed first.
    pub fn run_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.run_dir = Some(dir.into());
        self
    }

    /// The accelerator choice. Default: probe KVM, fall back to TCG.
    pub fn accel(mut self, accel: AccelChoice) -> Self {
        self.accel = accel;
        self
    }

    /// How long a VM may take to answer SSH. Default: 300 s (TCG is slow).
    pub fn boot_timeout(mut self, timeout: Duration) -> Self {
        self.boot_timeout = timeout;
        self
    }

    /// How many VMs, and how much memory and how many vCPUs for all of them together,
    /// this host gives; a job waits for its share. Default: 4 VMs, no memory or vCPU
    /// limit.
    pub fn limits(mut self, limits: MachineLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Whether guests get outbound network through the egress proxy (HTTP and HTTPS to
    /// public addresses only, `http_proxy` set for steps). Without it guests have no
    /// network beyond their SSH port. Default: on.
    pub fn egress(mut self, on: bool) -> Self {
        self.egress = on;
        self
    }

    /// Builds the machines; the tiny test guest is built (or found in the cache) only if
    /// a label needs it.
    ///
    /// # Errors
    /// [`SetupError`] for an image the catalog lacks, a test guest that cannot be built,
    /// or a run directory that cannot be made.
    pub async fn build(self) -> Result<Machines, SetupError> {
        let mut labels = self.host_labels.clone();
        let mut host = HostHypervisor::with_labels(self.host_labels.clone());
        if let Some(dir) = &self.host_dir {
            host = host.in_dir(dir);
        }
        let mut hypervisor = HypervisorSet::new().with(Arc::new(host));
        let mut ssh: Option<Arc<dyn StepExecutor>> = None;
        let mut run_dir_guard = None;
        if !self.vm_labels.is_empty() {
            let mut catalog = self.catalog.clone();
            let mut probe_kernel = None;
            for (label, image) in &self.vm_labels {
                let entry = match catalog.lookup(image) {
                    Some(entry) => entry.clone(),
                    None => match self.built_in_image(image).await? {
                        Some((entry, kernel)) => {
                            probe_kernel = Some(kernel);
                            entry
                        }
                        None => return Err(SetupError::UnknownImage { label: label.clone(), image: image.clone() }),
                    },
                };
                if catalog.lookup(label).is_none() {
                    catalog.insert(label.clone(), entry);
                }
                labels.push(label.clone());
            }
            let run_dir = match &self.run_dir {
                Some(dir) => dir.clone(),
                None => {
                    // Owned, so that a later process can tell it from a live one's and
                    // reap it if this process is killed (`reap_abandoned_run_dirs`).
                    let dir = crate::run_dir::OwnedRunDir::create(&std::env::temp_dir()).map_err(SetupError::RunDir)?;
                    let path = dir.path().to_path_buf();
                    run_dir_guard = Some(dir);
                    path
                }
            };
            let mut builder = QemuHypervisor::builder()
                .catalog(catalog)
                .accel(self.accel)
                .cache_dir(&self.cache_dir)
                .run_dir(run_dir)
                .boot_timeout(self.boot_timeout);
            if let Some(n) = self.limits.max_machines {
                builder = builder.max_machines(n);
            }
            if let Some(mib) = self.limits.memory_mib {
                builder = builder.memory_budget_mib(mib);
            }
            if let Some(vcpus) = self.limits.vcpus {
                builder = builder.vcpu_budget(vcpus);
            }
            if let Some(kernel) = probe_kernel {
                builder = builder.probe_kernel(kernel);
            }
            if self.egress {
                builder = builder.start_egress_proxy(EgressProxy::builder());
            }
            hypervisor = hypervisor.with(Arc::new(builder.build()));
            ssh = Some(Arc::new(SshExecutor::new()));
        }
        let executor = ExecutorByAccess::new(Some(Arc::new(HostExecutor::new())), ssh);
        Ok(Machines { hypervisor, executor, labels, _run_dir: run_dir_guard })
    }

    /// The catalog entry and the KVM probe kernel of a built-in image the catalog lacks:
    /// the tiny test guest for `tiny-linux`, built (or found in the cache) here.
    #[cfg(feature = "test-guest")]
    async fn built_in_image(&self, image: &str) -> Result<Option<(ImageEntry, PathBuf)>, SetupError> {
        if image != TINY_LINUX {
            return Ok(None);
        }
        let cache = self.cache_dir.clone();
        let guest = tokio::task::spawn_blocking(move || TestGuest::builder(cache).ensure())
            .await
            .map_err(|e| SetupError::RunDir(std::io::Error::other(e)))?
            .map_err(SetupError::TestGuest)?;
        let kernel = guest.kernel.clone();
        Ok(Some((guest.catalog_entry(), kernel)))
    }

    /// Without the `test-guest` feature there is no built-in image.
    #[cfg(not(feature = "test-guest"))]
    async fn built_in_image(&self, _image: &str) -> Result<Option<(ImageEntry, PathBuf)>, SetupError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use solstice_core::Hypervisor;

    #[tokio::test]
    async fn host_labels_need_no_vm_and_unknown_images_are_named() {
        let cache = tempfile::tempdir().expect("tempdir");
        let machines = MachineSetup::new(cache.path()).host_label("host").build().await.expect("host only");
        assert_eq!(machines.labels, ["host"]);
        assert!(machines.hypervisor.serves("host") && !machines.hypervisor.serves("omnios"));
        let err = MachineSetup::new(cache.path()).vm_label("omnios", "omnios-r151056").build().await.expect_err("no catalog");
        assert!(err.to_string().contains("`omnios-r151056`"), "{err}");
    }
}
