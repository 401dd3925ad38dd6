//! The tiny test guest: a Debian kernel with an initramfs of busybox, bash and dropbear,
//! built from the host's own Debian packages and cached.
//!
//! Needed on the host (Debian packages): `linux-image-amd64` (kernel and modules),
//! `busybox-static`, `dropbear-bin` (`dropbear`, `dropbearconvert`),
//! `openssh-sftp-server` (the SFTP subsystem) and `bash`.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::cpio::CpioWriter;

/// Bumped whenever the guest's layout changes, so caches are rebuilt.
const LAYOUT_VERSION: &str = "4";

/// Kernel modules the guest loads (with their dependencies), in this order.
const MODULES: &[&str] = &[
    "virtio_pci", "virtio_net", "virtio_rng", "virtio_blk", "ahci", "ata_piix", "sr_mod", "isofs", "button", "evdev",
];

/// Directories every guest has, made first.
const STANDARD_DIRS: &[&str] = &[
    "/bin", "/sbin", "/usr", "/usr/bin", "/usr/sbin", "/usr/lib", "/lib", "/lib64", "/lib/modules",
    "/lib/modules/solstice", "/etc", "/etc/dropbear", "/etc/acpi", "/etc/acpi/PWRF", "/proc", "/sys", "/dev", "/mnt",
    "/mnt/seed", "/var", "/var/log", "/run",
];

/// The label the test guest serves in the demo and the end-to-end tests.
pub const TINY_LINUX: &str = "tiny-linux";

/// The guest's kernel command line.
pub(crate) const TEST_GUEST_APPEND: &str = "console=ttyS0 quiet loglevel=3 panic=-1 mitigations=off";

const INIT: &str = r#"#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmp /tmp
chmod 1777 /tmp
for m in /lib/modules/solstice/*.ko; do
  insmod "$m" 2>/dev/null || echo "solstice-guest: could not load $m"
done
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
echo "nameserver 10.0.2.3" > /etc/resolv.conf
seed=
for i in $(seq 1 100); do
  for dev in /dev/sr0 /dev/sr1; do
    if [ -b "$dev" ] && mount -t iso9660 -o ro "$dev" /mnt/seed 2>/dev/null; then seed=$dev; break 2; fi
  done
  sleep 0.1
done
mkdir -p /root/.ssh /root/work
chmod 700 /root /root/.ssh
if [ -n "$seed" ]; then
  name=$(sed -n 's/^local-hostname: *//p' /mnt/seed/meta-data)
  [ -n "$name" ] && hostname "$name"
  sed -n 's/^ *- \(ssh-[a-z0-9-]* .*\)$/\1/p' /mnt/seed/user-data > /root/.ssh/authorized_keys
  sed -n '/BEGIN OPENSSH PRIVATE KEY/,/END OPENSSH PRIVATE KEY/s/^ *//p' /mnt/seed/user-data > /tmp/host_key
  if [ -s /tmp/host_key ]; then
    dropbearconvert openssh dropbear /tmp/host_key /etc/dropbear/dropbear_ed25519_host_key >/dev/null 2>&1 \
      || echo "solstice-guest: could not convert the host key"
  fi
  rm -f /tmp/host_key
  echo "solstice-guest: seed read from $seed"
else
  echo "solstice-guest: no cidata seed found"
fi
chmod 600 /root/.ssh/authorized_keys 2>/dev/null
acpid -c /etc/acpi
if [ -s /etc/dropbear/dropbear_ed25519_host_key ]; then
  dropbear -s -E -p 22 -r /etc/dropbear/dropbear_ed25519_host_key
else
  dropbear -s -E -p 22 -R
fi
echo "solstice-guest: sshd started"
while true; do sleep 3600; done
"#;

const POWER_BUTTON: &str = "#!/bin/sh\necho \"solstice-guest: power button pressed, powering off\" > /dev/console\nsync\npoweroff -f\n";

