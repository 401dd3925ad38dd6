//! The [`Hypervisor`] seam: machines that jobs run in.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::{JobId, LogSink, Secret};

/// What the engine asks a hypervisor for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineRequest {
    /// The job the machine is for.
    pub job_id: JobId,
    /// The `runs-on` label chosen for the job (see [`crate::JobRequest::route_label`]).
    pub label: String,
    /// The job opted in to debug SSH if it fails.
    pub debug_ssh: bool,
}

/// How steps reach a machine.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MachineAccess {
    /// Steps run as processes on this host.
    Local,
    /// Steps run over SSH.
    Ssh(SshAccess),
}

/// SSH coordinates of a machine, with the job's ephemeral credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshAccess {
    /// Where the SSH server listens (a loopback port forward for QEMU guests).
    pub addr: SocketAddr,
    /// The user to log in as.
    pub user: String,
    /// The host key the server must present, in OpenSSH public key format.
    pub host_key: String,
    /// The job's private key, OpenSSH format. Lives only in memory.
    pub client_key: Secret,
}

/// A provisioned machine, reachable and ready for steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// The hypervisor's id of the machine, unique on its host.
    pub id: String,
    /// The label it was made for.
    pub label: String,
    /// Absolute path of the job's workspace inside the machine.
    pub workspace: String,
    /// How to reach it.
    pub access: MachineAccess,
    /// What the machine says about itself to the job: the `runner` context and the
    /// `RUNNER_*` variables.
    pub runner: RunnerInfo,
    /// Variables every step on the machine gets, under the job's and the step's own (for
    /// example the egress proxy's `http_proxy` on VMs with egress). Usually empty.
    pub env: BTreeMap<String, String>,
}

impl Machine {
    /// The variables a step on this machine starts from: [`RunnerInfo::env`], then
    /// [`Machine::env`]. The engine puts the job's and the step's variables over them.
    pub fn step_env(&self) -> BTreeMap<String, String> {
        let mut env = self.runner.env();
        env.extend(self.env.clone());
        env
    }
}

/// What a machine tells a job's steps about itself: GitHub's `runner` context and the
/// `RUNNER_*` variables.
///
/// Hypervisors fill it in for every [`Machine`]; the engine evaluates `runner.*` against
/// it when a step runs and gives every step its [`RunnerInfo::env`]. Values follow
/// GitHub's spelling where GitHub has one (see [`RunnerInfo::os_name`] and
/// [`RunnerInfo::arch_name`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerInfo {
    /// `runner.os`, `RUNNER_OS`: `Linux`, `macOS` or `Windows` as GitHub spells them,
    /// otherwise what the system's own `uname -s` says (`FreeBSD`, `OpenBSD`, `NetBSD`,
    /// `DragonFly`, `SunOS` for illumos and Solaris, `Haiku`).
    pub os: String,
    /// `runner.arch`, `RUNNER_ARCH`: `X64`, `ARM64`, `X86`, `ARM` (GitHub's spellings), or
    /// another architecture's name in capitals.
    pub arch: String,
    /// `runner.name`, `RUNNER_NAME`: the machine's name (its id).
    pub name: String,
    /// `runner.temp`, `RUNNER_TEMP`: absolute path of a directory for temporary files,
    /// empty when the job starts. It exists by the time a step runs.
    pub temp: String,
    /// `runner.tool_cache`, `RUNNER_TOOL_CACHE`: absolute path of the directory tool
    /// installers use. It exists by the time a step runs.
    pub tool_cache: String,
}

impl RunnerInfo {
    /// This host's `runner.os`: [`std::env::consts::OS`] through [`RunnerInfo::os_name`].
    pub fn host_os() -> String {
        Self::os_name(std::env::consts::OS)
    }

    /// This host's `runner.arch`: [`std::env::consts::ARCH`] through [`RunnerInfo::arch_name`].
    pub fn host_arch() -> String {
        Self::arch_name(std::env::consts::ARCH)
    }

    /// The `runner.os` of a system Rust calls `os` (the values of [`std::env::consts::OS`]):
    /// GitHub's `Linux`, `macOS`, `Windows`; otherwise what the system's `uname -s` says
    /// (`FreeBSD`, `OpenBSD`, `NetBSD`, `DragonFly`, `SunOS` for `illumos` and `solaris`,
    /// `Haiku`). A name not in that list is returned as it is.
    ///
    /// ```
    /// use solstice_core::RunnerInfo;
    /// assert_eq!(RunnerInfo::os_name("linux"), "Linux");
    /// assert_eq!(RunnerInfo::os_name("illumos"), "SunOS");
    /// ```
    pub fn os_name(os: &str) -> String {
        match os {
            "linux" | "android" => "Linux",
            "macos" => "macOS",
            "windows" => "Windows",
            "freebsd" => "FreeBSD",
            "openbsd" => "OpenBSD",
            "netbsd" => "NetBSD",
            "dragonfly" => "DragonFly",
            "illumos" | "solaris" => "SunOS",
            "haiku" => "Haiku",
            other => other,
        }
        .to_owned()
    }

