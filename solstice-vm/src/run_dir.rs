//! Temporary run directories that say whether their process is still alive.
//!
//! Without a configured run directory (`solstice run`), machines keep their files in a
//! fresh `solstice-vms-*` directory under the system temporary directory, removed when the
//! [`Machines`](crate::Machines) are dropped. A process killed by SIGKILL drops nothing,
//! so its directory stays, with each machine's overlay and the seed that holds the guest's
//! SSH host key. To tell such a leftover from the directory of a process still running,
//! the owner holds an exclusive `flock` on the directory's `owner.lock` for as long as it
//! lives: the kernel releases it when the process dies, however it dies. A directory whose
//! lock can be taken is abandoned; the reaper keeps the lock while it removes it, so two
//! reapers never work on the same directory.
//!
//! The lock is taken on a file under a temporary name and only then renamed to
//! `owner.lock` (a lock belongs to the open file, not to its name), so an `owner.lock` is
//! never seen unlocked while its owner is still being made. A directory without one
//! (made before this scheme, or being made right now) is only removed once it is older
//! than [`YOUNG_MACHINE_DIR`] and no file in it is locked by a QEMU.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::image::overlays::{YOUNG_MACHINE_DIR, holds_a_locked_file};

/// The name prefix of temporary run directories.
pub(crate) const RUN_DIR_PREFIX: &str = "solstice-vms-";
/// The file whose lock marks a run directory's owner as alive.
const OWNER_LOCK: &str = "owner.lock";

/// A temporary run directory and the lock that marks its owner alive. Dropping it
/// removes the directory, then releases the lock.
#[derive(Debug)]
pub(crate) struct OwnedRunDir {
    // Field order is drop order: the directory goes before its lock is released.
    dir: tempfile::TempDir,
    _owner: File,
}

