//! Machine directories left in a run directory: each holds a job's overlay, seed and
//! console log while its VM runs, and is removed when the VM is destroyed. Directories
//! whose VM is gone (a crashed process) are found here so they can be pruned.
//!
//! A directory is in use while a QEMU process has its disks open. QEMU's image locking
//! (on by default for file-backed images) takes open file description (OFD) byte-range
//! locks on every image it opens and holds them until it exits: shared locks on bytes
//! 100 and up for the permissions it uses and 200 and up for those it denies others, as
//! `/proc/locks` shows for a running machine:
//!
//! ```text
//! OFDLCK ADVISORY  READ -1 fe:00:10011541 100 101   (overlay.qcow2: consistent read, write)
//! OFDLCK ADVISORY  READ -1 fe:00:10011541 103 103   (resize)
//! OFDLCK ADVISORY  READ -1 fe:00:10011541 201 201   (others may not write)
//! OFDLCK ADVISORY  READ -1 fe:00:10011541 203 203   (others may not resize)
//! OFDLCK ADVISORY  READ -1 fe:00:10011542 100 100   (seed.iso, read-only)
//! ```
//!
//! Asking the kernel whether a write lock on a file would conflict finds those locks. They
//! belong to the file, not to a pid or a spelling of its path, so unlike a search of
//! command lines this cannot be fooled by a reused pid, a run directory reached through
//! another path, or a process that has not exec'd yet.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::ImageError;

/// How recent a directory whose files nobody locks may be and still count as in use: a
/// machine's directory exists, and its seed and overlay are written, before its QEMU
/// process starts and locks them.
pub(crate) const YOUNG_MACHINE_DIR: Duration = Duration::from_secs(600);

/// One machine's directory in a run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineDir {
    /// The directory.
    pub path: PathBuf,
    /// Bytes used by its files (the overlay, mostly).
    pub size: u64,
    /// Whether another open file description holds a lock on one of its files (a running
    /// QEMU locks its overlay and seed), or the directory is younger than ten minutes
    /// (its machine may not have started QEMU yet).
    pub in_use: bool,
}

/// The machine directories directly under `run_dir` (none if it does not exist).
///
/// A directory is in use when a file in it is locked, as a running QEMU locks its disk
/// images (QEMU's image locking), or when it was modified in the last ten minutes (its
/// machine may not have started QEMU yet). Lock queries need Linux's OFD locks; elsewhere only the age
/// guard applies. A file whose lock cannot be queried counts as locked: a directory is
/// only ever removed when it is known to be free.
///
/// # Errors
/// [`ImageError::Io`] when `run_dir` cannot be read.
pub fn machine_dirs(run_dir: &Path) -> Result<Vec<MachineDir>, ImageError> {
    let entries = match std::fs::read_dir(run_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(ImageError::Io { path: run_dir.to_path_buf(), source }),
    };
    let now = SystemTime::now();
    let mut dirs: Vec<MachineDir> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| {
            let path = e.path();
            // The age guard covers the set-up before QEMU runs (seed, overlay, start-up),
            // when nothing is locked yet; locks alone would let a machine being made be
            // pruned under its maker.
            let young = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|modified| now.duration_since(modified).unwrap_or_default() < YOUNG_MACHINE_DIR);
            let in_use = young || holds_a_locked_file(&path);
            MachineDir { size: tree_size(&path), in_use, path }
        })
        .collect();
    dirs.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(dirs)
}