/// The test guest could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestGuestError {
    /// A host file the guest is built from is missing.
    #[error("{} is missing: install the Debian package `{package}`", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// The package that provides it.
        package: &'static str,
    },
    /// No kernel was found under /boot.
    #[error("no kernel found under /boot: install the Debian package `linux-image-amd64`")]
    NoKernel,
    /// A kernel module could not be found.
    #[error("kernel module `{module}` not found in {}", dir.display())]
    Module {
        /// The module.
        module: String,
        /// The modules directory.
        dir: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("could not read or write {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A compressed kernel module could not be unpacked.
    #[error("could not decompress {}: {message}", path.display())]
    Decompress {
        /// The module file.
        path: PathBuf,
        /// What the decoder said.
        message: String,
    },
    /// `ldd` failed on a binary.
    #[error("could not list the shared libraries of {}", path.display())]
    Ldd {
        /// The binary.
        path: PathBuf,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> TestGuestError + '_ {
    move |source| TestGuestError::Io { path: path.to_path_buf(), source }
}

/// A built test guest: a kernel and an initramfs in a cache directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestGuest {
    /// The kernel image.
    pub kernel: PathBuf,
    /// The gzip-compressed initramfs.
    pub initrd: PathBuf,
    /// The kernel command line to boot it with.
    pub append: String,
}

impl TestGuest {
    /// A catalog entry that boots this guest directly (no disk): 1 vCPU, 512 MiB, the
    /// `tiny` profile. Its machines report `runner.os` `Linux` and this host's
    /// architecture as `runner.arch` (the guest runs this host's kernel).
    pub fn catalog_entry(&self) -> crate::ImageEntry {
        crate::ImageEntry {
            aliases: Vec::new(),
            source: None,
            profile: "tiny".into(),
            os: Some("Linux".into()),
            arch: Some(solstice_core::RunnerInfo::host_arch()),
            vcpus: 1,
            memory_mib: 512,
            disk_gib: None,
            boot: crate::image::BootMode::Kernel {
                kernel: self.kernel.clone(),
                initrd: Some(self.initrd.clone()),
                append: self.append.clone(),
            },
        }
    }
}

/// Where the test guest's parts come from, and where it is cached.
#[derive(Debug, Clone)]
#[must_use]
pub struct TestGuestBuilder {
    cache_dir: PathBuf,
    kernel: Option<PathBuf>,
    busybox: PathBuf,
    dropbear: PathBuf,
    dropbearconvert: PathBuf,
    bash: PathBuf,
    sftp_server: PathBuf,
}

impl TestGuest {
    /// A builder with the Debian paths of the parts, caching under `cache_dir`.
    pub fn builder(cache_dir: impl Into<PathBuf>) -> TestGuestBuilder {
        TestGuestBuilder {
            cache_dir: cache_dir.into(),
            kernel: None,
            busybox: "/bin/busybox".into(),
            dropbear: "/usr/sbin/dropbear".into(),
            dropbearconvert: "/usr/bin/dropbearconvert".into(),
            bash: "/bin/bash".into(),
            sftp_server: "/usr/lib/openssh/sftp-server".into(),
        }
    }
}

impl TestGuestBuilder {
    /// The kernel to use. Default: the newest `/boot/vmlinuz-*`.
    pub fn kernel(mut self, path: impl Into<PathBuf>) -> Self {
        self.kernel = Some(path.into());
        self
    }

    /// Returns the cached guest for these inputs, building it first if needed. The
    /// cache key is a hash of every input file's path, size and modification time plus
    /// the guest's layout, so an upgraded package gives a new guest. Blocking: call it
    /// from `spawn_blocking` in async code.
    ///
    /// # Errors
    /// [`TestGuestError`] naming the missing Debian package, or the file that failed.
    pub fn ensure(self) -> Result<TestGuest, TestGuestError> {
        let kernel = match &self.kernel {
            Some(kernel) => kernel.clone(),
            None => newest_kernel()?,
        };
        let release = kernel
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("vmlinuz-"))
            .unwrap_or_default()
            .to_owned();
        let modules_dir = Path::new("/lib/modules").join(&release);
        let binaries = [
            (&self.busybox, "busybox-static"),
            (&self.dropbear, "dropbear-bin"),
            (&self.dropbearconvert, "dropbear-bin"),
            (&self.bash, "bash"),
            (&self.sftp_server, "openssh-sftp-server"),
            (&kernel, "linux-image-amd64"),
        ];
        for (path, package) in binaries {
            if !path.exists() {
                return Err(TestGuestError::Missing { path: path.clone(), package });
            }
        }
        let dep_file = modules_dir.join("modules.dep");
        if !dep_file.exists() {
            return Err(TestGuestError::Missing { path: dep_file, package: "linux-image-amd64" });
        }
        let mut hasher = Sha256::new();
        hasher.update(LAYOUT_VERSION);
        hasher.update(INIT);
        hasher.update(POWER_BUTTON);
        for path in [&self.busybox, &self.dropbear, &self.dropbearconvert, &self.bash, &self.sftp_server, &kernel, &dep_file] {
            let meta = std::fs::metadata(path).map_err(io_error(path))?;
            let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            hasher.update(format!("{}|{}|{:?}\n", path.display(), meta.len(), mtime));
        }
        let key: String = hasher.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
        let dir = self.cache_dir.join(format!("testguest-{key}"));
        let guest = TestGuest {
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.gz"),
            append: TEST_GUEST_APPEND.to_owned(),
        };
        if guest.kernel.exists() && guest.initrd.exists() {
            return Ok(guest);
        }
        tracing::info!(dir = %dir.display(), "building the test guest from the host's Debian packages");
        std::fs::create_dir_all(&self.cache_dir).map_err(io_error(&self.cache_dir))?;
        let staging = tempfile::Builder::new()
            .prefix(".testguest-")
            .tempdir_in(&self.cache_dir)
            .map_err(io_error(&self.cache_dir))?;
        let initrd = self.initramfs(&modules_dir)?;
        let initrd_path = staging.path().join("initrd.gz");
        std::fs::write(&initrd_path, initrd).map_err(io_error(&initrd_path))?;
        let kernel_copy = staging.path().join("vmlinuz");
        std::fs::copy(&kernel, &kernel_copy).map_err(io_error(&kernel))?;
        let staged = staging.keep();
        if let Err(e) = std::fs::rename(&staged, &dir) {
            // Another process built the same guest meanwhile: use theirs.
            let _ = std::fs::remove_dir_all(&staged);
            if !guest.initrd.exists() {
                return Err(TestGuestError::Io { path: dir, source: e });
            }
        }
        Ok(guest)
    }

    fn initramfs(&self, modules_dir: &Path) -> Result<Vec<u8>, TestGuestError> {
        let mut cpio = CpioWriter::new();
        for dir in STANDARD_DIRS {
            cpio.dir(dir, 0o755);
        }
        cpio.dir("/root", 0o700);
        cpio.dir("/tmp", 0o1777);
        let mut added: HashSet<String> = HashSet::new();
        let mut dirs: HashSet<String> = HashSet::new();
        let mut add_file = |cpio: &mut CpioWriter, src: &Path, dest: &str, perm: u32| -> Result<(), TestGuestError> {
            if added.insert(dest.to_owned()) {
                // Parents first: the kernel does not create missing directories.
                let mut parent = String::new();
                for part in dest.trim_start_matches('/').split('/').collect::<Vec<_>>().iter().rev().skip(1).rev() {
                    parent.push('/');
                    parent.push_str(part);
                    if dirs.insert(parent.clone()) && !STANDARD_DIRS.contains(&parent.as_str()) {
                        cpio.dir(&parent, 0o755);
                    }
                }
                let data = std::fs::read(src).map_err(io_error(src))?;
                cpio.file(dest, perm, &data);
            }
            Ok(())
        };
        add_file(&mut cpio, &self.busybox, "/bin/busybox", 0o755)?;
        for applet in busybox_applets(&self.busybox)? {
            if applet != "busybox" && applet != "bash" {
                cpio.symlink(&format!("/bin/{applet}"), "busybox");
            }
        }
        cpio.symlink("/usr/bin/env", "/bin/busybox");
        let binaries = [
            (&self.bash, "/bin/bash"),
            (&self.dropbear, "/usr/sbin/dropbear"),
            (&self.dropbearconvert, "/usr/bin/dropbearconvert"),
            (&self.sftp_server, "/usr/lib/sftp-server"),
        ];
        for (src, dest) in binaries {
            add_file(&mut cpio, src, dest, 0o755)?;
            for lib in shared_libraries(src)? {
                let dest = lib.to_string_lossy().into_owned();
                add_file(&mut cpio, &lib, &dest, 0o755)?;
            }
        }
        for (index, module) in module_load_order(modules_dir, MODULES)?.iter().enumerate() {
            let data = read_module(module)?;
            let name = module.file_name().and_then(|n| n.to_str()).unwrap_or("module");
            let stem = name.split(".ko").next().unwrap_or(name);
            cpio.file(&format!("/lib/modules/solstice/{index:02}-{stem}.ko"), 0o644, &data);
        }
        cpio.file("/etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n");
        cpio.file("/etc/group", 0o644, b"root:x:0:\n");
        cpio.file("/etc/shells", 0o644, b"/bin/sh\n/bin/bash\n");
        cpio.file("/etc/acpi/PWRF/00000080", 0o755, POWER_BUTTON.as_bytes());
        cpio.file("/init", 0o755, INIT.as_bytes());
        let archive = cpio.finish();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let path = PathBuf::from("initrd.gz");
        gz.write_all(&archive).map_err(io_error(&path))?;
        gz.finish().map_err(io_error(&path))
    }
}