impl OwnedRunDir {
    /// Makes a fresh `solstice-vms-*` directory under `parent`, owned by this process.
    pub(crate) fn create(parent: &Path) -> std::io::Result<Self> {
        let dir = tempfile::Builder::new().prefix(RUN_DIR_PREFIX).tempdir_in(parent)?;
        let staging = dir.path().join(".owner.lock.new");
        let owner = File::create(&staging)?;
        owner.lock()?;
        std::fs::rename(&staging, dir.path().join(OWNER_LOCK))?;
        Ok(Self { dir, _owner: owner })
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Removes the temporary run directories under `parent` whose process died without
/// cleaning up (for `solstice run`: a SIGKILL, an OOM kill, a power cut): stops a QEMU
/// that still uses one (its parent is dead, so nothing else will), then removes the
/// directory. Directories of live processes, `solstice run` or `solstice serve` alike,
/// are left alone. Returns the directories removed.
///
/// `parent` is where [`MachineSetup`](crate::MachineSetup) makes them: the system
/// temporary directory, [`std::env::temp_dir`], unless a run directory is configured.
///
/// # Errors
/// [`std::io::Error`] when `parent` cannot be read. A directory that cannot be removed
/// is logged and skipped, for the next reaper.
pub fn reap_abandoned_run_dirs(parent: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(parent) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut reaped = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let is_run_dir = entry.file_name().to_str().is_some_and(|name| name.starts_with(RUN_DIR_PREFIX))
            && entry.file_type().is_ok_and(|t| t.is_dir());
        if !is_run_dir {
            continue;
        }
        let dir = entry.path();
        let Some(claim) = claim_abandoned(&dir) else { continue };
        if let Claim::DeadOwner(_) = claim {
            // Only where the owner is known to be dead: a directory without a lock may
            // be a live run's of an older version, whose QEMU must not be killed.
            stop_processes_using(&dir);
        }
        if holds_a_locked_file(&dir) {
            tracing::warn!(path = %dir.display(), "a machine still uses the files of a dead `solstice run`; leaving them");
            continue;
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {
                tracing::warn!(path = %dir.display(), "removed the machine files an earlier run left when it was killed");
                reaped.push(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %dir.display(), error = %e, "could not remove the files of a dead run"),
        }
    }
    reaped.sort();
    Ok(reaped)
}

/// Why a run directory may be removed.
enum Claim {
    /// Its owner lock was free and is now held by the reaper until it is done.
    DeadOwner(#[allow(dead_code, reason = "held, not read: the lock lasts as long as the file is open")] File),
    /// It has no owner lock and is older than a run takes to make one.
    Unowned,
}

/// Whether `dir` may be removed; `None` while it is, or may be, in use.
fn claim_abandoned(dir: &Path) -> Option<Claim> {
    match File::open(dir.join(OWNER_LOCK)) {
        Ok(owner) => match owner.try_lock() {
            Ok(()) => Some(Claim::DeadOwner(owner)),
            Err(TryLockError::WouldBlock) => None,
            Err(TryLockError::Error(e)) => {
                tracing::warn!(path = %dir.display(), error = %e, "cannot tell whether a run directory is in use; keeping it");
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A directory whose age cannot be read counts as young: kept.
            let old = std::fs::metadata(dir)
                .and_then(|m| m.modified())
                .is_ok_and(|modified| SystemTime::now().duration_since(modified).unwrap_or_default() >= YOUNG_MACHINE_DIR);
            old.then_some(Claim::Unowned)
        }
        // Another user's run (directories are theirs alone): not ours to judge.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => None,
        Err(e) => {
            tracing::warn!(path = %dir.display(), error = %e, "cannot open a run directory's owner lock; keeping it");
            None
        }
    }
}

/// Kills the processes whose command line names a file under `dir`: QEMUs of a dead
/// owner (QEMU is started to die with its parent, so this is the rare case where that
/// failed). Only called on a directory whose owner is known to be dead.
fn stop_processes_using(dir: &Path) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let needle = format!("{}/", dir.display());
    let Ok(procs) = std::fs::read_dir("/proc") else { return };
    for entry in procs.filter_map(Result::ok) {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        if cmdline.split(|b| *b == 0).any(|arg| String::from_utf8_lossy(arg).contains(&needle)) {
            tracing::warn!(pid, path = %dir.display(), "killing a machine whose `solstice run` died");
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    // A killed QEMU releases its image locks when the kernel closes its files; give it
    // a moment before the caller looks at them.
    for _ in 0..50 {
        if !holds_a_locked_file(dir) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dirs: &[PathBuf]) -> Vec<PathBuf> {
        dirs.iter().map(|d| PathBuf::from(d.file_name().expect("name"))).collect()
    }

    #[test]
    fn the_directory_of_a_live_owner_is_kept_and_a_dead_ones_removed() {
        let parent = tempfile::tempdir().expect("tempdir");
        let live = OwnedRunDir::create(parent.path()).expect("live");
        let dead = OwnedRunDir::create(parent.path()).expect("dead");
        std::fs::create_dir(dead.path().join("vm-1")).expect("mkdir");
        std::fs::write(dead.path().join("vm-1/seed.iso"), b"host key").expect("seed");
        let dead_path = dead.path().to_path_buf();
        // What SIGKILL does: the lock is released, the directory stays.
        let OwnedRunDir { dir, _owner } = dead;
        let _kept = dir.keep();
        drop(_owner);

        let reaped = reap_abandoned_run_dirs(parent.path()).expect("reap");
        assert_eq!(reaped, std::slice::from_ref(&dead_path));
        assert!(!dead_path.exists());
        assert!(live.path().join(OWNER_LOCK).exists(), "a live owner's directory is untouched");
        assert_eq!(reap_abandoned_run_dirs(parent.path()).expect("again"), Vec::<PathBuf>::new());
    }

    #[test]
    fn a_young_directory_without_an_owner_lock_is_kept_an_old_one_removed() {
        let parent = tempfile::tempdir().expect("tempdir");
        let young = parent.path().join("solstice-vms-young");
        let old = parent.path().join("solstice-vms-old");
        let other = parent.path().join("not-ours");
        for dir in [&young, &old, &other] {
            std::fs::create_dir(dir).expect("mkdir");
        }
        let hour_ago = SystemTime::now() - std::time::Duration::from_secs(3600);
        for dir in [&old, &other] {
            File::open(dir).and_then(|f| f.set_modified(hour_ago)).expect("age");
        }
        let reaped = reap_abandoned_run_dirs(parent.path()).expect("reap");
        assert_eq!(names(&reaped), [PathBuf::from("solstice-vms-old")]);
        assert!(young.exists() && other.exists());
    }

    #[test]
    fn a_process_of_a_dead_owner_that_uses_its_files_is_killed() {
        let parent = tempfile::tempdir().expect("tempdir");
        let run = OwnedRunDir::create(parent.path()).expect("run");
        let machine = run.path().join("vm-2");
        std::fs::create_dir(&machine).expect("mkdir");
        let arg = format!("{}/overlay.qcow2", machine.display());
        // A stand-in for an orphaned QEMU: its command line names a file of the machine.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do sleep 1; done", &arg])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        let OwnedRunDir { dir, _owner } = run;
        let path = dir.keep();
        drop(_owner);
        // Until the child has exec'd, its command line is still this test's.
        for _ in 0..500 {
            let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&arg) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(reap_abandoned_run_dirs(parent.path()).expect("reap"), std::slice::from_ref(&path));
        let status = child.wait().expect("wait");
        assert!(!status.success(), "the orphan was killed");
        assert!(!path.exists());
    }
}
