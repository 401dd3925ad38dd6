//! Choosing the accelerator: KVM when it really works, TCG otherwise.
//!
//! `/dev/kvm` existing and QEMU reporting KVM as enabled is not enough: on nested hosts
//! `-cpu host` can abort at once ("failed to set MSR 0x10a") or the guest hangs right
//! after the firmware hands over to the kernel, and `-accel kvm:tcg` never falls back
//! then. So the probe boots a kernel under KVM with the CPU model machines will use and
//! waits, with a deadline, for the kernel's first console line.
//!
//! [`AccelChoice`] (also at the crate root) is what a hypervisor is told; an
//! [`AccelVerdict`] is what [`crate::QemuHypervisor::accelerator`] decided, and an
//! [`AccelProbe`] makes that decision for programs that start QEMU themselves.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// A QEMU accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualisation through `/dev/kvm`.
    Kvm,
    /// QEMU's portable emulator: slow (a guest boots 10–20× slower) but always there.
    Tcg,
}

impl Accel {
    /// The name QEMU uses (`kvm`, `tcg`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }

    /// The CPU model used with this accelerator unless one is configured: `host` under
    /// KVM, `max` under TCG.
    pub fn default_cpu(self) -> &'static str {
        match self {
            Self::Kvm => "host",
            Self::Tcg => "max",
        }
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the accelerator is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelChoice {
    /// Probe KVM once per host and fall back to TCG (the default).
    #[default]
    Auto,
    /// Always KVM, no probe.
    Kvm,
    /// Always TCG, no probe.
    Tcg,
}

/// What a probe found, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelVerdict {
    /// The accelerator to use.
    pub accel: Accel,
    /// Why, in one line (shown in logs).
    pub reason: String,
}

/// Settings of the KVM probe.
#[derive(Debug, Clone)]
pub struct AccelProbe {
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// A kernel to boot directly (any x86-64 Linux kernel; the test guest's works).
    pub kernel: PathBuf,
    /// The CPU model to try under KVM. Default: `host`.
    pub cpu: String,
    /// How long the kernel may take to print its first line. Default: 10 s.
    pub timeout: Duration,
    /// Where verdicts are cached between processes (`accel.json` in this directory);
    /// `None` caches in this process only.
    pub cache_dir: Option<PathBuf>,
}

impl AccelProbe {
    /// A probe of `qemu` booting `kernel`, with the defaults above.
    pub fn new(qemu: impl Into<PathBuf>, kernel: impl Into<PathBuf>) -> Self {
        Self {
            qemu: qemu.into(),
            kernel: kernel.into(),
            cpu: "host".into(),
            timeout: Duration::from_secs(10),
            cache_dir: None,
        }
    }

    /// Resolves `choice`: forced choices are returned as they are; `Auto` probes once per
    /// host (the verdict is cached in memory and in `cache_dir`), and logs the fallback to
    /// TCG with its reason.
    pub async fn resolve(&self, choice: AccelChoice) -> AccelVerdict {
        match choice {
            AccelChoice::Kvm => AccelVerdict { accel: Accel::Kvm, reason: "forced by configuration".into() },
            AccelChoice::Tcg => AccelVerdict { accel: Accel::Tcg, reason: "forced by configuration".into() },
            AccelChoice::Auto => {
                let key = self.host_key();
                if let Some(verdict) = memory_cache().lock().ok().and_then(|m| m.get(&key).cloned()) {
                    return verdict;
                }
                if let Some(verdict) = self.read_file_cache(&key) {
                    remember(&key, &verdict);
                    return verdict;
                }
                let verdict = self.probe().await;
                match verdict.accel {
                    Accel::Kvm => tracing::info!(reason = %verdict.reason, "KVM works: machines use it"),
                    Accel::Tcg => tracing::warn!(
                        reason = %verdict.reason,
                        "KVM is not usable here: falling back to TCG (software emulation, much slower)"
                    ),
                }
                remember(&key, &verdict);
                self.write_file_cache(&key, &verdict);
                verdict
            }
        }
    }

