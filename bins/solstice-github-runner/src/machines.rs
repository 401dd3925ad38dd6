//! The machines jobs run in: this host, or fresh QEMU VMs.

use std::path::PathBuf;

use anyhow::Context as _;
use solstice_vm::{ImageCatalog, MachineSetup, Machines};

use crate::config::RunnerFileConfig;

/// The host for plain labels, QEMU VMs for the labels in `vm_images`.
pub(crate) async fn machines(config: &RunnerFileConfig) -> anyhow::Result<Machines> {
    let cache = config.cache_dir.clone().unwrap_or_else(|| {
        std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir).join(".cache/solstice")
    });
    let catalog = match &config.image_catalog {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            ImageCatalog::from_toml(&text).with_context(|| format!("in the image catalog {}", path.display()))?
        }
        None => ImageCatalog::default(),
    };
    let mut setup = MachineSetup::new(cache).catalog(catalog);
    for label in &config.labels {
        setup = match config.vm_images.get(label) {
            Some(image) => setup.vm_label(label.clone(), image.clone()),
            None => setup.host_label(label.clone()),
        };
    }
    setup.build().await.context("setting up the machines for the labels")
}