    /// The `runner.arch` of an architecture Rust calls `arch` (the values of
    /// [`std::env::consts::ARCH`]): GitHub's `X64`, `ARM64`, `X86`, `ARM`; any other in
    /// capitals (`RISCV64`, `S390X`).
    ///
    /// ```
    /// use solstice_core::RunnerInfo;
    /// assert_eq!(RunnerInfo::arch_name("x86_64"), "X64");
    /// assert_eq!(RunnerInfo::arch_name("aarch64"), "ARM64");
    /// ```
    pub fn arch_name(arch: &str) -> String {
        match arch {
            "x86_64" => "X64".to_owned(),
            "aarch64" => "ARM64".to_owned(),
            "x86" => "X86".to_owned(),
            "arm" => "ARM".to_owned(),
            other => other.to_ascii_uppercase(),
        }
    }

    /// The `RUNNER_OS`, `RUNNER_ARCH`, `RUNNER_NAME`, `RUNNER_TEMP` and
    /// `RUNNER_TOOL_CACHE` variables.
    pub fn env(&self) -> BTreeMap<String, String> {
        [
            ("RUNNER_OS", &self.os),
            ("RUNNER_ARCH", &self.arch),
            ("RUNNER_NAME", &self.name),
            ("RUNNER_TEMP", &self.temp),
            ("RUNNER_TOOL_CACHE", &self.tool_cache),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect()
    }
}

/// What a machine leaves on the host while it lives: enough for a restarted
/// orchestrator to remove it after the process that made it died (SIGKILL, power loss).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MachineFootprint {
    /// The machine's id (also part of its process's command line, which is how a
    /// reaper tells the machine's process from an unrelated one that reused the pid).
    pub machine_id: String,
    /// The machine's process, once started.
    pub pid: Option<u32>,
    /// The host port of its SSH forward, if any.
    pub ssh_port: Option<u16>,
    /// Files and directories that belong to the machine alone (absolute paths).
    pub files: Vec<PathBuf>,
}

/// Where a hypervisor writes down a machine's [`MachineFootprint`] before and while it
/// starts, so that nothing it makes can outlive a crash unnoticed. The engine gives one
/// backed by its state store, through [`ProvisionContext::journal`].
#[async_trait]
pub trait MachineJournal: Send + Sync {
    /// Records (or updates) what the machine has left on the host so far. Call it
    /// before starting the machine's process and again once its pid is known.
    async fn record(&self, footprint: &MachineFootprint);
}

/// A journal that writes nothing: for callers without a state store.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoJournal;

#[async_trait]
impl MachineJournal for NoJournal {
    async fn record(&self, _footprint: &MachineFootprint) {}
}

/// Everything [`Hypervisor::provision`] gets besides the [`MachineRequest`]: where the
/// boot console goes, when to give up, and where to journal what the machine leaves on
/// the host.
///
/// Build one with [`ProvisionContext::new`] (no journal) and add the engine's journal
/// with [`ProvisionContext::with_journal`]. Hypervisors read the fields.
#[derive(Clone, Copy)]
#[non_exhaustive]
pub struct ProvisionContext<'a> {
    /// Boot console output, sent as it appears.
    pub console: &'a LogSink,
    /// Fires when the machine is no longer wanted (the job was cancelled or timed out).
    pub cancel: &'a CancellationToken,
    /// Where the machine's [`MachineFootprint`] is written before anything that can
    /// outlive this process is started. [`NoJournal`] unless the caller gave one.
    pub journal: &'a dyn MachineJournal,
}

impl<'a> ProvisionContext<'a> {
    /// A context without a journal: for callers with no state store (tests, `solstice
    /// run`), whose machines die with the process anyway.
    pub fn new(console: &'a LogSink, cancel: &'a CancellationToken) -> Self {
        Self { console, cancel, journal: &NoJournal }
    }

    /// The same context, journaling to `journal`.
    #[must_use]
    pub fn with_journal(self, journal: &'a dyn MachineJournal) -> Self {
        Self { journal, ..self }
    }
}

