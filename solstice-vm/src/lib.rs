//! QEMU/SLIRP virtual machines for CI jobs.
//!
//! `solstice-vm` implements Solstice CI's [`solstice_core::Hypervisor`] on QEMU driven
//! over QMP (no libvirt), and the SSH [`solstice_core::StepExecutor`] that runs steps in
//! the guest. Each job gets a fresh machine: a qcow2 overlay on a cached base image (or a
//! directly booted kernel), a cloud-init seed with two ephemeral ed25519 keys, a SLIRP
//! network that cannot reach the host's loopback services, and an SSH forward on
//! `127.0.0.1` only. Everything is removed when the job ends.
//!
//! # Overview
//! - [`QemuHypervisor`] (built with [`QemuHypervisor::builder`]) provisions and destroys
//!   machines; it owns a [`PortAllocator`], an [`ImageCache`] and an [`ImageCatalog`]
//!   mapping `runs-on` labels to [`ImageEntry`]s, and chooses the accelerator with an
//!   [`AccelProbe`] (KVM when a kernel really boots under it, TCG otherwise).
//! - [`SshExecutor`] runs steps over SSH ([`SshSession`], russh + SFTP), streaming their
//!   output and killing them on cancellation.
//! - Lower layers are public too: [`VmSpec`] (the QEMU command line), [`QemuProcess`]
//!   (spawn and ordered stop), [`QmpClient`], [`SeedConfig`] (the NoCloud ISO),
//!   [`SshKeyPair`], [`NetSpec`], [`ConsoleTail`].
//! - [`EgressProxy`] gives guests outbound HTTP(S) to public addresses only (package
//!   installs), through a guest forward, while they stay cut off from the host.
//! - [`TestGuest`] builds a tiny busybox + dropbear guest from the host's Debian packages,
//!   used by the end-to-end tests and the `solstice run` demo.
//!
//! # Running a job in a VM
//! ```no_run
//! use solstice_core::{Engine, JobRequest, StepCommand};
//! use solstice_vm::{QemuHypervisor, SshExecutor, TestGuest, TINY_LINUX};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = std::path::Path::new("/var/cache/solstice");
//! let guest = TestGuest::builder(cache).ensure()?;
//! let hypervisor = QemuHypervisor::builder()
//!     .image(TINY_LINUX, guest.catalog_entry())
//!     .probe_kernel(&guest.kernel)
//!     .cache_dir(cache)
//!     .build();
//! let engine = Engine::builder().hypervisor(hypervisor).executor(SshExecutor::new()).build()?;
//! let job = JobRequest::new("hello", vec![TINY_LINUX.into()], vec![StepCommand::run("greet", "uname -a")]);
//! let (result, _events) = engine.run_job_collect(job).await;
//! assert_eq!(result, solstice_core::JobResult::Success);
//! # Ok(()) }
//! ```
//!
//! # An image catalog and a seed, without a VM
//! ```
//! use solstice_vm::{ImageCatalog, SeedConfig, SshKeyPair};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let catalog = ImageCatalog::from_toml(r#"
//!     [images."ubuntu-24.04"]   # quote labels with dots
//!     aliases = ["ubuntu-latest"]
//!     vcpus = 2
//!     memory_mib = 4096
//!     source = { url = "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img", sha256 = "0000000000000000000000000000000000000000000000000000000000000000" }
//! "#)?;
//! assert_eq!(catalog.lookup("ubuntu-latest").map(|e| e.memory_mib), Some(4096));
//! let key = SshKeyPair::generate("job-1")?;
//! let seed = SeedConfig {
//!     instance_id: "vm-1".into(),
//!     hostname: "vm-1".into(),
//!     user: "runner".into(),
//!     authorized_keys: vec![key.public_openssh()],
//!     ..SeedConfig::default()
//! };
//! let iso = seed.to_iso()?;
//! assert_eq!(iso.len() % 2048, 0);
//! # Ok(()) }
//! ```
//!
//! # Optional features
//! None: the crate always builds the QEMU backend (Linux hosts) and the SSH executor.
//!
//! # Host requirements
//! `qemu-system-x86` and `qemu-utils` (QEMU and `qemu-img`); `/dev/kvm` is optional. The
//! test guest also needs `linux-image-amd64`, `busybox-static`, `dropbear-bin`,
//! `openssh-sftp-server` and `bash` (see [`TestGuest`]).
#![warn(missing_docs, missing_debug_implementations)]

mod accel;
mod budget;
mod console;
mod cpio;
mod egress;
mod guest;
mod hypervisor;
mod image;
mod keys;
mod net;
mod ports;
mod qemu;
mod qmp;
mod seed;
mod setup;
mod ssh;
mod testguest;

pub use accel::{Accel, AccelChoice, AccelProbe, AccelVerdict};
pub use budget::OverBudget;
pub use guest::GuestProfile;
pub use keys::{KeyError, SshKeyPair};
pub use egress::{Destination, EgressError, EgressProxy, EgressProxyBuilder, ProxyRequest};
pub use net::{EGRESS_PROXY_ADDR, EGRESS_PROXY_URL, EgressConfig, NetSpec};
pub use ports::{PortAllocator, PortError, PortLease};
pub use qemu::{BootSpec, QemuError, QemuProcess, StopOutcome, VmSpec};
pub use qmp::{QmpClient, QmpDecodeError, QmpError, QmpEvent, QmpMessage};
pub use seed::{SeedConfig, SeedError};
pub use setup::{MachineLimits, MachineSetup, Machines, SetupError};
pub use console::ConsoleTail;
pub use hypervisor::{QemuHypervisor, QemuHypervisorBuilder, VmError};
pub use image::{
    BootMode, CachedImage, Decompress, DownloadProgress, ImageCache, ImageCatalog, ImageEntry, ImageError, ImageSource,
    LogProgress, MachineDir, YOUNG_MACHINE_DIR, create_overlay, machine_dirs, prune_machine_dirs,
};
pub use ssh::{ExecOutput, SshError, SshExecutor, SshSession};
pub use testguest::{TINY_LINUX, TestGuest, TestGuestBuilder, TestGuestError};
