//! [`QemuHypervisor`]: the [`Hypervisor`] seam on QEMU.

use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use solstice_core::{
    Hypervisor, HypervisorError, LogStream, Machine, MachineAccess, MachineFootprint, MachineRequest,
    ProvisionContext, RunnerInfo, SshAccess,
};
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::accel::{AccelChoice, AccelProbe, AccelVerdict};
use crate::console::{ConsoleLimits, ConsoleRecorder, ConsoleTail};
use crate::image::{BootMode, ImageCache, ImageCatalog, ImageEntry, ImageError, LogProgress, create_overlay};
use crate::keys::{KeyError, SshKeyPair};
use crate::budget::{Budget, OverBudget, Reservation, ReserveError};
use crate::egress::{EgressError, EgressLease, EgressProxy, EgressProxyBuilder};
use crate::net::{EgressConfig, NetSpec, egress_env};
use crate::ports::{PortAllocator, PortError, PortLease};
use crate::qemu::{BootSpec, QemuError, QemuProcess, StopOutcome, VmSpec};
use crate::qmp::{QmpClient, QmpError};
use crate::seed::{SeedConfig, SeedError};
use crate::ssh::{SshError, SshSession};

/// A machine could not be made, reached or removed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VmError {
    /// No catalog entry serves the label.
    #[error("no image serves the label `{0}`")]
    UnknownLabel(String),
    /// The base image could not be provided.
    #[error("image for `{label}` is not available")]
    Image {
        /// The label.
        label: String,
        /// The cause.
        #[source]
        source: ImageError,
    },
    /// The machine's files could not be written.
    #[error("could not prepare the files of machine {vm}")]
    Files {
        /// The machine.
        vm: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Making the keys failed.
    #[error("could not make the keys of machine {vm}")]
    Keys {
        /// The machine.
        vm: String,
        /// The cause.
        #[source]
        source: KeyError,
    },
    /// Writing the seed failed.
    #[error("could not write the cloud-init seed of machine {vm}")]
    Seed {
        /// The machine.
        vm: String,
        /// The cause.
        #[source]
        source: SeedError,
    },
    /// No port was free.
    #[error("no host port for machine {vm}")]
    Port {
        /// The machine.
        vm: String,
        /// The cause.
        #[source]
        source: PortError,
    },
    /// QEMU failed.
    #[error("QEMU failed for machine {vm}")]
    Qemu {
        /// The machine.
        vm: String,
        /// The cause.
        #[source]
        source: QemuError,
    },
    /// QMP failed.
    #[error("QMP failed for machine {vm}")]
    Qmp {
        /// The machine.
        vm: String,
        /// The cause.
        #[source]
        source: QmpError,
    },
    /// SSH into the machine failed for a reason other than it still booting.
    #[error("could not log in to machine {vm}")]
    Ssh {
        /// The machine.
        vm: String,
        /// The cause.
        #[source]
        source: SshError,
    },
    /// The machine did not answer SSH before the boot timeout.
    #[error("machine {vm} did not answer SSH within {seconds} s")]
    BootTimeout {
        /// The machine.
        vm: String,
        /// The timeout.
        seconds: u64,
    },
    /// The image needs more memory or vCPUs than the host's budget for all machines.
    #[error("machine for `{label}` cannot start on this host")]
    OverBudget {
        /// The label.
        label: String,
        /// What does not fit.
        #[source]
        source: OverBudget,
    },
    /// Provisioning was cancelled.
    #[error("provisioning machine {vm} was cancelled")]
    Cancelled {
        /// The machine.
        vm: String,
    },
    /// No such live machine.
    #[error("no live machine {0}")]
    NotFound(String),
    /// The egress proxy could not be started.
    #[error("could not start the egress proxy")]
    Egress(#[source] EgressError),
}

impl VmError {
    /// Whether trying again may help.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Image { source, .. } => source.is_transient(),
            Self::Port { .. } | Self::BootTimeout { .. } | Self::Qemu { .. } => true,
            _ => false,
        }
    }
}

