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
//! The crate root holds what a program composing a VM runner needs:
//! - [`MachineSetup`] turns "these labels on the host, those in VMs of these images" into
//!   [`Machines`]: the hypervisor and executor an engine runs on ([`MachineLimits`] caps
//!   what the VMs may use together, [`SetupError`] says why setup failed).
//! - [`QemuHypervisor`] (built with [`QemuHypervisor::builder`]) provisions and destroys
//!   machines from an [`ImageCatalog`] mapping `runs-on` labels to [`ImageEntry`]s (read
//!   from TOML; [`ImageError`]), with the accelerator an [`AccelChoice`] asks for; what goes
//!   wrong is a [`VmError`]. A [`GuestProfile`] says how an image's OS differs once booted,
//!   and an [`EgressConfig`] gives guests a way out through a proxy.
//! - [`SshExecutor`] runs steps over SSH (russh + SFTP), streaming their output and
//!   killing them on cancellation.
//!
//! Lower layers are public modules, for tools and for programs that start QEMU by hand:
//! - [`image`]: the download cache and the machine directories of a run directory (the
//!   `solstice image` and `solstice vm` tools).
//! - [`qemu`]: the QEMU command line ([`qemu::VmSpec`], with its [`qemu::NetSpec`]), the
//!   process ([`qemu::QemuProcess`]) and its serial console ([`qemu::ConsoleTail`]). The
//!   network and the console are parts of one QEMU process, so they sit here rather than
//!   in modules of their own.
//! - [`accel`]: the KVM probe and its verdict, and [`ports`]: the host ports for SSH
//!   forwards. These stay separate from [`qemu`] because they belong to the host and are
//!   shared by every machine (and hypervisor) on it.
//! - [`qmp`]: a QMP client; [`seed`]: the cloud-init NoCloud ISO; [`ssh`]: sessions and
//!   the ephemeral keys; [`egress`]: the egress proxy that gives guests outbound HTTP(S) to
//!   public addresses only (package installs) while they stay cut off from the host;
//!   [`budget`]: the error of a machine bigger than the host's budget.
//! - With the `test-guest` feature, `TestGuest` builds a tiny busybox + dropbear guest from
//!   the host's Debian packages, served as the `tiny-linux` label: used by the end-to-end
//!   tests, the bundled programs and the `solstice run` demo.
//!
//! # Running a job in a VM
//! This example needs the `test-guest` feature (for `TestGuest`).
//! ```no_run
//! # #[cfg(feature = "test-guest")] mod example {
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
//! # }
//! ```
//!
//! # An image catalog and a seed, without a VM
//! ```
//! use solstice_vm::ImageCatalog;
//! use solstice_vm::seed::SeedConfig;
//! use solstice_vm::ssh::SshKeyPair;
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
//! The crate always builds the QEMU backend (Linux hosts) and the SSH executor.
//! - `test-guest` (off by default): `TestGuest`, `TestGuestBuilder`, `TestGuestError` and
//!   `TINY_LINUX`, and [`MachineSetup`] serving `tiny-linux` with the test guest when the
//!   catalog has no such image (without the feature that label is
//!   [`SetupError::UnknownImage`] like any other). The bundled programs, the end-to-end
//!   tests and this crate's own tests, benchmark and example turn it on.
//!
//! # Host requirements
//! `qemu-system-x86` and `qemu-utils` (QEMU and `qemu-img`); `/dev/kvm` is optional. The
//! test guest also needs `linux-image-amd64`, `busybox-static`, `dropbear-bin`,
//! `openssh-sftp-server` and `bash` (see `TestGuest`).
#![warn(missing_docs, missing_debug_implementations)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod accel;
pub mod budget;
mod console;
#[cfg(feature = "test-guest")]
mod cpio;
pub mod egress;
mod guest;
mod hypervisor;
pub mod image;
mod keys;
mod net;
pub mod ports;
pub mod qemu;
pub mod qmp;
mod run_dir;
pub mod seed;
mod setup;
pub mod ssh;
#[cfg(feature = "test-guest")]
mod testguest;

pub use accel::AccelChoice;
pub use console::{ConsoleLimits, ConsoleRecorder};
pub use guest::GuestProfile;
pub use hypervisor::{QemuHypervisor, QemuHypervisorBuilder, VmError};
pub use image::{ImageCatalog, ImageEntry, ImageError};
pub use net::EgressConfig;
pub use run_dir::reap_abandoned_run_dirs;
pub use setup::{MachineLimits, MachineSetup, Machines, SetupError};
pub use ssh::SshExecutor;
#[cfg(feature = "test-guest")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-guest")))]
pub use testguest::{TINY_LINUX, TestGuest, TestGuestBuilder, TestGuestError};