impl std::fmt::Debug for ProvisionContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisionContext")
            .field("console", &self.console)
            .field("cancelled", &self.cancel.is_cancelled())
            .finish_non_exhaustive()
    }
}

/// Why a hypervisor could not give or take back a machine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HypervisorError {
    /// No image or machine type serves the label.
    #[error("no machine serves the label `{0}`")]
    UnknownLabel(String),
    /// Provisioning was cancelled before the machine was ready.
    #[error("provisioning was cancelled")]
    Cancelled,
    /// The machine did not become reachable in time.
    #[error("machine {machine} did not become reachable within {seconds} s")]
    BootTimeout {
        /// The machine's id.
        machine: String,
        /// The deadline that passed.
        seconds: u64,
    },
    /// Anything else the backend reports; `transient` says whether a retry may help.
    #[error("{message}")]
    Backend {
        /// What failed, in this layer's words.
        message: String,
        /// A retry might succeed (resources busy, a download failed).
        transient: bool,
        /// The backend's own error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl HypervisorError {
    /// Whether trying again later might succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Backend { transient, .. } => *transient,
            Self::BootTimeout { .. } => true,
            Self::UnknownLabel(_) | Self::Cancelled => false,
        }
    }
}

/// Gives the engine machines and takes them back.
///
/// # Contract
/// - [`provision`](Hypervisor::provision) returns only when the machine is reachable
///   through its [`MachineAccess`]. If it fails or is cancelled, it has already released
///   everything it made: no process, file or port is left behind.
/// - Before it starts anything that can outlive this process (a VM process, files, a
///   port forward), `provision` writes the machine's [`MachineFootprint`] to
///   [`ProvisionContext::journal`], and again once the footprint grows (the pid is
///   known). That record is how a restarted engine [`reap`](Hypervisor::reap)s what a
///   crash left. Machines that die with the process (host workspaces) need not record.
///   A wrapper around another hypervisor passes the context on unchanged.
/// - [`destroy`](Hypervisor::destroy) stops the machine and removes every file of it.
///   It is idempotent and is called exactly once for every machine `provision` returned,
///   whatever happened to the job (the engine guarantees this, also after a panic in an
///   executor).
/// - Boot console output goes to [`ProvisionContext::console`] as it appears.
///
/// # Example
/// ```
/// use solstice_core::{Hypervisor, HostHypervisor, MachineRequest, LogSink, JobId, ProvisionContext};
/// use tokio_util::sync::CancellationToken;
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let hypervisor = HostHypervisor::new();
/// let (console, _lines) = LogSink::channel(64);
/// let cancel = CancellationToken::new();
/// let request = MachineRequest { job_id: JobId::new(), label: "host".into(), debug_ssh: false };
/// let machine = hypervisor.provision(&request, &ProvisionContext::new(&console, &cancel)).await?;
/// assert!(std::path::Path::new(&machine.workspace).is_dir());
/// hypervisor.destroy(&machine).await?;
/// assert!(!std::path::Path::new(&machine.workspace).exists());
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(run()).unwrap();
/// ```
#[async_trait]
pub trait Hypervisor: Send + Sync + 'static {
    /// Whether this hypervisor can make machines for `label`.
    fn serves(&self, label: &str) -> bool;

    /// Makes, starts and waits for a machine, journaling its footprint to `ctx.journal`
    /// before anything that can outlive this process is started (see the contract above).
    ///
    /// # Errors
    /// [`HypervisorError`]; on error nothing is left behind.
    ///
    /// # Cancel safety
    /// When `ctx.cancel` fires, returns [`HypervisorError::Cancelled`] promptly after
    /// tearing down what it had started.
    async fn provision(&self, request: &MachineRequest, ctx: &ProvisionContext<'_>) -> Result<Machine, HypervisorError>;

    /// Stops the machine and removes everything it used.
    ///
    /// # Errors
    /// [`HypervisorError`] when something could not be removed; the engine logs it.
    async fn destroy(&self, machine: &Machine) -> Result<(), HypervisorError>;

    /// Removes what a machine recorded by a process that is gone left behind: stops
    /// its process (only if that process still names the machine) and deletes its
    /// files. Idempotent; a machine already gone is success.
    ///
    /// The default does exactly that with signals and file removal, which suits any
    /// hypervisor whose machines are host processes.
    ///
    /// # Errors
    /// [`HypervisorError::Backend`] when the process survives SIGKILL or a file cannot
    /// be removed.
    async fn reap(&self, footprint: &MachineFootprint) -> Result<(), HypervisorError> {
        crate::reap::reap_footprint(footprint).await
    }
}
