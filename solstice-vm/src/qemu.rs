//! The QEMU process: its command line, spawning it, and stopping it in order.
//!
//! [`crate::QemuHypervisor`] does all of this for a job; this module is for programs that
//! start a machine by hand (the provisioning benchmark's baseline does): describe it with
//! a [`VmSpec`] (its network is a [`NetSpec`]), start it with [`QemuProcess::spawn`],
//! follow its serial console with a [`ConsoleTail`] and stop it with
//! [`QemuProcess::stop`].

use std::ffi::OsString;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::accel::Accel;
pub use crate::console::ConsoleTail;
pub use crate::net::NetSpec;
use crate::qmp::{QmpClient, QmpError};

/// How the guest boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootSpec {
    /// From its disk, through the firmware.
    Disk,
    /// Direct kernel boot (`-kernel`, `-initrd`, `-append`).
    Kernel {
        /// The kernel image.
        kernel: PathBuf,
        /// The initial ramdisk, if any.
        initrd: Option<PathBuf>,
        /// The kernel command line.
        append: String,
    },
}

/// Everything QEMU is started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// The machine's name (shown by QEMU; also its id).
    pub name: String,
    /// The accelerator.
    pub accel: Accel,
    /// The CPU model; `None` takes [`Accel::default_cpu`].
    pub cpu: Option<String>,
    /// The machine type. Default in the hypervisor: `q35`.
    pub machine: String,
    /// Virtual CPUs.
    pub vcpus: u16,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// How it boots.
    pub boot: BootSpec,
    /// The root disk (a qcow2 overlay), on virtio-blk.
    pub disk: Option<PathBuf>,
    /// The cloud-init seed, as an IDE CD-ROM (cloud images look for it there).
    pub seed_iso: Option<PathBuf>,
    /// Networking.
    pub net: NetSpec,
    /// The QMP Unix socket QEMU listens on.
    pub qmp_socket: PathBuf,
    /// The file the serial console is written to, when there is no `console_socket`.
    pub console_log: PathBuf,
    /// A Unix socket QEMU connects to and sends the serial console to, instead of writing
    /// `console_log` itself without limit (see [`crate::ConsoleRecorder`]).
    pub console_socket: Option<PathBuf>,
    /// Extra arguments appended as they are.
    pub extra_args: Vec<String>,
}

impl VmSpec {
    /// QEMU's arguments (without the binary).
    pub fn command_line(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
        push(&["-name", &self.name]);
        push(&["-accel", self.accel.as_str()]);
        push(&["-machine", &self.machine]);
        push(&["-cpu", self.cpu.as_deref().unwrap_or(self.accel.default_cpu())]);
        push(&["-smp", &self.vcpus.to_string(), "-m", &self.memory_mib.to_string()]);
        push(&["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"]);
        let console = match &self.console_socket {
            Some(socket) => format!("socket,id=console0,path={}", comma_escaped(socket)),
            None => format!("file,id=console0,path={}", comma_escaped(&self.console_log)),
        };
        push(&["-chardev", &console, "-serial", "chardev:console0"]);
        if let BootSpec::Kernel { kernel, initrd, append } = &self.boot {
            args.push("-kernel".into());
            args.push(kernel.into());
            if let Some(initrd) = initrd {
                args.push("-initrd".into());
                args.push(initrd.into());
            }
            args.push("-append".into());
            args.push(append.into());
        }
        let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
        if let Some(disk) = &self.disk {
            let drive = format!("if=none,id=disk0,file={},format=qcow2,discard=unmap", comma_escaped(disk));
            push(&["-drive", &drive, "-device", "virtio-blk-pci,drive=disk0"]);
        }
        if let Some(seed) = &self.seed_iso {
            let drive = format!("file={},format=raw,if=ide,media=cdrom,readonly=on", comma_escaped(seed));
            push(&["-drive", &drive]);
        }
        push(&["-netdev", &self.net.netdev("net0"), "-device", "virtio-net-pci,netdev=net0"]);
        push(&["-device", "virtio-rng-pci"]);
        let qmp = format!("unix:{},server=on,wait=off", comma_escaped(&self.qmp_socket));
        push(&["-qmp", &qmp]);
        args.extend(self.extra_args.iter().map(OsString::from));
        args
    }
}