impl From<VmError> for HypervisorError {
    fn from(e: VmError) -> Self {
        match e {
            VmError::UnknownLabel(label) => HypervisorError::UnknownLabel(label),
            VmError::Cancelled { .. } => HypervisorError::Cancelled,
            VmError::BootTimeout { vm, seconds } => HypervisorError::BootTimeout { machine: vm, seconds },
            other => HypervisorError::Backend {
                message: other.to_string(),
                transient: other.is_transient(),
                source: Some(Box::new(other)),
            },
        }
    }
}

#[derive(Debug, Clone)]
struct Config {
    qemu: PathBuf,
    qemu_img: PathBuf,
    run_dir: PathBuf,
    cache_dir: PathBuf,
    catalog: ImageCatalog,
    accel: AccelChoice,
    probe_kernel: Option<PathBuf>,
    cpu: Option<String>,
    machine: String,
    ports: PortAllocator,
    boot_timeout: Duration,
    ssh_interval: Duration,
    stop_grace: Duration,
    max_machines: usize,
    memory_budget_mib: Option<u32>,
    vcpu_budget: Option<u32>,
    egress: Option<Egress>,
    restrict: bool,
    kill_with_parent: bool,
    console_limits: ConsoleLimits,
}

/// Where guests' outbound traffic goes.
#[derive(Debug, Clone)]
enum Egress {
    /// A proxy somebody else runs.
    External(EgressConfig),
    /// A proxy this hypervisor starts on first use.
    Start(EgressProxyBuilder),
    /// A proxy that is already running.
    Running(EgressProxy),
}

/// Builds a [`QemuHypervisor`].
#[derive(Debug, Clone)]
#[must_use]
pub struct QemuHypervisorBuilder {
    config: Config,
}

impl QemuHypervisorBuilder {
    /// The QEMU binary. Default: `qemu-system-x86_64` from `PATH`.
    pub fn qemu(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.qemu = path.into();
        self
    }

    /// The `qemu-img` binary. Default: `qemu-img` from `PATH`.
    pub fn qemu_img(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.qemu_img = path.into();
        self
    }

