//! Issue 16, items 6-8 on the host executor: the files a job leaves on the host are its
//! user's alone, the checkout token is never on a command line, and a job's paths stay
//! in its directories.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use solstice_core::{
    CheckoutSource, CheckoutStep, Engine, ExecError, HostExecutor, HostHypervisor, Hypervisor, JobId, JobRequest, JobResult,
    LogSink, Machine, MachineRequest, ProvisionContext, Secret, StepAction, StepCommand, StepExecutor,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::support::*;

fn host_engine(hv: &HostHypervisor) -> Engine {
    Engine::builder().hypervisor(hv.clone()).executor(HostExecutor::new()).build().expect("engine")
}

fn checkout_step(path: &str) -> StepCommand {
    let checkout = CheckoutStep { path: path.into(), ..CheckoutStep::default() };
    StepCommand { action: StepAction::Checkout(checkout), ..StepCommand::run("checkout", "") }
}

/// Every entry under `root` (itself included) with its mode, symbolic links not followed.
fn walk(root: &Path) -> Vec<(PathBuf, u32, bool)> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        found.push((path.clone(), meta.permissions().mode() & 0o7777, meta.is_dir()));
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&path).into_iter().flatten().filter_map(Result::ok).map(|e| e.path()));
        }
    }
    found
}

/// Entries that group or others may read, write or enter.
fn open_to_others(entries: &[(PathBuf, u32, bool)]) -> Vec<String> {
    entries.iter().filter(|(_, mode, _)| mode & 0o077 != 0).map(|(p, mode, _)| format!("{} {mode:o}", p.display())).collect()
}

/// A local repository with a file and an executable, made with the usual umask (0644,
/// 0755), committed on `main`.
fn repository(dir: &Path) {
    std::fs::create_dir_all(dir.join("bin")).expect("mkdir");
    std::fs::write(dir.join("README.md"), "hello\n").expect("write");
    std::fs::write(dir.join("bin/tool.sh"), "echo tool\n").expect("write");
    std::fs::set_permissions(dir.join("README.md"), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::set_permissions(dir.join("bin/tool.sh"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@e", "-c", "init.defaultBranch=main"])
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git must be installed");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    git(&["init", "-q", "."]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "first"]);
}

/// Issue 16, item 6: while a host job runs, every directory the runner made for it is
/// 0700 and every file 0600 (the machine's directory with the workspace, runner.temp and
/// runner.tool_cache, the checkout, the step's script and its GITHUB_ENV, GITHUB_OUTPUT,
/// GITHUB_PATH, GITHUB_STATE and GITHUB_STEP_SUMMARY files).
#[tokio::test]
async fn issue_16_nothing_a_host_job_writes_is_open_to_other_users() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let observe = tempfile::tempdir().expect("tempdir");
    let repo = tempfile::tempdir().expect("tempdir");
    repository(repo.path());
    let hv = HostHypervisor::new().in_dir(scratch.path());
    let marker = observe.path().join("step-dir");
    // The step says where its command files are, then waits while the test looks.
    let script = format!(
        "echo 'SECRET_FOR_LATER=s3cret' >> \"$GITHUB_ENV\"\necho \"$(dirname \"$GITHUB_ENV\")\" > {m}.tmp && mv {m}.tmp {m}\nsleep 4",
        m = marker.display()
    );
    let mut job = JobRequest::new("private", vec!["host".into()], vec![checkout_step(""), StepCommand::run("wait", script)]);
    job.checkout = Some(CheckoutSource::LocalDir { path: repo.path().to_string_lossy().into_owned() });
    let engine = host_engine(&hv);
    let running = tokio::spawn(async move { engine.run_job_collect(job).await });
    let step_dir = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Ok(text) = std::fs::read_to_string(&marker) {
                return PathBuf::from(text.trim());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the step started");
    let machines: Vec<PathBuf> = std::fs::read_dir(scratch.path()).expect("scratch").filter_map(Result::ok).map(|e| e.path()).collect();
    assert_eq!(machines.len(), 1, "{machines:?}");
    let mut entries = walk(&machines[0]);
    entries.extend(walk(&step_dir));
    let names: Vec<String> = entries.iter().filter_map(|(p, _, _)| p.file_name()).map(|n| n.to_string_lossy().into_owned()).collect();
    for expected in ["work", "temp", "tool", "README.md", "tool.sh", "step-1.sh", "env", "output", "path", "state", "step_summary"] {
        assert!(names.iter().any(|n| n == expected), "{expected} was not found: {names:?}");
    }
    assert_eq!(open_to_others(&entries), Vec::<String>::new(), "open to group or others");
    let dirs = entries.iter().filter(|(_, _, dir)| *dir).count();
    assert!(entries.iter().all(|(_, mode, dir)| !dir || *mode == 0o700), "directories are 0700: {entries:?}");
    assert!(dirs >= 5, "{entries:?}");
    let (result, events) = running.await.expect("job task");
    assert_eq!(result, JobResult::Success, "{:#?}", log_lines(&events));
    assert!(!step_dir.exists(), "the step's files are removed");
    assert_eq!(std::fs::read_dir(scratch.path()).expect("scratch").count(), 0, "the machine is removed");
}

/// A repository served over git's "dumb" HTTP protocol (static files) that answers 401
/// unless a request carries `Authorization: <expected>`, and takes `delay` per request
/// so that a watcher sees git while it fetches. Returns the URL and the count of
/// requests that carried the expected header.
async fn serve_repository(bare: PathBuf, expected: String, delay: Duration) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let authorized = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = authorized.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (bare, expected, count) = (bare.clone(), expected.clone(), count.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).await.is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let target = head.split_whitespace().nth(1).unwrap_or("/").split('?').next().unwrap_or("/").to_owned();
                let authorization = head
                    .lines()
                    .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("authorization")).map(|(_, v)| v.trim().to_owned()));
                tokio::time::sleep(delay).await;
                let reply = if authorization.as_deref() != Some(expected.as_str()) {
                    b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
                } else {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let file = target.strip_prefix("/repo.git/").map(|rest| bare.join(rest));
                    match file.filter(|f| !f.to_string_lossy().contains("..")).and_then(|f| std::fs::read(f).ok()) {
                        Some(body) => {
                            let mut reply = format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).into_bytes();
                            reply.extend(body);
                            reply
                        }
                        None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
                    }
                };
                let _ = stream.write_all(&reply).await;
            });
        }
    });
    (format!("http://127.0.0.1:{port}/repo.git"), authorized)
}

