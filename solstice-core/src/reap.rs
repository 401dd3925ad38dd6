//! Removing what a machine left behind when the process that made it died.
//!
//! The only facts a reaper has are the ones recorded in a [`MachineFootprint`]: a pid
//! and some paths. A pid can be reused by an unrelated process after a crash, so a
//! process is only signalled if its command line still names the machine.

use std::path::{Component, Path};
use std::time::Duration;

use crate::{HypervisorError, MachineFootprint};

/// How long a machine's process gets to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// Stops the footprint's process if it is still the machine's, then removes its files.
pub(crate) async fn reap_footprint(footprint: &MachineFootprint) -> Result<(), HypervisorError> {
    if let Some(pid) = footprint.pid {
        stop_process(pid, &footprint.machine_id).await?;
    }
    for path in &footprint.files {
        remove_path(path).await.map_err(|e| HypervisorError::Backend {
            message: format!("could not remove {} of machine {}", path.display(), footprint.machine_id),
            transient: true,
            source: Some(Box::new(e)),
        })?;
    }
    Ok(())
}

/// Whether `pid` is alive and its command line mentions `machine_id`.
fn names_machine(pid: u32, machine_id: &str) -> bool {
    if machine_id.is_empty() {
        return false;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => cmdline
            .split(|b| *b == 0)
            .any(|arg| String::from_utf8_lossy(arg).contains(machine_id)),
        Err(_) => false,
    }
}

async fn stop_process(pid: u32, machine_id: &str) -> Result<(), HypervisorError> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let Ok(raw) = i32::try_from(pid) else { return Ok(()) };
    if !names_machine(pid, machine_id) {
        tracing::debug!(pid, machine = machine_id, "recorded process is gone (or is not the machine's any more)");
        return Ok(());
    }
    tracing::info!(pid, machine = machine_id, "stopping an orphaned machine");
    let _ = kill(Pid::from_raw(raw), Signal::SIGTERM);
    let until = tokio::time::Instant::now() + TERM_GRACE;
    while tokio::time::Instant::now() < until {
        if !names_machine(pid, machine_id) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
    for _ in 0..50 {
        if !names_machine(pid, machine_id) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(HypervisorError::Backend {
        message: format!("process {pid} of machine {machine_id} survived SIGKILL"),
        transient: true,
        source: None,
    })
}

/// Removes a file or a directory tree; a path already gone is fine. Relative paths and
/// the file system root are refused: a footprint only ever names a machine's own files.
async fn remove_path(path: &Path) -> std::io::Result<()> {
    let too_broad = !path.is_absolute() || path.components().filter(|c| matches!(c, Component::Normal(_))).count() < 2;
    if too_broad {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("refusing to remove {}: not a machine's own path", path.display()),
        ));
    }
    let result = match tokio::fs::symlink_metadata(path).await {
        Ok(meta) if meta.is_dir() => tokio::fs::remove_dir_all(path).await,
        Ok(_) => tokio::fs::remove_file(path).await,
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_recorded_process_that_names_the_machine_is_stopped_and_its_files_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let machine_dir = dir.path().join("vm-test-reap");
        std::fs::create_dir_all(machine_dir.join("inner")).expect("mkdir");
        std::fs::write(machine_dir.join("inner/disk"), b"x").expect("write");
        // A process whose command line names the machine, as QEMU's `-name` does.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do sleep 1; done", "vm-test-reap-7f"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        // Until the child has exec'd, its command line is still this test's.
        wait_for_exec(child.id(), "vm-test-reap-7f").await;
        let footprint = MachineFootprint {
            machine_id: "vm-test-reap-7f".into(),
            pid: Some(child.id()),
            ssh_port: None,
            files: vec![machine_dir.clone()],
        };
        reap_footprint(&footprint).await.expect("reap");
        let status = exited_within(&mut child, Duration::from_secs(10)).await;
        assert!(!status.success(), "the process was signalled, not left to finish");
        assert!(!machine_dir.exists());
        // Again: everything is gone already, which is success.
        reap_footprint(&footprint).await.expect("reap is idempotent");
    }

    /// Waits until `pid`'s command line names `machine_id` (the child has exec'd).
    async fn wait_for_exec(pid: u32, machine_id: &str) {
        for _ in 0..500 {
            if names_machine(pid, machine_id) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("process {pid} never showed {machine_id} in its command line");
    }

    /// The child's exit status, failing the test (and killing it) if it runs on.
    async fn exited_within(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
        let until = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if tokio::time::Instant::now() > until {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the process was not stopped");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_reused_pid_that_does_not_name_the_machine_is_left_alone() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("spawn");
        let footprint = MachineFootprint { machine_id: "vm-other".into(), pid: Some(child.id()), ..Default::default() };
        reap_footprint(&footprint).await.expect("reap");
        assert!(child.try_wait().expect("try_wait").is_none(), "an unrelated process must survive");
        child.kill().expect("kill");
        let _ = child.wait();
    }

    #[tokio::test]
    async fn paths_that_are_not_a_machines_own_are_refused() {
        for path in ["/", "/tmp", "relative/dir"] {
            let footprint = MachineFootprint { machine_id: "vm".into(), files: vec![path.into()], ..Default::default() };
            assert!(reap_footprint(&footprint).await.is_err(), "{path} must be refused");
        }
    }
}
