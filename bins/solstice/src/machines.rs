//! Which machines `solstice run` can make: the host, the built-in tiny test guest,
//! and the images of a catalog file.

use std::path::{Path, PathBuf};

use anyhow::Context;
use solstice_vm::{ImageCatalog, MachineSetup, Machines, TINY_LINUX};

/// Where `solstice` caches images, the test guest and the accelerator verdict.
pub fn cache_dir() -> PathBuf {
    solstice_config::default_cache_dir()
}

/// Sets up what the `needed` labels require: `host_labels` run on the host; the others
/// in VMs of the catalog's images, or of the tiny guest for `tiny-linux`. Labels that
/// nothing serves are left out (the run reports those jobs).
pub async fn for_labels(needed: &[String], host_labels: &[String], catalog: Option<&Path>) -> anyhow::Result<Machines> {
    let catalog = catalog.map(ImageCatalog::load).transpose()?.unwrap_or_default();
    let mut setup = MachineSetup::new(cache_dir());
    for label in host_labels {
        setup = setup.host_label(label.clone());
    }
    for label in needed.iter().filter(|l| !host_labels.contains(l)) {
        if label == TINY_LINUX {
            println!("· preparing the tiny Linux test guest (built once from this host's Debian packages)");
        }
        if label == TINY_LINUX || catalog.lookup(label).is_some() {
            setup = setup.vm_label(label.clone(), label.clone());
        }
    }
    setup.catalog(catalog).build().await.context("setting up the machines (scripts/demo installs what they need)")
}
