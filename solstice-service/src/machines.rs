//! The machines jobs run in, from the configuration and a [`LabelPlan`].

use solstice_config::ServiceConfig;
use solstice_forgejo::{LabelScheme, LabelSpec};
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
    /// The one rule for every program: `[engine] host_labels`, then `[engine]
    /// vm_images`, then the Forgejo runner's label specs (`name:host` on this host,
    /// `name[:vm[:image]]` in a VM), then `[github] labels` (a VM if `vm_images` names
    /// an image for it, else this host).
    pub fn from_config(config: &ServiceConfig, forgejo: &[LabelSpec]) -> Self {
        let mut plan = Self::default();
        for label in &config.engine.host_labels {
            plan.host(label.clone());
        }
        for (label, image) in &config.engine.vm_images {
            plan.vm(label.clone(), image.clone());
        }
        for spec in forgejo {
            match &spec.scheme {
                LabelScheme::Host => plan.host(spec.name.clone()),
                LabelScheme::Vm(_) => plan.vm(spec.name.clone(), spec.image().unwrap_or(&spec.name).to_owned()),
            };
        }
        for label in config.github.iter().flat_map(|g| &g.labels) {
            if !config.engine.vm_images.contains_key(label) {
                plan.host(label.clone());
            }
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

/// Sets up the machines for `plan`: the host for host labels (workspaces in `[engine]
/// work_dir`), QEMU VMs for the others, with `[engine] image_catalog` and
/// `[vm_limits]`. Images and the test guest are cached in `[engine] cache_dir` (default:
/// [`solstice_config::default_cache_dir`]), and machines keep their files in its `run`
/// directory: a fixed place, so that what a crashed run left is where the store's
/// records say (and `solstice image prune` finds it).
///
/// # Errors
/// [`MachinesError::Catalog`] for a bad catalog file, [`MachinesError::Setup`] when the
/// machines cannot be set up.
///
/// # Cancel safety
/// Not cancel safe: the tiny test guest may be left half built in the cache (it is
/// rebuilt next time).
pub async fn machines(config: &ServiceConfig, plan: &LabelPlan) -> Result<Machines, MachinesError> {
    let engine = &config.engine;
    let catalog = engine.image_catalog.as_deref().map(ImageCatalog::load).transpose()?.unwrap_or_default();
    let cache_dir = engine.cache_dir.clone().unwrap_or_else(solstice_config::default_cache_dir);
    let run_dir = cache_dir.join("run");
    let limits = MachineLimits {
        max_machines: Some(config.vm_limits.max_vms),
        memory_mib: config.vm_limits.memory_mib,
        vcpus: config.vm_limits.vcpus,
    };
    let mut setup = MachineSetup::new(cache_dir).catalog(catalog).run_dir(run_dir).limits(limits);
    if let Some(dir) = &engine.work_dir {
        setup = setup.host_dir(dir);
    }
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
        let mut config = ServiceConfig::default();
        config.engine.host_labels = vec!["host".into(), "both".into(), "host".into()];
        config.engine.vm_images.insert("both".into(), "tiny-linux".into());
        config.engine.vm_images.insert("vm".into(), "tiny-linux".into());
        let mut plan = LabelPlan::from_config(&config, &[]);
        plan.vm("vm", "other").vm("extra", "omnios").host("late");
        let (host, vms) = plan.entries();
        assert_eq!(host.collect::<Vec<_>>(), ["host", "both", "late"]);
        let vms: Vec<_> = vms.map(|(l, i)| (l.as_str(), i.as_str())).collect();
        assert_eq!(vms, [("vm", "tiny-linux"), ("extra", "omnios")]);
        assert!(!plan.is_empty());
        assert!(LabelPlan::default().is_empty());
    }

    #[test]
    fn forge_labels_join_the_engine_s_by_one_rule() {
        let mut config = ServiceConfig::default();
        config.engine.host_labels = vec!["trusted".into()];
        config.engine.vm_images.insert("omnios".into(), "omnios-r151056".into());
        config.github = Some(solstice_config::GithubConfig { labels: vec!["omnios".into(), "gh".into()], ..Default::default() });
        let specs = ["local:host", "tiny:vm:tiny-linux", "bare"].map(|s| LabelSpec::parse(s).expect("spec"));
        let plan = LabelPlan::from_config(&config, &specs);
        let (host, vms) = plan.entries();
        assert_eq!(host.collect::<Vec<_>>(), ["trusted", "local", "gh"]);
        let vms: Vec<_> = vms.map(|(l, i)| (l.as_str(), i.as_str())).collect();
        assert_eq!(vms, [("omnios", "omnios-r151056"), ("tiny", "tiny-linux"), ("bare", "bare")]);
    }

    #[tokio::test]
    async fn host_labels_need_no_vm_and_machines_serve_the_plan() {
        let cache = tempfile::tempdir().expect("tempdir");
        let mut plan = LabelPlan::default();
        plan.host("a").host("b").host("a");
        let mut config = ServiceConfig::default();
        config.engine.cache_dir = Some(cache.path().to_path_buf());
        let machines = machines(&config, &plan).await.expect("host only");
        assert_eq!(machines.labels, ["a", "b"]);
    }

    #[tokio::test]
    async fn a_missing_catalog_is_named() {
        let cache = tempfile::tempdir().expect("tempdir");
        let mut config = ServiceConfig::default();
        config.engine.cache_dir = Some(cache.path().to_path_buf());
        config.engine.image_catalog = Some(cache.path().join("missing.toml"));
        let err = machines(&config, &LabelPlan::default()).await.expect_err("no catalog");
        assert!(matches!(err, MachinesError::Catalog(_)), "{err:?}");
        assert!(err.to_string().contains("missing.toml"), "{err}");
    }
}