/// Removes the machine directories under `run_dir` that are not in use; returns them.
///
/// Each directory is checked again just before it is removed, so a machine that started
/// using a directory after the scan keeps it.
///
/// # Errors
/// [`ImageError::Io`] when `run_dir` cannot be read or a directory cannot be removed.
pub fn prune_machine_dirs(run_dir: &Path) -> Result<Vec<MachineDir>, ImageError> {
    let mut removed = Vec::new();
    for dir in machine_dirs(run_dir)?.into_iter().filter(|d| !d.in_use) {
        if holds_a_locked_file(&dir.path) {
            continue;
        }
        match std::fs::remove_dir_all(&dir.path) {
            Ok(()) => {}
            // Its machine was stopped, and its files removed, since the scan.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(ImageError::Io { path: dir.path.clone(), source }),
        }
        tracing::info!(path = %dir.path.display(), "removed the files of a machine that no longer runs");
        removed.push(dir);
    }
    Ok(removed)
}

/// Whether another open file description locks a regular file under `dir`, or a file's
/// lock could not be queried. Symbolic links are not followed: a machine's own files are
/// regular files in its directory.
pub(crate) fn holds_a_locked_file(dir: &Path) -> bool {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
        Err(e) => {
            tracing::warn!(path = %dir.display(), error = %e, "cannot look for locked files; keeping the directory");
            return true;
        }
    };
    entries.filter_map(Result::ok).any(|e| match e.file_type() {
        Ok(t) if t.is_dir() => holds_a_locked_file(&e.path()),
        Ok(t) if t.is_file() => match locked_elsewhere(&e.path()) {
            Ok(locked) => locked,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => false,
            Err(error) => {
                tracing::warn!(path = %e.path().display(), %error, "cannot tell whether the file is locked; keeping its machine directory");
                true
            }
        },
        _ => false,
    })
}

/// Whether a write lock on all of `path` would conflict with a lock that another open
/// file description holds: any lock at all, since a write lock conflicts with every
/// other. The probe is a query (`F_OFD_GETLK`); nothing is locked, and the descriptor is
/// opened read-only, which a query allows.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn locked_elsewhere(path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;

    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    use nix::libc;

    // No following a link the file was swapped for since the listing, and no waiting on a
    // FIFO.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Ok(false);
    }
    // The fields are C shorts and the constants small C ints (0 to 3), so the casts are
    // exact. Start 0, length 0: the whole file, however large it grows.
    let mut probe = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    fcntl(&file, FcntlArg::F_OFD_GETLK(&mut probe)).map_err(std::io::Error::from)?;
    // The kernel leaves the probe unlocked when nothing conflicts, and otherwise fills it
    // with the first conflicting lock (its pid is -1: an OFD lock belongs to no process).
    Ok(probe.l_type != libc::F_UNLCK as libc::c_short)
}

/// Without OFD locks (QEMU only locks images where it has them) there is nothing to find:
/// the age guard alone decides.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn locked_elsewhere(_path: &Path) -> std::io::Result<bool> {
    Ok(false)
}

