//! Issue 16, items 6-8 with a real guest: a machine's files on the host are its user's
//! alone, the seed's host key is gone once the guest answers SSH, and a job's paths stay
//! in its workspace in the guest too.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use solstice_core::{CheckoutSource, CheckoutStep, ExecError, LogSink, Machine, ScriptRun, StepExecutor, StepExit};
use solstice_e2e::{boot, hypervisor, run_shell};
use solstice_vm::SshExecutor;
use tokio_util::sync::CancellationToken;

/// Every entry under `root` (itself included) with its mode, symbolic links not followed.
fn walk(root: &Path) -> Vec<(PathBuf, u32)> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        found.push((path.clone(), meta.permissions().mode() & 0o7777));
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&path).into_iter().flatten().filter_map(Result::ok).map(|e| e.path()));
        }
    }
    found
}

/// A committed repository on `main` with one 0644 file.
fn repository(dir: &Path) {
    std::fs::write(dir.join("README.md"), "hello\n").expect("write");
    std::fs::set_permissions(dir.join("README.md"), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    for args in [&["init", "-q", "."][..], &["add", "."], &["commit", "-q", "-m", "first"]] {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@e", "-c", "init.defaultBranch=main"])
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git must be installed");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

async fn run_in(machine: &Machine, dir: &str) -> Result<(StepExit, Vec<String>), ExecError> {
    let step = ScriptRun {
        index: 7,
        script: "pwd -P".into(),
        shell: "sh -e {0}".into(),
        env: machine.step_env(),
        working_directory: Some(dir.to_owned()),
        path: Vec::new(),
    };
    let (sink, mut rx) = LogSink::channel(64);
    let exit = SshExecutor::new().run_script(machine, &step, &sink, &CancellationToken::new()).await;
    drop(sink);
    let mut lines = Vec::new();
    while let Some(line) = rx.recv().await {
        lines.push(line.line);
    }
    exit.map(|exit| (exit, lines))
}

async fn checkout(machine: &Machine, source: &CheckoutSource, step: &CheckoutStep) -> Result<StepExit, ExecError> {
    let (sink, _rx) = LogSink::channel(256);
    SshExecutor::new().checkout(machine, source, step, &sink, &CancellationToken::new()).await
}

fn refused_path(result: Result<impl std::fmt::Debug, ExecError>) -> String {
    match result {
        Err(ExecError::OutsideWorkspace { path, workspace, .. }) => {
            assert_eq!(workspace, "/root/work");
            path
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Item 6: `stat` of every file of a running machine on the host (its directory 0700, the
/// console log, QEMU's log, the QMP socket and the seed 0600); the seed no longer holds
/// the host private key once SSH answers, nor does any file QEMU keeps open, and the
/// guest still works. Items 7 and 8 through the SSH executor: paths outside the
/// workspace are refused (GitHub's `actions/checkout` message), also through a symbolic
/// link in the guest; a hostile `ref:` stays inert in the fetch on the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_machine_files_are_private_the_seed_is_blanked_and_checkouts_stay_in_the_workspace() {
    let run_dir = tempfile::tempdir().expect("tempdir");
    let hypervisor = hypervisor(run_dir.path());
    let (machine, _) = boot(&hypervisor).await;
    let dir = hypervisor.machine_dir(&machine.id).expect("live machine has a directory");
    let pid = hypervisor.machine_pid(&machine.id).expect("pid");

    let entries = walk(&dir);
    let names: Vec<String> = entries.iter().filter_map(|(p, _)| p.file_name()).map(|n| n.to_string_lossy().into_owned()).collect();
    for expected in ["seed.iso", "console.log", "qemu.log", "qmp.sock"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing: {names:?}");
    }
    let open: Vec<String> = entries.iter().filter(|(_, mode)| mode & 0o077 != 0).map(|(p, m)| format!("{} {m:o}", p.display())).collect();
    assert_eq!(open, Vec::<String>::new(), "open to group or others");
    assert_eq!(entries[0].1, 0o700, "the machine's directory");

    let seed = std::fs::read(dir.join("seed.iso")).expect("seed");
    assert!(!seed.is_empty() && seed.iter().all(|b| *b == 0), "the seed still holds data after SSH answered");
    let mut open_files = 0;
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).expect("QEMU's descriptors").filter_map(Result::ok) {
        // Only regular files: reading QEMU's pipes or eventfds would block.
        if !std::fs::metadata(fd.path()).is_ok_and(|m| m.is_file()) {
            continue;
        }
        if let Ok(data) = std::fs::read(fd.path()) {
            open_files += 1;
            let text = String::from_utf8_lossy(&data);
            assert!(!text.contains("OPENSSH PRIVATE KEY"), "QEMU's {} ({:?}) holds a private key", fd.path().display(), std::fs::read_link(fd.path()));
        }
    }
    assert!(open_files > 0, "QEMU keeps its seed and logs open, so this looked at something");
    let (exit, lines) = run_shell(&machine, "echo alive".into()).await;
    assert!(exit.succeeded() && lines.contains(&"alive".to_owned()), "{lines:?}");

    // Working directories: in a machine, any directory is allowed, as on GitHub's runners
    // (`working-directory: /tmp`); the machine goes with the job. The host executor is the
    // one that refuses escapes (solstice-core/tests/it/hostfiles.rs).
    let (exit, _) = run_shell(&machine, "mkdir -p /root/work/inside && ln -s /etc /root/work/link".into()).await;
    assert!(exit.succeeded());
    for (dir, expected) in [("../../..", "/"), ("/etc", "/etc"), ("link", "/etc")] {
        let (exit, lines) = run_in(&machine, dir).await.expect("any directory of the machine");
        assert!(exit.succeeded() && lines.contains(&expected.to_owned()), "{dir}: {lines:?}");
    }
    let (exit, lines) = run_in(&machine, "inside").await.expect("inside the workspace");
    assert!(exit.succeeded() && lines.contains(&"/root/work/inside".to_owned()), "{lines:?}");
    let (exit, _) = run_in(&machine, &machine.runner.temp).await.expect("runner.temp is the job's");
    assert!(exit.succeeded());

    // Checkout paths.
    let repo = tempfile::tempdir().expect("tempdir");
    repository(repo.path());
    let local = CheckoutSource::LocalDir { path: repo.path().to_string_lossy().into_owned() };
    let at = |path: &str| CheckoutStep { path: path.into(), ..CheckoutStep::default() };
    let error = checkout(&machine, &local, &at("../escaped")).await.expect_err("outside");
    assert_eq!(error.to_string(), "Repository path '/root/escaped' is not under '/root/work'");
    assert_eq!(refused_path(checkout(&machine, &local, &at("link/sub")).await), "/etc/sub");
    assert_eq!(refused_path(checkout(&machine, &local, &at("/tmp/abs")).await), "/tmp/abs");
    let (_, lines) = run_shell(&machine, "ls -d /root/escaped /etc/sub /tmp/abs 2>/dev/null | wc -l".into()).await;
    assert_eq!(lines.first().map(|l| l.trim()), Some("0"), "something was made outside the workspace");

    // A hostile ref in the host-side fetch; a plain one works and keeps the usual modes.
    let pwned = tempfile::tempdir().expect("tempdir");
    let marker = pwned.path().join("pwned");
    let git = CheckoutSource::Git { url: repo.path().to_string_lossy().into_owned(), rev: "main".into(), token: None };
    let hostile = CheckoutStep { git_ref: Some(format!("--upload-pack=touch {};git-upload-pack", marker.display())), ..at("hostile") };
    let exit = checkout(&machine, &git, &hostile).await.expect("ran");
    assert!(!exit.succeeded(), "no such revision");
    assert!(!marker.exists(), "the ref became git's --upload-pack option");
    let exit = checkout(&machine, &git, &at("repo")).await.expect("ran");
    assert!(exit.succeeded());
    let (_, lines) = run_shell(&machine, "cat /root/work/repo/README.md; ls -l /root/work/repo/README.md".into()).await;
    assert_eq!(lines.first().map(String::as_str), Some("hello"), "{lines:?}");
    assert!(lines.get(1).is_some_and(|l| l.starts_with("-rw-r--r--")), "the guest's checkout has git's usual modes: {lines:?}");

    hypervisor.stop(&machine.id).await.expect("stop");
    assert!(!dir.exists());
}