fn newest_kernel() -> Result<PathBuf, TestGuestError> {
    let boot = Path::new("/boot");
    let mut kernels: Vec<PathBuf> = std::fs::read_dir(boot)
        .map_err(|_| TestGuestError::NoKernel)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("vmlinuz-")))
        .collect();
    kernels.sort();
    kernels.pop().ok_or(TestGuestError::NoKernel)
}

fn busybox_applets(busybox: &Path) -> Result<Vec<String>, TestGuestError> {
    let out = std::process::Command::new(busybox).arg("--list").output().map_err(io_error(busybox))?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).filter(|l| !l.is_empty()).collect())
}

/// The shared libraries `ldd` lists for a binary, including the dynamic loader.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, TestGuestError> {
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|_| TestGuestError::Ldd { path: binary.to_path_buf() })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not a dynamic executable") || text.contains("statically linked") {
        return Ok(Vec::new());
    }
    if !out.status.success() {
        return Err(TestGuestError::Ldd { path: binary.to_path_buf() });
    }
    Ok(text
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            }?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// The module files for `wanted` and their dependencies, dependencies first, from
/// `modules.dep`. Modules built into the kernel are skipped.
fn module_load_order(modules_dir: &Path, wanted: &[&str]) -> Result<Vec<PathBuf>, TestGuestError> {
    let dep_file = modules_dir.join("modules.dep");
    let text = std::fs::read_to_string(&dep_file).map_err(io_error(&dep_file))?;
    let builtin = std::fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default();
    let name_of = |path: &str| -> String {
        let file = path.rsplit('/').next().unwrap_or(path);
        file.split(".ko").next().unwrap_or(file).replace('-', "_")
    };
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in text.lines() {
        let Some((module, rest)) = line.split_once(':') else { continue };
        let list = rest.split_whitespace().map(str::to_owned).collect();
        deps.insert(name_of(module), (module.to_owned(), list));
    }
    let builtin: HashSet<String> = builtin.lines().map(name_of).collect();
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    fn visit(
        name: &str,
        deps: &BTreeMap<String, (String, Vec<String>)>,
        seen: &mut HashSet<String>,
        order: &mut Vec<String>,
        name_of: &dyn Fn(&str) -> String,
    ) {
        if !seen.insert(name.to_owned()) {
            return;
        }
        if let Some((path, list)) = deps.get(name) {
            for dep in list.iter().rev() {
                visit(&name_of(dep), deps, seen, order, name_of);
            }
            order.push(path.clone());
        }
    }
    for module in wanted {
        let name = module.replace('-', "_");
        if !deps.contains_key(&name) {
            if builtin.contains(&name) {
                continue;
            }
            return Err(TestGuestError::Module { module: name, dir: modules_dir.to_path_buf() });
        }
        visit(&name, &deps, &mut seen, &mut order, &name_of);
    }
    Ok(order.into_iter().map(|p| modules_dir.join(p)).collect())
}