    /// Boots the kernel under KVM and watches it, ignoring every cache.
    pub async fn probe(&self) -> AccelVerdict {
        let tcg = |reason: String| AccelVerdict { accel: Accel::Tcg, reason };
        if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
            return tcg(format!("/dev/kvm cannot be opened: {e}"));
        }
        let mut command = Command::new(&self.qemu);
        command
            .args(["-accel", "kvm", "-cpu", &self.cpu, "-machine", "q35", "-m", "256", "-smp", "1"])
            .args(["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-serial", "stdio"])
            .arg("-kernel")
            .arg(&self.kernel)
            .args(["-append", "console=ttyS0 panic=-1 loglevel=4"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => return tcg(format!("could not start {}: {e}", self.qemu.display())),
        };
        let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return tcg("the probe's output pipes were missing".into());
        };
        let watch = async {
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match stdout.read(&mut buf).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => {
                        seen.extend_from_slice(&buf[..n]);
                        if seen.windows(13).any(|w| w == b"Linux version") {
                            return true;
                        }
                    }
                }
            }
        };
        let verdict = match tokio::time::timeout(self.timeout, watch).await {
            Ok(true) => AccelVerdict { accel: Accel::Kvm, reason: format!("a kernel booted under KVM with -cpu {}", self.cpu) },
            Ok(false) => {
                let mut err = String::new();
                let _ = tokio::time::timeout(Duration::from_secs(1), stderr.read_to_string(&mut err)).await;
                let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no error output");
                tcg(format!("QEMU exited under KVM with -cpu {}: {last}", self.cpu))
            }
            Err(_) => tcg(format!(
                "a kernel under KVM with -cpu {} printed nothing within {:?} (the guest hangs)",
                self.cpu, self.timeout
            )),
        };
        let _ = child.kill().await;
        verdict
    }

    fn host_key(&self) -> String {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let stamp = std::fs::metadata(&self.qemu)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or_default();
        format!("{}|{stamp}|{}|{}", self.qemu.display(), release.trim(), self.cpu)
    }

    fn cache_file(&self) -> Option<PathBuf> {
        self.cache_dir.as_ref().map(|d| d.join("accel.json"))
    }

    fn read_file_cache(&self, key: &str) -> Option<AccelVerdict> {
        let text = std::fs::read_to_string(self.cache_file()?).ok()?;
        let entries: HashMap<String, AccelVerdict> = serde_json::from_str(&text).ok()?;
        entries.get(key).cloned()
    }

    fn write_file_cache(&self, key: &str, verdict: &AccelVerdict) {
        let Some(path) = self.cache_file() else { return };
        let mut entries: HashMap<String, AccelVerdict> = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        entries.insert(key.to_owned(), verdict.clone());
        if let Err(e) = write_atomic(&path, &serde_json::to_vec_pretty(&entries).unwrap_or_default()) {
            tracing::debug!(path = %path.display(), error = %e, "could not cache the accelerator verdict");
        }
    }
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn memory_cache() -> &'static Mutex<HashMap<String, AccelVerdict>> {
    static CACHE: OnceLock<Mutex<HashMap<String, AccelVerdict>>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

fn remember(key: &str, verdict: &AccelVerdict) {
    if let Ok(mut cache) = memory_cache().lock() {
        cache.insert(key.to_owned(), verdict.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn forced_choices_skip_the_probe() {
        let probe = AccelProbe::new("/nonexistent/qemu", "/nonexistent/kernel");
        assert_eq!(probe.resolve(AccelChoice::Tcg).await.accel, Accel::Tcg);
        assert_eq!(probe.resolve(AccelChoice::Kvm).await.accel, Accel::Kvm);
    }

    #[tokio::test]
    async fn a_probe_that_cannot_run_falls_back_to_tcg_and_is_cached() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut probe = AccelProbe::new(dir.path().join("no-qemu"), dir.path().join("no-kernel"));
        probe.cache_dir = Some(dir.path().to_path_buf());
        let verdict = probe.resolve(AccelChoice::Auto).await;
        assert_eq!(verdict.accel, Accel::Tcg);
        assert!(!verdict.reason.is_empty());
        let cached = probe.read_file_cache(&probe.host_key()).expect("verdict cached on disk");
        assert_eq!(cached, verdict);
    }
}
