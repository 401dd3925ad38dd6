//! The machines jobs run in: this host, or fresh QEMU VMs.


use anyhow::Context as _;
use solstice_vm::{ImageCatalog, MachineSetup, Machines};

use crate::config::RunnerFileConfig;

/// The host for plain labels, QEMU VMs for the labels in `vm_images`.
pub(crate) async fn machines(config: &RunnerFileConfig) -> anyhow::Result<Machines> {
    let cache = config.cache_dir.clone().unwrap_or_else(solstice_config::default_cache_dir);
    let catalog = config.image_catalog.as_deref().map(ImageCatalog::load).transpose()?.unwrap_or_default();
    let mut setup = MachineSetup::new(cache).catalog(catalog);
    for label in &config.labels {
        setup = match config.vm_images.get(label) {
            Some(image) => setup.vm_label(label.clone(), image.clone()),
            None => setup.host_label(label.clone()),
        };
    }
    setup.build().await.context("setting up the machines for the labels")
}