fn read_module(path: &Path) -> Result<Vec<u8>, TestGuestError> {
    let raw = std::fs::read(path).map_err(io_error(path))?;
    let name = path.to_string_lossy();
    let decompress_error = |message: String| TestGuestError::Decompress { path: path.to_path_buf(), message };
    if name.ends_with(".xz") {
        let mut out = Vec::new();
        lzma_rs::xz_decompress(&mut raw.as_slice(), &mut out).map_err(|e| decompress_error(e.to_string()))?;
        Ok(out)
    } else if name.ends_with(".zst") {
        let mut decoder =
            ruzstd::decoding::StreamingDecoder::new(raw.as_slice()).map_err(|e| decompress_error(e.to_string()))?;
        let mut out = Vec::new();
        decoder.read_to_end(&mut out).map_err(|e| decompress_error(e.to_string()))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_come_after_their_dependencies() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("modules.dep"),
            "kernel/a/virtio_net.ko.xz: kernel/a/net_failover.ko.xz kernel/a/failover.ko.xz\n\
             kernel/a/net_failover.ko.xz: kernel/a/failover.ko.xz\nkernel/a/failover.ko.xz:\nkernel/b/sr_mod.ko.xz: kernel/b/cdrom.ko.xz\nkernel/b/cdrom.ko.xz:\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("modules.builtin"), "kernel/c/virtio_pci.ko\n").expect("write");
        let order = module_load_order(dir.path(), &["virtio_pci", "virtio_net", "sr_mod"]).expect("order");
        let names: Vec<String> =
            order.iter().map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()).collect();
        assert_eq!(names, ["failover.ko.xz", "net_failover.ko.xz", "virtio_net.ko.xz", "cdrom.ko.xz", "sr_mod.ko.xz"]);
        assert!(matches!(module_load_order(dir.path(), &["nope"]), Err(TestGuestError::Module { .. })));
    }

    #[test]
    fn ldd_lists_the_loader_and_libc() {
        let libs = shared_libraries(Path::new("/bin/bash")).expect("ldd");
        assert!(libs.iter().any(|l| l.to_string_lossy().contains("libc.so")), "{libs:?}");
        assert!(libs.iter().any(|l| l.to_string_lossy().contains("ld-linux")), "{libs:?}");
    }
}