fn comma_escaped(path: &Path) -> String {
    path.to_string_lossy().replace(',', ",,")
}

/// QEMU could not be started or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QemuError {
    /// The binary could not be run.
    #[error("could not start {}", binary.display())]
    Spawn {
        /// The QEMU binary.
        binary: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// QEMU exited before the machine was ready.
    #[error("QEMU exited during start-up ({status}): {stderr}")]
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// The last lines it wrote to stderr.
        stderr: String,
    },
    /// Waiting for the process failed.
    #[error("could not wait for QEMU (pid {pid})")]
    Wait {
        /// The pid.
        pid: u32,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// How a QEMU process ended when it was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// It had exited already.
    AlreadyExited,
    /// The guest powered off after the ACPI power button (`system_powerdown`).
    PoweredOff,
    /// QEMU exited on QMP `quit` after the grace period.
    Quit,
    /// QEMU had to be killed.
    Killed,
}

/// A running QEMU, owned as a child process.
///
/// QEMU is not daemonized: this process owns its exit status, so a dead VM is never
/// mistaken for a live one, and dropping the handle kills it (`kill_on_drop`), also when
/// the caller panics or is cancelled. With `kill_with_parent`, QEMU is started through
/// `setpriv --pdeathsig KILL` and also dies if this whole process dies.
#[derive(Debug)]
pub struct QemuProcess {
    child: Child,
    pid: u32,
    stderr_log: PathBuf,
    status: Option<ExitStatus>,
}

impl QemuProcess {
    /// Starts `binary` with `spec`'s command line; QEMU's stderr goes to `stderr_log`.
    ///
    /// QEMU runs with umask 077, so what it creates (the console log, the QMP socket) is
    /// its user's alone from the moment it exists; `stderr_log` is made 0600 as well.
    /// (The umask is set by `/bin/sh`, which then execs QEMU: this process's umask is
    /// shared by all its threads and cannot be changed for one child safely.)
    ///
    /// # Errors
    /// [`QemuError::Spawn`] when the binary cannot be run.
    pub fn spawn(binary: &Path, spec: &VmSpec, stderr_log: &Path, kill_with_parent: bool) -> Result<Self, QemuError> {
        let spawn_error = |source| QemuError::Spawn { binary: binary.to_path_buf(), source };
        let stderr = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(stderr_log)
            .map_err(spawn_error)?;
        let mut command = Command::new(SH);
        command.args(["-c", PRIVATE_EXEC]);
        if kill_with_parent && Path::new(SETPRIV).exists() {
            command.arg(SETPRIV).args(["--pdeathsig", "KILL", "--"]).arg(binary);
        } else {
            command.arg(binary);
        }
        command
            .args(spec.command_line())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true);
        let child = command.spawn().map_err(spawn_error)?;
        let pid = child.id().unwrap_or_default();
        tracing::debug!(pid, vm = %spec.name, "QEMU started");
        Ok(Self { child, pid, stderr_log: stderr_log.to_path_buf(), status: None })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status if QEMU has exited (reaps it).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits for QEMU to exit, at most `timeout`; `None` if it is still running.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait_for(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.status {
            return Some(status);
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => {
                self.status = Some(status);
                Some(status)
            }
            _ => None,
        }
    }

    /// The error for a QEMU that exited during start-up, with its stderr.
    pub fn exited_error(&self, status: ExitStatus) -> QemuError {
        let text = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let stderr = tail[tail.len().saturating_sub(5)..].join(" / ");
        QemuError::Exited { status, stderr }
    }