    /// Where machines' working directories (overlay, seed, sockets, console log) are
    /// made. Default: `solstice-vms` in the system temporary directory.
    pub fn run_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.run_dir = dir.into();
        self
    }

    /// Where base images and the accelerator verdict are cached. Default:
    /// `solstice-cache` in the system temporary directory.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.cache_dir = dir.into();
        self
    }

    /// The image catalog. Default: empty.
    pub fn catalog(mut self, catalog: ImageCatalog) -> Self {
        self.config.catalog = catalog;
        self
    }

    /// Adds one image for `label`. Default: none.
    pub fn image(mut self, label: impl Into<String>, entry: ImageEntry) -> Self {
        self.config.catalog.insert(label, entry);
        self
    }

    /// How the accelerator is chosen. Default: [`AccelChoice::Auto`].
    pub fn accel(mut self, choice: AccelChoice) -> Self {
        self.config.accel = choice;
        self
    }

    /// The kernel the KVM probe boots. Default: the first kernel-booted catalog image's
    /// kernel; without one, `Auto` means TCG.
    pub fn probe_kernel(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.probe_kernel = Some(path.into());
        self
    }

    /// The CPU model. Default: `host` under KVM, `max` under TCG.
    pub fn cpu(mut self, model: impl Into<String>) -> Self {
        self.config.cpu = Some(model.into());
        self
    }

    /// The port allocator for SSH forwards (share one between hypervisors of a host).
    /// Default: ports 42000..44000.
    pub fn ports(mut self, ports: PortAllocator) -> Self {
        self.config.ports = ports;
        self
    }

    /// How much of each guest's serial console is kept on the host (see
    /// [`ConsoleLimits`]). Default: the first 8 MiB and the last 8 to 16 MiB.
    pub fn console_limits(mut self, limits: ConsoleLimits) -> Self {
        self.config.console_limits = limits;
        self
    }

    /// How long a machine may take to answer SSH. Default: 300 s.
    pub fn boot_timeout(mut self, timeout: Duration) -> Self {
        self.config.boot_timeout = timeout;
        self
    }

    /// The interval between SSH attempts while booting. Default: 250 ms.
    pub fn ssh_retry_interval(mut self, interval: Duration) -> Self {
        self.config.ssh_interval = interval;
        self
    }

    /// How long the guest gets to power off after the ACPI power button before QEMU is
    /// told to quit. Default: 10 s.
    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.config.stop_grace = grace;
        self
    }

    /// How many machines may run at once; more `provision` calls wait. Default: 4.
    pub fn max_machines(mut self, n: usize) -> Self {
        self.config.max_machines = n.max(1);
        self
    }

    /// The memory, in MiB, that all machines running at once may use together; a
    /// machine waits until its image's `memory_mib` is free. Default: no limit (only
    /// [`max_machines`](Self::max_machines)).
    pub fn memory_budget_mib(mut self, mib: u32) -> Self {
        self.config.memory_budget_mib = Some(mib);
        self
    }

    /// The vCPUs that all machines running at once may use together; a machine waits
    /// until its image's `vcpus` are free. Default: no limit.
    pub fn vcpu_budget(mut self, vcpus: u32) -> Self {
        self.config.vcpu_budget = Some(vcpus);
        self
    }

    /// Gives guests outbound access through an HTTP proxy on the host that somebody else
    /// runs (see [`EgressConfig`]); steps see `http_proxy` and friends. Default: no
    /// egress at all.
    pub fn egress(mut self, egress: EgressConfig) -> Self {
        self.config.egress = Some(Egress::External(egress));
        self
    }

    /// Gives guests outbound access to public addresses through an [`EgressProxy`] that
    /// the hypervisor starts with `proxy` when the first machine boots and stops when the
    /// hypervisor is dropped. Steps see `http_proxy`, `https_proxy`, `HTTP_PROXY` and
    /// `HTTPS_PROXY` set to [`crate::egress::EGRESS_PROXY_URL`] (through [`Machine::env`]).
    pub fn start_egress_proxy(mut self, proxy: EgressProxyBuilder) -> Self {
        self.config.egress = Some(Egress::Start(proxy));
        self
    }

    /// Like [`Self::start_egress_proxy`], with a proxy that is already running (it can
    /// serve several hypervisors).
    pub fn egress_proxy(mut self, proxy: EgressProxy) -> Self {
        self.config.egress = Some(Egress::Running(proxy));
        self
    }

    /// Whether QEMU is started through `setpriv --pdeathsig KILL`, so it dies with this
    /// process even after a SIGKILL. The signal follows the thread that started QEMU, so
    /// turn this off if machines are provisioned from threads that end before the
    /// machine (runtime worker threads do not). Default: true.
    pub fn kill_with_parent(mut self, on: bool) -> Self {
        self.config.kill_with_parent = on;
        self
    }

    /// DANGEROUS: lets guests reach everything the host reaches, including services on
    /// the host's own loopback through 10.0.2.2 (plain SLIRP). Only for trusted jobs.
    pub fn dangerous_allow_host_network(mut self) -> Self {
        self.config.restrict = false;
        self
    }

    /// Builds the hypervisor. Nothing is started until the first `provision`.
    pub fn build(self) -> QemuHypervisor {
        let slots = Arc::new(Semaphore::new(self.config.max_machines));
        let budget = Budget::new(self.config.memory_budget_mib, self.config.vcpu_budget);
        let cache = ImageCache::new(self.config.cache_dir.join("images"));
        QemuHypervisor {
            inner: Arc::new(Inner {
                config: self.config,
                cache,
                slots,
                budget,
                accel: OnceCell::new(),
                proxy: OnceCell::new(),
                live: Mutex::default(),
            }),
        }
    }
}

#[derive(Debug)]
struct Inner {
    config: Config,
    cache: ImageCache,
    slots: Arc<Semaphore>,
    budget: Budget,
    accel: OnceCell<AccelVerdict>,
    proxy: OnceCell<EgressProxy>,
    live: Mutex<HashMap<String, LiveVm>>,
}

/// A running machine and everything it owns; dropping it kills QEMU and removes its
/// files (the normal path stops it in order first).
#[derive(Debug)]
struct LiveVm {
    process: QemuProcess,
    qmp: Option<QmpClient>,
    dir: tempfile::TempDir,
    _port: PortLease,
    _permit: OwnedSemaphorePermit,
    _share: Reservation,
    _keys: (SshKeyPair, SshKeyPair),
    /// The machine's own listener on the egress proxy, if the hypervisor runs one.
    _egress: Option<EgressLease>,
    /// Writes the serial console into `console.log`, capped.
    _console: ConsoleRecorder,
}

