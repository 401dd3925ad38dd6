//! Which machines `solstice run` can make: the host, the built-in tiny test guest,
//! and the images of a catalog file.

use std::path::{Path, PathBuf};

use anyhow::Context;
use solstice_vm::{ImageCatalog, MachineSetup, Machines, TINY_LINUX};

use crate::output::outln;

/// Where `solstice` caches images, the test guest and the accelerator verdict.
pub fn cache_dir() -> PathBuf {
    solstice_config::default_cache_dir()
}

/// Removes what an earlier `solstice run` that was killed (SIGKILL, OOM) left in the
/// temporary directory: its machines' overlays and seeds, and a QEMU that outlived it.
/// The files of live runs and of `solstice serve` are left alone: each live process
/// holds a lock on its run directory (`solstice_vm::reap_abandoned_run_dirs`).
pub async fn reap_leftovers() {
    let reaped = tokio::task::spawn_blocking(|| solstice_vm::reap_abandoned_run_dirs(&std::env::temp_dir())).await;
    match reaped {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => eprintln!("warning: could not look for the files of earlier runs in {}: {e}", std::env::temp_dir().display()),
        Err(e) => eprintln!("warning: could not look for the files of earlier runs: {e}"),
    }
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
            let _ = outln!("· preparing the tiny Linux test guest (built once from this host's Debian packages)");
        }
        if label == TINY_LINUX || catalog.lookup(label).is_some() {
            setup = setup.vm_label(label.clone(), label.clone());
        }
    }
    setup.catalog(catalog).build().await.context("setting up the machines (scripts/demo installs what they need)")
}
