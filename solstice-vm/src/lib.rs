//! QEMU/SLIRP virtual machines for CI jobs.
//!
//! `solstice-vm` implements Solstice CI's [`solstice_core::Hypervisor`] on QEMU driven
//! over QMP (no libvirt) and the SSH [`solstice_core::StepExecutor`] that runs steps in
//! the guest.
#![warn(missing_docs, missing_debug_implementations)]

mod accel;
mod console;
mod cpio;
mod guest;
mod hypervisor;
mod image;
mod keys;
mod net;
mod ports;
mod qemu;
mod qmp;
mod seed;
mod ssh;
mod testguest;

pub use accel::{Accel, AccelChoice, AccelProbe, AccelVerdict};
pub use guest::GuestProfile;
pub use keys::{KeyError, SshKeyPair};
pub use net::{EGRESS_PROXY_ADDR, EgressConfig, NetSpec};
pub use ports::{PortAllocator, PortError, PortLease};
pub use qemu::{BootSpec, QemuError, QemuProcess, StopOutcome, VmSpec};
pub use qmp::{QmpClient, QmpDecodeError, QmpError, QmpEvent, QmpMessage};
pub use seed::{SeedConfig, SeedError};
pub use console::ConsoleTail;
pub use hypervisor::{QemuHypervisor, QemuHypervisorBuilder, VmError};
pub use image::{
    BootMode, CachedImage, Decompress, DownloadProgress, ImageCache, ImageCatalog, ImageEntry, ImageError, ImageSource,
    LogProgress, create_overlay,
};
pub use ssh::{ExecOutput, SshError, SshExecutor, SshSession};
pub use testguest::{TEST_GUEST_APPEND, TestGuest, TestGuestBuilder, TestGuestError};