/// The bytes of the regular files under `path`.
fn tree_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or_default(),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A machine directory `name` under `run` with a 1000-byte `overlay.qcow2`, last
    /// modified an hour ago (older than [`YOUNG_MACHINE_DIR`]).
    fn old_machine_dir(run: &Path, name: &str) -> PathBuf {
        let dir = run.join(name);
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("overlay.qcow2"), vec![0u8; 1000]).expect("write");
        age(&dir);
        dir
    }

    fn age(dir: &Path) {
        let past = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::open(dir).and_then(|f| f.set_modified(past)).expect("age the directory");
    }

    /// The directories' names, which say more in a failed assertion than their full paths.
    fn names(dirs: &[MachineDir]) -> Vec<String> {
        dirs.iter().map(|d| d.path.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect()
    }

    /// Takes a shared lock on byte 100 of `path`, as QEMU does for "consistent read",
    /// through a new open file description: OFD locks of two descriptions conflict even
    /// within one process, so the test needs no second process. The lock lasts as long as
    /// the returned file.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn lock_like_qemu(path: &Path) -> std::fs::File {
        use nix::fcntl::{FcntlArg, fcntl};
        use nix::libc;

        let file = std::fs::File::open(path).expect("open for locking");
        let lock = libc::flock {
            l_type: libc::F_RDLCK as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 100,
            l_len: 1,
            l_pid: 0,
        };
        fcntl(&file, FcntlArg::F_OFD_SETLK(&lock)).expect("F_OFD_SETLK");
        file
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn a_directory_with_a_locked_file_is_kept_an_old_unlocked_one_pruned() {
        let run = tempfile::tempdir().expect("tempdir");
        let old = old_machine_dir(run.path(), "vm-old");
        let live = old_machine_dir(run.path(), "vm-live");
        let lock = lock_like_qemu(&live.join("overlay.qcow2"));

        let dirs = machine_dirs(run.path()).expect("scan");
        assert_eq!(names(&dirs), ["vm-live", "vm-old"]);
        assert_eq!(dirs.iter().map(|d| (d.size, d.in_use)).collect::<Vec<_>>(), [(1000, true), (1000, false)]);
        assert_eq!(names(&prune_machine_dirs(run.path()).expect("prune")), ["vm-old"]);
        assert!(!old.exists() && live.exists());

        // The lock goes with its description, as QEMU's go when it exits.
        drop(lock);
        assert_eq!(names(&prune_machine_dirs(run.path()).expect("prune")), ["vm-live"]);
        assert!(!live.exists());
        assert_eq!(machine_dirs(&run.path().join("absent")).expect("missing dir"), []);
    }

    #[test]
    fn a_young_directory_is_kept_though_nothing_locks_it() {
        let run = tempfile::tempdir().expect("tempdir");
        let young = run.path().join("vm-young");
        std::fs::create_dir(&young).expect("mkdir");
        std::fs::write(young.join("seed.iso"), b"seed").expect("write");
        assert!(machine_dirs(run.path()).expect("scan")[0].in_use);
        assert_eq!(prune_machine_dirs(run.path()).expect("prune"), []);
        age(&young);
        assert_eq!(names(&prune_machine_dirs(run.path()).expect("prune")), ["vm-young"]);
    }

    /// Kills and reaps the QEMU of a test, however the test ends.
    struct KillOnDrop(std::process::Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// A real QEMU with the overlay open, as a machine runs: paused before the first
    /// instruction (`-S`) with no board (`-machine none`), which still opens and locks the
    /// disk as a running machine does.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn the_directory_of_a_running_qemu_is_kept_and_pruned_once_it_exits() {
        let run = tempfile::tempdir().expect("tempdir");
        let dir = run.path().join("vm-qemu");
        std::fs::create_dir(&dir).expect("mkdir");
        let overlay = dir.join("overlay.qcow2");
        let created = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&overlay)
            .arg("64M")
            .status()
            .expect("qemu-img (Debian package `qemu-utils`) must be installed");
        assert!(created.success(), "qemu-img create: {created}");
        age(&dir);
        let drive = format!("if=none,id=disk0,format=qcow2,file={}", overlay.display());
        let mut qemu = KillOnDrop(
            std::process::Command::new("qemu-system-x86_64")
                .args(["-machine", "none", "-accel", "tcg", "-display", "none", "-nodefaults", "-S", "-drive", &drive])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("qemu-system-x86_64 (Debian package `qemu-system-x86`) must be installed"),
        );

        // QEMU takes its locks while it starts; wait for them rather than guess a delay.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !machine_dirs(run.path()).expect("scan")[0].in_use {
            if let Some(status) = qemu.0.try_wait().expect("try_wait") {
                panic!("QEMU exited before it locked the overlay: {status}");
            }
            assert!(std::time::Instant::now() < deadline, "QEMU did not lock {} within 30 s", overlay.display());
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(prune_machine_dirs(run.path()).expect("prune"), []);
        assert!(overlay.exists());

        drop(qemu);
        assert_eq!(names(&prune_machine_dirs(run.path()).expect("prune")), ["vm-qemu"]);
        assert!(!dir.exists());
    }
}
