//! Machine directories left in a run directory: each holds a job's overlay, seed and
//! console log while its VM runs, and is removed when the VM is destroyed. Directories
//! whose VM is gone (a crashed process) are found here so they can be pruned.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::ImageError;

/// How recent a directory without a QEMU process may be and still count as in use: a
/// machine's directory exists for a moment before its QEMU process does.
pub const YOUNG_MACHINE_DIR: Duration = Duration::from_secs(600);

/// One machine's directory in a run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineDir {
    /// The directory.
    pub path: PathBuf,
    /// Bytes used by its files (the overlay, mostly).
    pub size: u64,
    /// Whether a running process names the directory on its command line (QEMU does),
    /// or the directory is younger than [`YOUNG_MACHINE_DIR`].
    pub in_use: bool,
}

/// The machine directories directly under `run_dir` (none if it does not exist).
///
/// A directory is in use when a process's command line (read from `/proc`) mentions
/// it, as QEMU's does, or when it was modified in the last [`YOUNG_MACHINE_DIR`].
///
/// # Errors
/// [`ImageError::Io`] when `run_dir` cannot be read.
pub fn machine_dirs(run_dir: &Path) -> Result<Vec<MachineDir>, ImageError> {
    let entries = match std::fs::read_dir(run_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(ImageError::Io { path: run_dir.to_path_buf(), source }),
    };
    let command_lines = command_lines();
    let now = SystemTime::now();
    let mut dirs: Vec<MachineDir> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| {
            let path = e.path();
            let needle = path.to_string_lossy().into_owned();
            let young = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|modified| now.duration_since(modified).unwrap_or_default() < YOUNG_MACHINE_DIR);
            let running = command_lines.iter().any(|line| line.contains(&needle));
            MachineDir { size: tree_size(&path), in_use: young || running, path }
        })
        .collect();
    dirs.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(dirs)
}

/// Removes the machine directories under `run_dir` that are not in use; returns them.
///
/// # Errors
/// [`ImageError::Io`] when `run_dir` cannot be read or a directory cannot be removed.
pub fn prune_machine_dirs(run_dir: &Path) -> Result<Vec<MachineDir>, ImageError> {
    let mut removed = Vec::new();
    for dir in machine_dirs(run_dir)?.into_iter().filter(|d| !d.in_use) {
        std::fs::remove_dir_all(&dir.path).map_err(|source| ImageError::Io { path: dir.path.clone(), source })?;
        tracing::info!(path = %dir.path.display(), "removed the files of a machine that no longer runs");
        removed.push(dir);
    }
    Ok(removed)
}

/// The command lines of this host's processes, arguments joined by spaces (Linux
/// `/proc`; empty elsewhere, where only the age guard applies).
fn command_lines() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|raw| raw.split(|b| *b == 0).map(String::from_utf8_lossy).collect::<Vec<_>>().join(" "))
        .collect()
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

    #[test]
    fn a_directory_named_by_a_running_process_is_kept_an_old_unnamed_one_pruned() {
        let run = tempfile::tempdir().expect("tempdir");
        let old = run.path().join("vm-old");
        let live = run.path().join("vm-live");
        for dir in [&old, &live] {
            std::fs::create_dir(dir).expect("mkdir");
            std::fs::write(dir.join("overlay.qcow2"), vec![0u8; 1000]).expect("write");
        }
        let past = SystemTime::now() - Duration::from_secs(3600);
        for dir in [&old, &live] {
            std::fs::File::open(dir).and_then(|f| f.set_modified(past)).expect("age the directory");
        }
        // A process whose command line names `live`, as QEMU's names its directory.
        let mut process = std::process::Command::new("sh")
            .args(["-c", "sleep 5; true", &live.to_string_lossy()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("sh");
        let dirs = machine_dirs(run.path()).expect("scan");
        assert_eq!(dirs.len(), 2);
        assert_eq!(dirs[0].size, 1000);
        let removed = prune_machine_dirs(run.path()).expect("prune");
        let _ = process.kill();
        let _ = process.wait();
        assert_eq!(removed.iter().map(|d| d.path.clone()).collect::<Vec<_>>(), std::slice::from_ref(&old));
        assert!(!old.exists() && live.exists());
        assert_eq!(machine_dirs(&run.path().join("absent")).expect("missing dir"), []);
    }
}