    /// Stops QEMU in order: the ACPI power button, `grace` for the guest to power off,
    /// QMP `quit`, and finally SIGKILL. Always leaves the process reaped.
    ///
    /// # Errors
    /// [`QemuError::Wait`] only when the killed process cannot be waited for.
    pub async fn stop(&mut self, qmp: Option<&mut QmpClient>, grace: Duration) -> Result<StopOutcome, QemuError> {
        if self.try_status().is_some() {
            return Ok(StopOutcome::AlreadyExited);
        }
        if let Some(qmp) = qmp {
            match qmp.system_powerdown().await {
                Ok(()) => {
                    if self.wait_for(grace).await.is_some() {
                        return Ok(StopOutcome::PoweredOff);
                    }
                }
                Err(e) => tracing::debug!(pid = self.pid, error = %e, "system_powerdown failed"),
            }
            match qmp.quit().await {
                Ok(()) | Err(QmpError::Closed { .. }) => {
                    if self.wait_for(Duration::from_secs(3)).await.is_some() {
                        return Ok(StopOutcome::Quit);
                    }
                }
                Err(e) => tracing::debug!(pid = self.pid, error = %e, "QMP quit failed"),
            }
        }
        tracing::warn!(pid = self.pid, "killing QEMU");
        let _ = self.child.start_kill();
        let status = self.child.wait().await.map_err(|source| QemuError::Wait { pid: self.pid, source })?;
        self.status = Some(status);
        Ok(StopOutcome::Killed)
    }
}

const SETPRIV: &str = "/usr/bin/setpriv";
const SH: &str = "/bin/sh";
/// `sh -c` script that sets umask 077 and execs its arguments (`$0` is the program).
pub(crate) const PRIVATE_EXEC: &str = "umask 077 && exec \"$0\" \"$@\"";

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            name: "vm-1".into(),
            accel: Accel::Tcg,
            cpu: None,
            machine: "q35".into(),
            vcpus: 2,
            memory_mib: 1024,
            boot: BootSpec::Kernel { kernel: "/k/vmlinuz".into(), initrd: Some("/k/initrd.gz".into()), append: "console=ttyS0 quiet".into() },
            disk: Some("/w/overlay.qcow2".into()),
            seed_iso: Some("/w/seed.iso".into()),
            net: NetSpec::isolated(42010),
            qmp_socket: "/w/qmp.sock".into(),
            console_log: "/w/console.log".into(),
            console_socket: None,
            extra_args: vec![],
        }
    }

    fn line(spec: &VmSpec) -> String {
        spec.command_line().iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn the_command_line_has_every_device_in_place() {
        let text = line(&spec());
        for part in [
            "-accel tcg -machine q35 -cpu max -smp 2 -m 1024",
            "-nodefaults -no-user-config -display none -no-reboot",
            "-chardev file,id=console0,path=/w/console.log -serial chardev:console0",
            "-kernel /k/vmlinuz -initrd /k/initrd.gz -append console=ttyS0 quiet",
            "-drive if=none,id=disk0,file=/w/overlay.qcow2,format=qcow2,discard=unmap -device virtio-blk-pci,drive=disk0",
            "-drive file=/w/seed.iso,format=raw,if=ide,media=cdrom,readonly=on",
            "-netdev user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:42010-:22 -device virtio-net-pci,netdev=net0",
            "-device virtio-rng-pci",
            "-qmp unix:/w/qmp.sock,server=on,wait=off",
        ] {
            assert!(text.contains(part), "missing `{part}` in {text}");
        }
        // The -append value stays one argument although it has a space.
        let args = spec().command_line();
        assert!(args.iter().any(|a| a == "console=ttyS0 quiet"));
    }

    #[test]
    fn kvm_uses_the_host_cpu_and_disk_boot_has_no_kernel() {
        let mut spec = spec();
        spec.accel = Accel::Kvm;
        spec.boot = BootSpec::Disk;
        spec.cpu = None;
        let text = line(&spec);
        assert!(text.contains("-accel kvm -machine q35 -cpu host"));
        assert!(!text.contains("-kernel"));
        spec.cpu = Some("EPYC".into());
        assert!(line(&spec).contains("-cpu EPYC"));
    }

    #[test]
    fn commas_in_paths_are_escaped() {
        let mut spec = spec();
        spec.qmp_socket = "/w/a,b/qmp.sock".into();
        assert!(line(&spec).contains("-qmp unix:/w/a,,b/qmp.sock,server=on,wait=off"));
    }
}
