//! The machines jobs run in, from the configuration and a [`LabelPlan`].

use std::path::PathBuf;

use solstice_config::OrchestratorConfig;
use solstice_vm::{ImageCatalog, ImageError, MachineLimits, MachineSetup, Machines, SetupError};

/// Which labels are served, and where their jobs run: on this host, or in fresh QEMU
/// VMs of an image.
///
/// The first mention of a label wins, and a host label wins over a VM label of the same
/// name. Machines are set up host labels first, then VM labels, each in the order
/// given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelPlan {
    host: Vec<String>,
    vms: Vec<(String, String)>,
}

impl LabelPlan {
    /// The configuration's `host_labels`, then its `vm_images`.
    pub fn from_config(config: &OrchestratorConfig) -> Self {
        let mut plan = Self::default();
        for label in &config.host_labels {
            plan.host(label.clone());
        }
        for (label, image) in &config.vm_images {
            plan.vm(label.clone(), image.clone());
        }
        plan
    }

    /// Jobs with `label` run on this host (trusted jobs only).
    pub fn host(&mut self, label: impl Into<String>) -> &mut Self {
        let label = label.into();
        if !self.host.contains(&label) {
            self.host.push(label);
        }
        self
    }

    /// Jobs with `label` run in a VM of `image` (a catalog image, or `tiny-linux`),
    /// unless the label is also a host label.
    pub fn vm(&mut self, label: impl Into<String>, image: impl Into<String>) -> &mut Self {
        let label = label.into();
        if !self.vms.iter().any(|(l, _)| *l == label) {
            self.vms.push((label, image.into()));
        }
        self
    }

    /// Whether no label is planned (an orchestrator serving nothing).
    pub fn is_empty(&self) -> bool {
        self.host.is_empty() && self.vms.is_empty()
    }

    /// The host labels, then the VM labels with their images, each label once.
    fn entries(&self) -> (impl Iterator<Item = &String>, impl Iterator<Item = &(String, String)>) {
        (self.host.iter(), self.vms.iter().filter(|(label, _)| !self.host.contains(label)))
    }
}

/// Why [`machines`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MachinesError {
    /// The `image_catalog` file could not be read or is invalid (the cause names it).
    #[error(transparent)]
    Catalog(#[from] ImageError),
    /// An image is missing, the test guest could not be built, or the run directory
    /// could not be made.
    #[error("setting up the machines for the labels")]
    Setup(#[source] SetupError),
}

/// Sets up the machines for `plan`: the host for host labels, QEMU VMs for the others,
/// with the configuration's `image_catalog` and `[vm_limits]`. Images and the test guest
/// are cached in `cache_dir`, and machines keep their files in `cache_dir/run`: a fixed
/// place, so that what a crashed run left is where the store's records say (and
/// `solstice image prune` finds it).
///
/// # Errors
/// [`MachinesError::Catalog`] for a bad catalog file, [`MachinesError::Setup`] when the
/// machines cannot be set up.
///
/// # Cancel safety
/// Not cancel safe: the tiny test guest may be left half built in the cache (it is
/// rebuilt next time).
pub async fn machines(config: &OrchestratorConfig, cache_dir: PathBuf, plan: &LabelPlan) -> Result<Machines, MachinesError> {
    let catalog = config.image_catalog.as_deref().map(ImageCatalog::load).transpose()?.unwrap_or_default();
    let run_dir = cache_dir.join("run");
    let limits = MachineLimits {
        max_machines: Some(config.vm_limits.max_vms),
        memory_mib: config.vm_limits.memory_mib,
        vcpus: config.vm_limits.vcpus,
    };
    let mut setup = MachineSetup::new(cache_dir).catalog(catalog).run_dir(run_dir).limits(limits);
    let (host, vms) = plan.entries();
    for label in host {
        setup = setup.host_label(label.clone());
    }
    for (label, image) in vms {
        setup = setup.vm_label(label.clone(), image.clone());
    }
    setup.build().await.map_err(MachinesError::Setup)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_mention_wins_and_host_labels_win_over_vm_labels() {
        let mut config =
            OrchestratorConfig { host_labels: vec!["host".into(), "both".into(), "host".into()], ..OrchestratorConfig::default() };
        config.vm_images.insert("both".into(), "tiny-linux".into());
        config.vm_images.insert("vm".into(), "tiny-linux".into());
        let mut plan = LabelPlan::from_config(&config);
        plan.vm("vm", "other").vm("extra", "omnios").host("late");
        let (host, vms) = plan.entries();
        assert_eq!(host.collect::<Vec<_>>(), ["host", "both", "late"]);
        let vms: Vec<_> = vms.map(|(l, i)| (l.as_str(), i.as_str())).collect();
        assert_eq!(vms, [("vm", "tiny-linux"), ("extra", "omnios")]);
        assert!(!plan.is_empty());
        assert!(LabelPlan::default().is_empty());
    }

    #[tokio::test]
    async fn host_labels_need_no_vm_and_machines_serve_the_plan() {
        let cache = tempfile::tempdir().expect("tempdir");
        let mut plan = LabelPlan::default();
        plan.host("a").host("b").host("a");
        let machines = machines(&OrchestratorConfig::default(), cache.path().to_path_buf(), &plan).await.expect("host only");
        assert_eq!(machines.labels, ["a", "b"]);
    }

    #[tokio::test]
    async fn a_missing_catalog_is_named() {
        let cache = tempfile::tempdir().expect("tempdir");
        let config = OrchestratorConfig { image_catalog: Some(cache.path().join("missing.toml")), ..OrchestratorConfig::default() };
        let err = machines(&config, cache.path().to_path_buf(), &LabelPlan::default()).await.expect_err("no catalog");
        assert!(matches!(err, MachinesError::Catalog(_)), "{err:?}");
        assert!(err.to_string().contains("missing.toml"), "{err}");
    }
}
