//! Harness for the QEMU end-to-end tests of Solstice CI.
//!
//! The tests in `tests/it` boot the tiny test guest ([`solstice_vm::TestGuest`]) under
//! KVM when it works and TCG otherwise, and run jobs in it over SSH. They never skip:
//! when QEMU or a Debian package the guest is built from is missing, they fail and say
//! which package to install.
#![warn(missing_docs, missing_debug_implementations)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use solstice_core::{JobId, LogSink, Machine, MachineRequest, OutputLine, ProvisionContext, ScriptRun, StepExecutor, StepExit};
use solstice_vm::ports::PortAllocator;
use solstice_vm::{AccelChoice, GuestProfile, ImageCatalog, QemuHypervisor, QemuHypervisorBuilder, SshExecutor, TestGuest};
use tokio_util::sync::CancellationToken;

/// The label the test guest serves.
pub const LABEL: &str = "tiny-linux";

/// Where the test guest and the accelerator verdict are cached between runs.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("SOLSTICE_E2E_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/solstice")))
        .unwrap_or_else(|| std::env::temp_dir().join("solstice-cache"))
}

/// Fails with a clear message when a tool the tests need is missing.
pub fn require_tools() {
    for (tool, package) in [("qemu-system-x86_64", "qemu-system-x86"), ("qemu-img", "qemu-utils")] {
        let found = std::process::Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
        assert!(found, "`{tool}` is missing: install the Debian package `{package}` (these tests never skip)");
    }
}

/// Builds (or finds in the cache) the test guest.
pub fn test_guest() -> TestGuest {
    require_tools();
    match TestGuest::builder(cache_dir()).ensure() {
        Ok(guest) => guest,
        Err(e) => panic!("could not build the test guest: {e}"),
    }
}

/// Writes `images.toml` in `dir`: an image catalog whose `label` image is the test guest
/// declaring itself FreeBSD on ARM64, so a job that reports those values got them from
/// the catalog, not from the guest (a Linux on this host's architecture). The binaries'
/// tests give it to the programs they start.
pub fn catalog_declaring_freebsd(dir: &Path, label: &str) -> PathBuf {
    let mut entry = test_guest().catalog_entry();
    entry.os = Some("FreeBSD".into());
    entry.arch = Some("ARM64".into());
    let mut catalog = ImageCatalog::default();
    catalog.insert(label, entry);
    let text = toml::to_string(&catalog).expect("an image catalog serializes as TOML");
    let path = dir.join("images.toml");
    std::fs::write(&path, text).expect("write the catalog");
    path
}

/// A hypervisor serving [`LABEL`] with the test guest, its accelerator probed once per
/// host, with its own run directory under `run_dir`.
pub fn hypervisor(run_dir: &std::path::Path) -> QemuHypervisor {
    builder(run_dir).build()
}

/// The builder behind [`hypervisor`], for tests that change a setting.
pub fn builder(run_dir: &std::path::Path) -> QemuHypervisorBuilder {
    let guest = test_guest();
    QemuHypervisor::builder()
        .image(LABEL, guest.catalog_entry())
        .probe_kernel(&guest.kernel)
        .accel(AccelChoice::Auto)
        .cache_dir(cache_dir())
        .run_dir(run_dir)
        .ports(shared_ports())
        .boot_timeout(Duration::from_secs(240))
        .stop_grace(Duration::from_secs(10))
}

/// One port allocator for every hypervisor in the test binary.
pub fn shared_ports() -> PortAllocator {
    static PORTS: std::sync::OnceLock<PortAllocator> = std::sync::OnceLock::new();
    PORTS.get_or_init(|| PortAllocator::new(46000..47000)).clone()
}

/// A request for the test guest.
pub fn request() -> MachineRequest {
    MachineRequest { job_id: JobId::new(), label: LABEL.into(), debug_ssh: false }
}

/// Boots a machine and returns it with the console lines seen while booting.
pub async fn boot(hypervisor: &QemuHypervisor) -> (Machine, Vec<OutputLine>) {
    let (console, mut rx) = LogSink::channel(4096);
    let cancel = CancellationToken::new();
    let machine = hypervisor.boot(&request(), &ProvisionContext::new(&console, &cancel)).await;
    drop(console);
    let mut lines = Vec::new();
    while let Ok(line) = rx.try_recv() {
        lines.push(line);
    }
    match machine {
        Ok(machine) => (machine, lines),
        Err(e) => {
            let text: Vec<String> = lines.into_iter().map(|l| l.line).collect();
            panic!("boot failed: {e:#?}\nconsole:\n{}", text.join("\n"))
        }
    }
}

/// Runs `script` with `sh` in `machine` over SSH, as a step would be run; returns its
/// exit and its output lines (trailing whitespace trimmed).
pub async fn run_shell(machine: &Machine, script: String) -> (StepExit, Vec<String>) {
    let step = ScriptRun {
        index: 0,
        script,
        shell: "sh {0}".into(),
        env: machine.step_env(),
        working_directory: None,
        path: Vec::new(),
    };
    let (sink, mut rx) = LogSink::channel(256);
    let exit = SshExecutor::new().run_script(machine, &step, &sink, &CancellationToken::new()).await.expect("step");
    drop(sink);
    let mut lines = Vec::new();
    while let Some(line) = rx.recv().await {
        lines.push(line.line.trim_end().to_owned());
    }
    (exit, lines)
}

/// The tiny guest's profile (root, `/root/work`).
pub fn profile() -> GuestProfile {
    GuestProfile::tiny()
}

/// Polls `cond` every 100 ms until it holds or `timeout` passes.
pub async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < until {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cond()
}
