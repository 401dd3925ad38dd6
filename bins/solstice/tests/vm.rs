//! `solstice vm list|kill` through the real binary, on a SQLite store holding the record
//! of a machine whose "QEMU" is a shell that names it on its command line.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use solstice_core::{JobRequest, StepCommand, Store, VmRecord};

fn solstice(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_solstice")).arg("vm").args(args).args(["--store", url]).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[tokio::test(flavor = "multi_thread")]
async fn list_shows_recorded_machines_and_kill_stops_and_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("state.db").display());
    let store = Store::connect(&url).await.unwrap();
    let job = JobRequest::new("build-omnios", vec!["omnios".into()], vec![StepCommand::run("make", "make")]);
    store.record_queued(&job).await.unwrap();
    let machine = "vm-1234abcd-5e6f7a";
    let files = dir.path().join(format!("run/{machine}-x"));
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("overlay.qcow2"), b"overlay").unwrap();
    let mut qemu = Command::new("sh")
        .args(["-c", "while :; do sleep 1; done", &format!("qemu -name {machine}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let footprint = solstice_core::MachineFootprint {
        machine_id: machine.into(),
        pid: Some(qemu.id()),
        ssh_port: Some(40022),
        files: vec![files.clone()],
    };
    store.record_vm(&VmRecord::from_footprint(&footprint, job.id, "ci-host-1")).await.unwrap();
    let stale = solstice_core::MachineFootprint { machine_id: "vm-gone-000000".into(), pid: Some(qemu.id()), ..Default::default() };
    store.record_vm(&VmRecord::from_footprint(&stale, job.id, "ci-host-1")).await.unwrap();

    let out = solstice(&url, &["list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = listing.lines().find(|l| l.starts_with(machine)).unwrap_or_else(|| panic!("{listing}"));
    for expected in ["build-omnios", "queued", "ci-host-1", &qemu.id().to_string(), "127.0.0.1:40022", "running"] {
        assert!(line.contains(expected), "`{expected}` missing in: {line}");
    }
    // A pid that does not name the machine (reused after a crash) is not its process.
    assert!(listing.lines().any(|l| l.starts_with("vm-gone-000000") && l.ends_with("gone")), "{listing}");

    let out = solstice(&url, &["kill", "vm-nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no machine `vm-nope` is recorded"));

    let out = solstice(&url, &["kill", machine, "--forget"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("✓ {machine}: stopped and removed, record deleted")), "{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(10);
    while qemu.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(qemu.id()) || qemu.try_wait().unwrap().is_some(), "the machine's process survived");
    assert!(!files.exists(), "the machine's files were kept");
    let out = solstice(&url, &["list"]);
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!listing.contains(machine), "{listing}");
    assert!(listing.contains("vm-gone-000000"), "{listing}");
}