/// A [`Hypervisor`] that runs each job in a fresh QEMU virtual machine.
///
/// `provision` picks the catalog image for the job's label, makes a working directory
/// with a qcow2 overlay and a cloud-init seed carrying two fresh ed25519 keys (the job's
/// login key and the machine's host key), leases a loopback port for the SSH forward,
/// starts QEMU (KVM if the probe says it works, else TCG), connects QMP, streams the
/// serial console into the job log and waits until SSH logs in with the expected host
/// key. The directory is 0700 and every file in it 0600 from its creation on (QEMU runs
/// with umask 077), and the seed, which holds the machine's host private key, is
/// overwritten with zeros as soon as the guest has answered SSH. `destroy` stops QEMU in
/// order (ACPI power button, grace period, QMP `quit`, SIGKILL) and removes the
/// directory; keys are forgotten. A machine whose handle is dropped without `destroy` is
/// killed and removed as well. Cloning is cheap and shares the machines; do not wrap it
/// in another `Arc`.
#[derive(Debug, Clone)]
pub struct QemuHypervisor {
    inner: Arc<Inner>,
}

fn files_error(vm: &str) -> impl FnOnce(std::io::Error) -> VmError + '_ {
    move |source| VmError::Files { vm: vm.to_owned(), source }
}

impl QemuHypervisor {
    /// A builder with the defaults listed on its methods.
    pub fn builder() -> QemuHypervisorBuilder {
        let tmp = std::env::temp_dir();
        QemuHypervisorBuilder {
            config: Config {
                qemu: "qemu-system-x86_64".into(),
                qemu_img: "qemu-img".into(),
                run_dir: tmp.join("solstice-vms"),
                cache_dir: tmp.join("solstice-cache"),
                catalog: ImageCatalog::default(),
                accel: AccelChoice::Auto,
                probe_kernel: None,
                cpu: None,
                machine: "q35".into(),
                ports: PortAllocator::default(),
                boot_timeout: Duration::from_secs(300),
                ssh_interval: Duration::from_millis(250),
                stop_grace: Duration::from_secs(10),
                max_machines: 4,
                memory_budget_mib: None,
                vcpu_budget: None,
                egress: None,
                restrict: true,
                kill_with_parent: true,
                console_limits: ConsoleLimits::default(),
            },
        }
    }

    /// The egress proxy guests use, starting it if this hypervisor owns one and it is
    /// not running yet; `None` without egress.
    ///
    /// # Errors
    /// [`VmError::Egress`] when the proxy cannot start.
    pub async fn egress_config(&self) -> Result<Option<EgressConfig>, VmError> {
        match &self.inner.config.egress {
            None => Ok(None),
            Some(Egress::External(config)) => Ok(Some(config.clone())),
            Some(Egress::Running(proxy)) => Ok(Some(proxy.egress_config())),
            Some(Egress::Start(builder)) => {
                let proxy = self.inner.proxy.get_or_try_init(|| builder.clone().start()).await.map_err(VmError::Egress)?;
                Ok(Some(proxy.egress_config()))
            }
        }
    }

    /// The egress settings for one machine: with a proxy this hypervisor runs, a
    /// listener of its own (so its tunnels are counted apart from other machines'), held
    /// by the returned lease; with an external proxy, the shared settings.
    async fn egress_for(&self, vm: &str) -> Result<(Option<EgressConfig>, Option<EgressLease>), VmError> {
        let proxy = match &self.inner.config.egress {
            None => return Ok((None, None)),
            Some(Egress::External(config)) => return Ok((Some(config.clone()), None)),
            Some(Egress::Running(proxy)) => proxy,
            Some(Egress::Start(builder)) => self.inner.proxy.get_or_try_init(|| builder.clone().start()).await.map_err(VmError::Egress)?,
        };
        let lease = proxy.open_for(vm).await.map_err(VmError::Egress)?;
        Ok((Some(lease.egress_config()), Some(lease)))
    }

    /// How many machines are running.
    pub fn live_machines(&self) -> usize {
        self.inner.live.lock().map(|l| l.len()).unwrap_or(0)
    }