/// Every process's command line, as any user of the host can read them.
fn command_lines() -> Vec<String> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()))
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .collect()
}

async fn host_machine(hv: &HostHypervisor) -> Machine {
    let request = MachineRequest { job_id: JobId::new(), label: "host".into(), debug_ssh: false };
    let (sink, _lines) = LogSink::channel(64);
    hv.provision(&request, &ProvisionContext::new(&sink, &CancellationToken::new())).await.expect("machine")
}

/// Issue 16, item 7: the token reaches the forge (the fetch succeeds only with the
/// header `actions/checkout` sends, `Authorization: basic base64(x-access-token:<token>)`
/// per its `src/git-auth-helper.ts`) while no process's command line ever holds it, in
/// clear or in base64, though a watcher reads `/proc/*/cmdline` all through the fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_the_checkout_token_never_appears_on_a_command_line() {
    use base64::Engine as _;
    let token = "ghs_issue16TokenThatMustNotLeak";
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
    let sources = tempfile::tempdir().expect("tempdir");
    repository(&sources.path().join("work"));
    let bare = sources.path().join("repo.git");
    for args in [
        vec!["clone", "-q", "--bare", "work", "repo.git"],
        vec!["-C", "repo.git", "update-server-info"],
    ] {
        let status = std::process::Command::new("git").args(&args).current_dir(sources.path()).status().expect("git");
        assert!(status.success(), "git {args:?}");
    }
    let (url, authorized) = serve_repository(bare, format!("basic {basic}"), Duration::from_millis(150)).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        let (token, basic) = (token.to_owned(), basic.clone());
        std::thread::spawn(move || {
            let (mut gits, mut leaks) = (0usize, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for line in command_lines() {
                    if line.contains("fetch") && line.starts_with("git") {
                        gits += 1;
                    }
                    if line.contains(&token) || line.contains(&basic) {
                        leaks.push(line);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (gits, leaks)
        })
    };
    let hv = HostHypervisor::new();
    let machine = host_machine(&hv).await;
    let source = CheckoutSource::Git { url, rev: "main".into(), token: Some(Secret::new(token)) };
    // The dumb protocol cannot fetch shallow, so the whole history.
    let step = CheckoutStep { fetch_depth: 0, ..CheckoutStep::default() };
    let (sink, mut lines) = LogSink::channel(256);
    let exit = HostExecutor::new().checkout(&machine, &source, &step, &sink, &CancellationToken::new()).await.expect("checkout ran");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (gits, leaks) = watcher.join().expect("watcher");
    drop(sink);
    let mut output = Vec::new();
    while let Some(line) = lines.recv().await {
        output.push(line.line);
    }
    assert!(exit.succeeded(), "the authenticated fetch failed: {output:#?}");
    assert_eq!(std::fs::read_to_string(Path::new(&machine.workspace).join("README.md")).expect("checked out"), "hello\n");
    assert!(authorized.load(std::sync::atomic::Ordering::SeqCst) > 0, "the token reached the server");
    assert!(gits > 0, "the watcher never saw git fetching, so it proves nothing");
    assert_eq!(leaks, Vec::<String>::new(), "the token was on a command line");
    hv.destroy(&machine).await.expect("destroy");
}

/// Issue 16, item 7: a `ref:` that looks like an option reaches git after
/// `--end-of-options`, so it is a revision git cannot find: `--upload-pack` (which git
/// runs through the shell for a local repository) never runs. A plain ref still works.
#[tokio::test]
async fn issue_16_a_ref_cannot_become_a_git_option() {
    let sources = tempfile::tempdir().expect("tempdir");
    repository(sources.path());
    let pwned = tempfile::tempdir().expect("tempdir");
    let marker = pwned.path().join("pwned");
    let hv = HostHypervisor::new();
    let machine = host_machine(&hv).await;
    let source = CheckoutSource::Git { url: sources.path().to_string_lossy().into_owned(), rev: "main".into(), token: None };
    let (sink, _lines) = LogSink::channel(256);
    let executor = HostExecutor::new();
    let hostile = CheckoutStep { git_ref: Some(format!("--upload-pack=touch {};git-upload-pack", marker.display())), ..CheckoutStep::default() };
    let exit = executor.checkout(&machine, &source, &hostile, &sink, &CancellationToken::new()).await.expect("ran");
    assert!(!exit.succeeded(), "no such revision");
    assert!(!marker.exists(), "the ref became git's --upload-pack option");
    let plain = CheckoutStep { path: "plain".into(), ..CheckoutStep::default() };
    let exit = executor.checkout(&machine, &source, &plain, &sink, &CancellationToken::new()).await.expect("ran");
    assert!(exit.succeeded());
    let readme = Path::new(&machine.workspace).join("plain/README.md");
    assert_eq!(std::fs::read_to_string(&readme).expect("checked out"), "hello\n");
    let mode = std::fs::metadata(&readme).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the checkout's files are private on the host");
    hv.destroy(&machine).await.expect("destroy");
}

/// Issue 16, item 8: a checkout `path:` or `working-directory` outside the job's
/// directories, written with `..`, absolute, or through a symbolic link the job made, is
/// refused with `actions/checkout`'s message ("Repository path '…' is not under '…'",
/// `src/input-helper.ts`), and nothing is made outside the workspace.
#[tokio::test]
async fn issue_16_paths_outside_the_workspace_are_refused_and_nothing_is_left_outside() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let repo = tempfile::tempdir().expect("tempdir");
    repository(repo.path());
    let hv = HostHypervisor::new().in_dir(scratch.path());
    let keep_going = |mut step: StepCommand| {
        step.continue_on_error = true;
        step
    };
    let in_dir = |dir: &str, script: &str| {
        let mut step = StepCommand::run(format!("in {dir}"), script);
        step.working_directory = Some(dir.to_owned());
        keep_going(step)
    };
    let steps = vec![
        StepCommand::run("link out", format!("ln -s {} link\nmkdir inside", outside.path().display())),
        keep_going(checkout_step("../../escaped")),
        keep_going(checkout_step(&outside.path().join("abs").to_string_lossy())),
        keep_going(checkout_step("link/through")),
        in_dir("../../..", "touch escaped-step"),
        in_dir(&outside.path().to_string_lossy(), "touch escaped-step"),
        in_dir("link", "touch escaped-step"),
        in_dir("inside", "pwd"),
        keep_going(checkout_step("inside/repo")),
    ];
    let mut job = JobRequest::new("escapes", vec!["host".into()], steps);
    job.checkout = Some(CheckoutSource::LocalDir { path: repo.path().to_string_lossy().into_owned() });
    let (result, events) = host_engine(&hv).run_job_collect(job).await;
    assert_eq!(result, JobResult::Success, "continue-on-error steps only: {:#?}", log_lines(&events));
    let results = step_results(&events);
    let failed: Vec<usize> = results.iter().filter(|(_, outcome, _)| *outcome == JobResult::Failure).map(|(i, _, _)| *i).collect();
    assert_eq!(failed, [1, 2, 3, 4, 5, 6], "{results:?}\n{:#?}", log_lines(&events));
    let error = |index: usize| step_lines(&events, index).into_iter().find(|l| l.starts_with("##[error]")).unwrap_or_default();
    let real_outside = outside.path().canonicalize().expect("canonical");
    assert!(error(1).starts_with("##[error]Repository path '") && error(1).contains("/escaped' is not under '"), "{}", error(1));
    assert_eq!(error(2), format!("##[error]Repository path '{}/abs' is not under '{}'", outside.path().display(), workspace_of(&events)));
    assert_eq!(error(3), format!("##[error]Repository path '{}/through' is not under '{}'", real_outside.display(), workspace_of(&events)));
    let workspace = workspace_of(&events);
    let three_up = Path::new(&workspace).ancestors().nth(3).expect("three levels up").to_string_lossy().into_owned();
    assert_eq!(error(4), format!("##[error]Working directory '{three_up}' is not under '{workspace}'"));
    assert_eq!(error(5), format!("##[error]Working directory '{}' is not under '{workspace}'", outside.path().display()));
    assert_eq!(error(6), format!("##[error]Working directory '{}' is not under '{}'", real_outside.display(), workspace_of(&events)));
    assert!(step_lines(&events, 7).iter().any(|l| l.ends_with("/work/inside")), "{:#?}", step_lines(&events, 7));
    assert_eq!(std::fs::read_dir(outside.path()).expect("outside").count(), 0, "something was made outside the workspace");
    assert_eq!(std::fs::read_dir(scratch.path()).expect("scratch").count(), 0, "something was left beside the workspace");
}