    /// The accelerator machines use, probing once if configured to.
    pub async fn accelerator(&self) -> AccelVerdict {
        self.inner
            .accel
            .get_or_init(|| async {
                let config = &self.inner.config;
                let kernel = config.probe_kernel.clone().or_else(|| {
                    config.catalog.images.values().find_map(|e| match &e.boot {
                        BootMode::Kernel { kernel, .. } => Some(kernel.clone()),
                        BootMode::Disk => None,
                    })
                });
                match (config.accel, kernel) {
                    (AccelChoice::Auto, None) => AccelVerdict {
                        accel: crate::accel::Accel::Tcg,
                        reason: "no kernel to probe KVM with; set probe_kernel to enable KVM detection".into(),
                    },
                    (choice, kernel) => {
                        let mut probe = AccelProbe::new(&config.qemu, kernel.unwrap_or_default());
                        if let Some(cpu) = &config.cpu {
                            probe.cpu = cpu.clone();
                        }
                        probe.cache_dir = Some(config.cache_dir.clone());
                        probe.resolve(choice).await
                    }
                }
            })
            .await
            .clone()
    }

    /// Makes and boots a machine for `request`, like [`Hypervisor::provision`]: the
    /// machine's footprint (its directory, then QEMU's pid and SSH port) goes to
    /// `ctx.journal` before QEMU starts and once it has.
    ///
    /// # Errors
    /// [`VmError`]; nothing is left behind on error.
    ///
    /// # Cancel safety
    /// Dropping the future kills QEMU and removes the machine's files.
    pub async fn boot(&self, request: &MachineRequest, ctx: &ProvisionContext<'_>) -> Result<Machine, VmError> {
        let ProvisionContext { console, cancel, journal, .. } = *ctx;
        let config = &self.inner.config;
        let entry = config.catalog.lookup(&request.label).cloned().ok_or_else(|| VmError::UnknownLabel(request.label.clone()))?;
        let profile = entry.guest_profile().map_err(|e| VmError::Image { label: request.label.clone(), source: e })?;
        let permit = tokio::select! {
            permit = self.inner.slots.clone().acquire_owned() => permit.map_err(|_| VmError::Cancelled { vm: request.label.clone() })?,
            _ = cancel.cancelled() => return Err(VmError::Cancelled { vm: request.label.clone() }),
        };
        let share = match self.inner.budget.reserve(entry.memory_mib, u32::from(entry.vcpus), cancel).await {
            Ok(share) => share,
            Err(ReserveError::Cancelled) => return Err(VmError::Cancelled { vm: request.label.clone() }),
            Err(ReserveError::OverBudget(source)) => return Err(VmError::OverBudget { label: request.label.clone(), source }),
        };
        let short = request.job_id.to_string().chars().take(8).collect::<String>();
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let vm = format!("vm-{short}-{}", &suffix[..6]);
        let started = Instant::now();
        let base = match &entry.source {
            Some(source) => Some((
                self.inner
                    .cache
                    .ensure(source, &LogProgress::default())
                    .await
                    .map_err(|e| VmError::Image { label: request.label.clone(), source: e })?,
                source.format,
            )),
            None => None,
        };
        // Only this user may enter a machine's directory or read its files (the seed
        // holds the machine's host key, the overlay the job's disk): made so, not
        // changed after. An existing run directory keeps the mode its operator gave it.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(PRIVATE_DIR)
            .create(&config.run_dir)
            .map_err(files_error(&vm))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{vm}-"))
            .permissions(std::fs::Permissions::from_mode(PRIVATE_DIR))
            .tempdir_in(&config.run_dir)
            .map_err(files_error(&vm))?;
        let mut footprint = MachineFootprint { machine_id: vm.clone(), files: vec![dir.path().to_path_buf()], ..Default::default() };
        journal.record(&footprint).await;
        let client_key = SshKeyPair::generate(&format!("solstice-job-{}", request.job_id))
            .map_err(|e| VmError::Keys { vm: vm.clone(), source: e })?;
        let host_key = SshKeyPair::generate(&vm).map_err(|e| VmError::Keys { vm: vm.clone(), source: e })?;
        let seed = SeedConfig {
            instance_id: vm.clone(),
            hostname: vm.clone(),
            user: profile.user.clone(),
            shell: Some(profile.shell.clone()),
            groups: profile.groups.clone(),
            sudo: profile.sudo.clone(),
            authorized_keys: vec![client_key.public_openssh()],
            host_key: Some((host_key.private_openssh().map_err(|e| VmError::Keys { vm: vm.clone(), source: e })?, host_key.public_openssh())),
        };
        let seed_path = dir.path().join("seed.iso");
        let iso = tokio::task::spawn_blocking(move || seed.to_iso())
            .await
            .map_err(|e| VmError::Files { vm: vm.clone(), source: std::io::Error::other(e) })?
            .map_err(|e| VmError::Seed { vm: vm.clone(), source: e })?;
        write_private(&seed_path, &iso).map_err(files_error(&vm))?;
        let disk = match &base {
            Some((base, format)) => {
                let overlay = dir.path().join("overlay.qcow2");
                create_overlay(&config.qemu_img, base, *format, &overlay, entry.disk_gib)
                    .await
                    .map_err(|e| VmError::Image { label: request.label.clone(), source: e })?;
                Some(overlay)
            }
            None => None,
        };
        let accel = self.accelerator().await;
        let (egress, egress_lease) = self.egress_for(&vm).await?;
        let boot = match &entry.boot {
            BootMode::Disk => BootSpec::Disk,
            BootMode::Kernel { kernel, initrd, append } => {
                BootSpec::Kernel { kernel: kernel.clone(), initrd: initrd.clone(), append: append.clone() }
            }
        };
        console
            .send(LogStream::System, format!("Booting {vm} ({} under {}, {} vCPU, {} MiB)", request.label, accel.accel, entry.vcpus, entry.memory_mib))
            .await;
        // A port can be taken by another program between our probe and QEMU's bind:
        // QEMU then exits at once, and we try the next port.
        let mut attempt = 0;
        let (mut process, port, console_log, recorder) = loop {
            attempt += 1;
            let port = config.ports.allocate().map_err(|e| VmError::Port { vm: vm.clone(), source: e })?;
            let mut net = NetSpec::isolated(port.port());
            net.restrict = config.restrict;
            net.egress = egress.clone();
            let console_log = dir.path().join("console.log");
            let console_socket = dir.path().join("console.sock");
            let recorder = ConsoleRecorder::bind(&console_socket, console_log.clone(), config.console_limits).map_err(files_error(&vm))?;
            let spec = VmSpec {
                name: vm.clone(),
                accel: accel.accel,
                cpu: config.cpu.clone(),
                machine: config.machine.clone(),
                vcpus: entry.vcpus,
                memory_mib: entry.memory_mib,
                boot: boot.clone(),
                disk: disk.clone(),
                seed_iso: Some(seed_path.clone()),
                net,
                qmp_socket: dir.path().join("qmp.sock"),
                console_log: console_log.clone(),
                console_socket: Some(console_socket),
                extra_args: Vec::new(),
            };
            let mut process = QemuProcess::spawn(&config.qemu, &spec, &dir.path().join("qemu.log"), config.kill_with_parent)
                .map_err(|e| VmError::Qemu { vm: vm.clone(), source: e })?;
            if let Some(status) = process.wait_for(Duration::from_millis(300)).await {
                let error = process.exited_error(status);
                if attempt < 3 && error.to_string().contains("host forwarding") {
                    tracing::warn!(vm, port = port.port(), "SSH forward port was taken; retrying with another");
                    continue;
                }
                return Err(VmError::Qemu { vm: vm.clone(), source: error });
            }
            break (process, port, console_log, recorder);
        };
        footprint.pid = Some(process.pid());
        footprint.ssh_port = Some(port.port());
        journal.record(&footprint).await;
        let qmp_socket = dir.path().join("qmp.sock");
        let mut qmp = tokio::select! {
            qmp = QmpClient::connect(&qmp_socket, Duration::from_secs(10)) => qmp.map_err(|e| VmError::Qmp { vm: vm.clone(), source: e })?,
            _ = cancel.cancelled() => return Err(VmError::Cancelled { vm }),
        };
        let status = qmp.query_status().await.map_err(|e| VmError::Qmp { vm: vm.clone(), source: e })?;
        tracing::debug!(vm, pid = process.pid(), status, qemu = qmp.version(), "QEMU is up");
        let tail = ConsoleTail::start(console_log, console.clone(), format!("Boot console of {vm}"), profile.ready_marker.clone());
        let access = SshAccess {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port.port())),
            user: profile.user.clone(),
            host_key: host_key.public_openssh(),
            client_key: client_key.private_openssh().map_err(|e| VmError::Keys { vm: vm.clone(), source: e })?,
        };
        let ready = wait_for_ssh(&vm, &access, &mut process, config.boot_timeout, config.ssh_interval, cancel).await;
        tail.stop().await;
        // The guest answered with the host key from the seed, so it has read the seed:
        // its private key has no reason to stay on the host.
        let ready = match ready {
            Ok(()) => {
                let path = seed_path.clone();
                tokio::task::spawn_blocking(move || scrub_seed(&path))
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
                    .map_err(files_error(&vm))
            }
            Err(e) => Err(e),
        };
        if let Err(e) = ready {
            let _ = process.stop(Some(&mut qmp), Duration::ZERO).await;
            return Err(e);
        }
        console
            .send(LogStream::System, format!("{vm} answered SSH after {:.1} s", started.elapsed().as_secs_f64()))
            .await;
        let runner = RunnerInfo {
            os: entry.runner_os().map_err(|e| VmError::Image { label: request.label.clone(), source: e })?,
            arch: entry.runner_arch(),
            name: vm.clone(),
            temp: profile.temp.clone(),
            tool_cache: profile.tool_cache.clone(),
        };
        let machine = Machine {
            id: vm.clone(),
            label: request.label.clone(),
            workspace: profile.workspace.clone(),
            access: MachineAccess::Ssh(access),
            runner,
            env: if egress.is_some() { egress_env() } else { Default::default() },
        };
        let live = LiveVm { process, qmp: Some(qmp), dir, _port: port, _permit: permit, _share: share, _keys: (client_key, host_key), _egress: egress_lease, _console: recorder };
        self.inner.live.lock().unwrap_or_else(|p| p.into_inner()).insert(vm, live);
        Ok(machine)
    }

    /// Stops a machine in order and removes its files; returns how QEMU ended.
    ///
    /// # Errors
    /// [`VmError::NotFound`] for an unknown id; [`VmError::Files`] when the directory
    /// could not be removed.
    pub async fn stop(&self, id: &str) -> Result<StopOutcome, VmError> {
        let live = self.inner.live.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        let Some(mut live) = live else {
            return Err(VmError::NotFound(id.to_owned()));
        };
        let outcome = live
            .process
            .stop(live.qmp.as_mut(), self.inner.config.stop_grace)
            .await
            .map_err(|e| VmError::Qemu { vm: id.to_owned(), source: e })?;
        tracing::info!(vm = id, ?outcome, "machine stopped");
        let LiveVm { dir, qmp, .. } = live;
        drop(qmp);
        let path = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || dir.close())
            .await
            .map_err(|e| VmError::Files { vm: id.to_owned(), source: std::io::Error::other(e) })?
            .map_err(|e| VmError::Files { vm: id.to_owned(), source: e })?;
        debug_assert!(!Path::new(&path).exists());
        Ok(outcome)
    }

    /// The working directory of a live machine (overlay, seed, sockets, console log).
    pub fn machine_dir(&self, id: &str) -> Option<PathBuf> {
        self.inner.live.lock().ok()?.get(id).map(|l| l.dir.path().to_path_buf())
    }

    /// The QEMU pid of a live machine.
    pub fn machine_pid(&self, id: &str) -> Option<u32> {
        self.inner.live.lock().ok()?.get(id).map(|l| l.process.pid())
    }
}

/// The mode of a machine's directory (and of the run directory when it is made).
const PRIVATE_DIR: u32 = 0o700;

/// Writes `data` to a new file that is 0600 from its creation on.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(data)?;
    file.sync_all()
}

/// Overwrites the seed with zeros in place once the guest has read it. Unlinking would
/// not do: QEMU keeps the file open (its descriptor would still give the key to anyone
/// who can read `/proc/<pid>/fd`), and its lock on the file is how a live machine's
/// directory is told from a dead one's ([`crate::image::machine_dirs`]). The guest sees a
/// blank disc if it looks again.
fn scrub_seed(path: &Path) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
    let len = file.metadata()?.len();
    std::io::copy(&mut std::io::repeat(0).take(len), &mut file)?;
    file.flush()?;
    file.sync_all()
}

async fn wait_for_ssh(
    vm: &str,
    access: &SshAccess,
    process: &mut QemuProcess,
    timeout: Duration,
    interval: Duration,
    cancel: &CancellationToken,
) -> Result<(), VmError> {
    let until = tokio::time::Instant::now() + timeout;
    loop {
        if cancel.is_cancelled() {
            return Err(VmError::Cancelled { vm: vm.to_owned() });
        }
        if let Some(status) = process.try_status() {
            return Err(VmError::Qemu { vm: vm.to_owned(), source: process.exited_error(status) });
        }
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(VmError::BootTimeout { vm: vm.to_owned(), seconds: timeout.as_secs() });
        }
        let attempt = async {
            let session = SshSession::connect(access, left.min(Duration::from_secs(10))).await?;
            session.exec("true").await
        };
        let result = tokio::select! {
            r = attempt => r,
            _ = cancel.cancelled() => return Err(VmError::Cancelled { vm: vm.to_owned() }),
        };
        match result {
            Ok(out) if out.exit_code == Some(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.is_transient() => tracing::trace!(vm, error = %e, "SSH not up yet"),
            Err(e) => return Err(VmError::Ssh { vm: vm.to_owned(), source: e }),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = cancel.cancelled() => return Err(VmError::Cancelled { vm: vm.to_owned() }),
        }
    }
}