/// The workspace the job ran in, as the refusals name it.
fn workspace_of(events: &[solstice_core::JobEvent]) -> String {
    log_lines(events)
        .iter()
        .find_map(|l| l.split_once("' is not under '").map(|(_, rest)| rest.trim_end_matches('\'').to_owned()))
        .unwrap_or_default()
}

/// The executor refuses a working directory outside the job's directories before it
/// makes anything, as an [`ExecError::OutsideWorkspace`] the engine shows as the step's
/// error; `runner.temp` is the job's own and allowed.
#[tokio::test]
async fn issue_16_runner_temp_is_a_working_directory_the_job_may_use() {
    let hv = HostHypervisor::new();
    let machine = host_machine(&hv).await;
    let (sink, _lines) = LogSink::channel(64);
    let run = |dir: &str| solstice_core::ScriptRun {
        index: 0,
        script: "pwd".into(),
        shell: "sh -e {0}".into(),
        env: Default::default(),
        working_directory: Some(dir.to_owned()),
        path: Vec::new(),
    };
    let executor = HostExecutor::new();
    let exit = executor.run_script(&machine, &run(&machine.runner.temp), &sink, &CancellationToken::new()).await.expect("runs");
    assert!(exit.succeeded());
    let error = executor.run_script(&machine, &run("/"), &sink, &CancellationToken::new()).await.expect_err("outside");
    assert!(matches!(error, ExecError::OutsideWorkspace { what: "Working directory", .. }), "{error:?}");
    hv.destroy(&machine).await.expect("destroy");
}