#[async_trait]
impl Hypervisor for QemuHypervisor {
    fn serves(&self, label: &str) -> bool {
        self.inner.config.catalog.lookup(label).is_some()
    }

    async fn provision(&self, request: &MachineRequest, ctx: &ProvisionContext<'_>) -> Result<Machine, HypervisorError> {
        Ok(self.boot(request, ctx).await?)
    }

    async fn destroy(&self, machine: &Machine) -> Result<(), HypervisorError> {
        match self.stop(&machine.id).await {
            Ok(_) | Err(VmError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use solstice_core::LogSink;

    #[tokio::test]
    async fn a_hypervisor_starts_one_egress_proxy_and_reuses_it() {
        let hypervisor = QemuHypervisor::builder().start_egress_proxy(EgressProxy::builder()).build();
        let first = hypervisor.egress_config().await.expect("proxy starts").expect("egress is on");
        let second = hypervisor.egress_config().await.expect("proxy runs").expect("egress is on");
        assert_eq!(first, second);
        assert_ne!(first.proxy_port, 0);
        let reply = async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", first.proxy_port)).await?;
            s.write_all(b"CONNECT 127.0.0.1:22 HTTP/1.1\r\n\r\n").await?;
            let mut out = String::new();
            s.read_to_string(&mut out).await?;
            std::io::Result::Ok(out)
        };
        let reply = reply.await.expect("the proxy answers");
        assert!(reply.starts_with("HTTP/1.1 403 "), "{reply}");
        assert_eq!(QemuHypervisor::builder().build().egress_config().await.expect("no proxy"), None);
    }

    #[tokio::test]
    async fn an_image_larger_than_the_hosts_memory_budget_is_refused_before_anything_starts() {
        let catalog = ImageCatalog::from_toml(
            "[images.big]\nprofile = \"tiny\"\nmemory_mib = 4096\nboot = { mode = \"kernel\", kernel = \"/nonexistent/vmlinuz\", initrd = \"/nonexistent/initrd\", append = \"\" }\n",
        )
        .expect("catalog");
        let run_dir = tempfile::tempdir().expect("tempdir");
        let hypervisor = QemuHypervisor::builder().catalog(catalog).run_dir(run_dir.path()).memory_budget_mib(2048).build();
        let request = MachineRequest { job_id: solstice_core::JobId::new(), label: "big".into(), debug_ssh: false };
        let (console, _lines) = LogSink::channel(16);
        let cancel = CancellationToken::new();
        let error = hypervisor.boot(&request, &ProvisionContext::new(&console, &cancel)).await.expect_err("over budget");
        assert!(matches!(error, VmError::OverBudget { .. }), "{error:?}");
        assert!(!error.is_transient(), "waiting would never help");
        assert_eq!(std::fs::read_dir(run_dir.path()).expect("read").count(), 0, "nothing was made");
    }
}
