//! `solstice serve` end to end: the real binary against the fake Forgejo, with host
//! labels, the in-process queue and a SQLite store.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use solstice_core::Secret;
use solstice_forgejo::{ForgejoClient, LabelSpec, Registration};
use solstice_forgejo_fake::{FakeForgejo, JobSpec, Scope, Status};
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_solstice");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap()
}

fn get(port: u16, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"), "{response}");
    response.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()
}

/// Registers a runner with `labels` at the fake (as `solstice-forgejo-runner register`
/// does) and writes `solstice.toml` for it in `dir`, with `extra` top-level keys.
async fn setup(fake: &FakeForgejo, dir: &Path, labels: &str, port: u16, extra: &str) -> PathBuf {
    let client = ForgejoClient::builder(fake.url()).build().unwrap();
    let registration = Registration {
        name: "serve-runner".into(),
        token: Secret::new(fake.registration_token(Scope::Instance)),
        labels: labels.split(',').map(|l| LabelSpec::parse(l).unwrap()).collect(),
        ephemeral: false,
    };
    let file = solstice_forgejo::register(&client, &registration, Duration::from_secs(30), &CancellationToken::new()).await.unwrap();
    let runner_file = dir.join(".runner");
    file.save(&runner_file).unwrap();
    let config = dir.join("solstice.toml");
    let state = dir.join("state.db");
    std::fs::write(
        &config,
        format!(
            "{extra}\n[store]\nurl = \"sqlite://{}\"\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n[forgejo]\nfile = {runner_file:?}\nfetch_interval = \"100ms\"\nreport_interval = \"100ms\"\n",
            state.display()
        ),
    )
    .unwrap();
    config
}

struct Serve(Option<Child>);

impl Serve {
    fn start(config: &Path) -> Self {
        let child = Command::new(BIN)
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("SOLSTICE_LOG_LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Self(Some(child))
    }

    fn term(&self) {
        let pid = self.0.as_ref().unwrap().id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    }

    async fn wait(mut self) -> std::process::Output {
        let child = self.0.take().unwrap();
        tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn wait_for_metrics(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the metrics endpoint never came up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `solstice vm list` of the store at `store` (a URL).
fn vm_list(store: &str) -> String {
    let out = Command::new(BIN).args(["vm", "--store", store, "list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Checks that nothing of `machine` is left: no record in `store`, no process naming
/// it, no file in the default run directory (as `solstice` picks it).
fn assert_nothing_left_of(machine: &str, store: &str) {
    assert_eq!(vm_list(store).trim(), "no machine recorded");
    let qemu_left = std::fs::read_dir("/proc").unwrap().filter_map(Result::ok).any(|e| {
        std::fs::read(e.path().join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(machine))
    });
    assert!(!qemu_left, "a process still names {machine}");
    let run = solstice_config::default_cache_dir().join("run");
    let files_left = std::fs::read_dir(&run).map(|d| d.filter_map(Result::ok).any(|e| e.file_name().to_string_lossy().starts_with(machine)));
    assert!(!files_left.unwrap_or(false), "files of {machine} are left in {}", run.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_runs_forgejo_jobs_on_host_labels_and_sigterm_lets_the_running_job_finish() {
    let fake = FakeForgejo::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = setup(&fake, dir.path(), "host:host", port, "capacity = 2").await;
    let serve = Serve::start(&config);
    wait_for_metrics(port).await;
    assert_eq!(get(port, "/healthz"), "ok\n");

    let job = fake.enqueue(JobSpec::new("build", "on: push\njobs:\n  build:\n    runs-on: host\n    steps:\n      - run: echo from serve\n      - run: exit 3\n"));
    let task = fake.wait_job_done(job, Duration::from_secs(60)).await.expect("the first job ran");
    assert_eq!(task.status, Status::Failure);
    let log = fake.log(task.id);
    assert!(log.iter().any(|l| l == "from serve"), "{log:#?}");
    assert!(log.iter().any(|l| l.contains("exit code 3")), "{log:#?}");
    let metrics = get(port, "/metrics");
    assert!(metrics.contains("solstice_jobs_finished_total{result=\"failure\"} 1"), "{metrics}");

    // A job running when SIGTERM arrives finishes within the grace period.
    let job = fake.enqueue(JobSpec::new(
        "slow",
        "on: push\njobs:\n  slow:\n    runs-on: host\n    steps:\n      - run: echo started; sleep 3; echo finished after sigterm\n",
    ));
    assert!(
        fake.wait_until(Duration::from_secs(30), |f| f.job_task(job).is_some_and(|t| f.log(t).iter().any(|l| l == "started"))).await,
        "the slow job never started"
    );
    serve.term();
    let task = fake.wait_job_done(job, Duration::from_secs(30)).await;
    let exit = serve.wait().await;
    let stderr = String::from_utf8_lossy(&exit.stderr);
    let task = task.unwrap_or_else(|| panic!("the slow job was not reported:\n{stderr}"));
    assert_eq!(task.status, Status::Success, "{stderr}");
    assert!(fake.log(task.id).iter().any(|l| l == "finished after sigterm"));
    assert_eq!(exit.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("shutting down"), "{stderr}");
    assert!(dir.path().join("state.db").exists(), "no SQLite store was made");
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_grace_period_running_jobs_are_cancelled_and_reported() {
    let fake = FakeForgejo::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = setup(&fake, dir.path(), "local:host", port, "shutdown_grace = 1").await;
    let serve = Serve::start(&config);
    let job = fake.enqueue(JobSpec::new(
        "stuck",
        "on: push\njobs:\n  stuck:\n    runs-on: local\n    steps:\n      - run: echo waiting; sleep 600\n",
    ).runs_on(["local"]));
    assert!(
        fake.wait_until(Duration::from_secs(60), |f| f.job_task(job).is_some_and(|t| f.log(t).iter().any(|l| l == "waiting"))).await,
        "the job never started"
    );
    let started = Instant::now();
    serve.term();
    let exit = serve.wait().await;
    let stderr = String::from_utf8_lossy(&exit.stderr);
    assert!(started.elapsed() < Duration::from_secs(30), "shutdown took {:?}:\n{stderr}", started.elapsed());
    assert_eq!(exit.status.code(), Some(0), "{stderr}");
    // Reported as Forgejo's own runner reports a job its shutdown interrupted: failed.
    let task_id = fake.job_task(job).unwrap();
    let task = fake.task(task_id).unwrap();
    assert_eq!(task.status, Status::Failure, "{stderr}");
    assert!(fake.log(task_id).iter().any(|l| l == "The runner was stopped before the job ended."), "{:?}", fake.log(task_id));
    assert!(stderr.contains("grace period over"), "{stderr}");
    assert!(stderr.contains("cancelled=1"), "{stderr}");
}

#[test]
fn serve_without_a_registered_runner_is_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("solstice.toml");
    std::fs::write(&config, format!("[forgejo]\nfile = {:?}\n", dir.path().join("missing.runner"))).unwrap();
    let out = Command::new(BIN).args(["serve", "--config", config.to_str().unwrap()]).current_dir(dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("forgejo.file: register the runner first"), "{stderr}");
    assert!(!dir.path().join("solstice-state.db").exists(), "a store was created for nothing");
}

/// Both forges in one process: a Forgejo task and a GitHub job, each reported back to
/// its own forge, run by the one engine.
#[tokio::test(flavor = "multi_thread")]
async fn serve_runs_forgejo_and_github_jobs_side_by_side() {
    use solstice_github_fake::{FakeConfig, FakeGithub, FakeJob};

    let forgejo = FakeForgejo::start().await.unwrap();
    let github = FakeGithub::start(FakeConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = setup(&forgejo, dir.path(), "host:host", port, "capacity = 2").await;
    let gh_dir = dir.path().join("github");
    let registration = solstice_github::RegistrationConfig {
        url: github.repo_url(),
        token: Secret::new("AREGTOKEN".to_owned()),
        name: "serve-gh".into(),
        labels: vec!["host".into()],
        ..Default::default()
    };
    let runner = solstice_github::register(&registration).await.unwrap();
    solstice_github::RunnerStore::new(&gh_dir).save(&runner).unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("\n[github]\ndir = {gh_dir:?}\nlabels = [\"host\"]\n"));
    std::fs::write(&config, text).unwrap();

    let serve = Serve::start(&config);
    let gh_job = github.enqueue(FakeJob::new("gh").labels(&["host"]).run("echo from github")).await;
    let fj_job = forgejo.enqueue(JobSpec::new("fj", "on: push\njobs:\n  fj:\n    runs-on: host\n    steps:\n      - run: echo from forgejo\n"));
    let fj_task = forgejo.wait_job_done(fj_job, Duration::from_secs(60)).await;
    let gh_view = github.wait_completed(&gh_job, Duration::from_secs(60)).await;
    serve.term();
    let exit = serve.wait().await;
    let stderr = String::from_utf8_lossy(&exit.stderr);
    let fj_task = fj_task.unwrap_or_else(|| panic!("the Forgejo task was not reported:\n{stderr}"));
    assert_eq!(fj_task.status, Status::Success, "{stderr}");
    assert!(forgejo.log(fj_task.id).iter().any(|l| l == "from forgejo"));
    let gh_view = gh_view.unwrap_or_else(|| panic!("the GitHub job was not reported:\n{stderr}"));
    assert_eq!(gh_view.result.as_deref(), Some("succeeded"), "{stderr}");
    assert!(gh_view.all_logs().contains("from github"), "{}", gh_view.all_logs());
    assert_eq!(exit.status.code(), Some(0), "{stderr}");
}

/// A VM label: while the job runs, `solstice vm list` shows its machine running; SIGTERM
/// past the grace period cancels the job and leaves no QEMU process, file or record.
#[tokio::test(flavor = "multi_thread")]
async fn a_vm_job_is_listed_while_it_runs_and_nothing_is_left_after_sigterm() {
    let fake = FakeForgejo::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = setup(&fake, dir.path(), "tiny:vm:tiny-linux", port, "shutdown_grace = 1").await;
    let store = format!("sqlite://{}", dir.path().join("state.db").display());
    let serve = Serve::start(&config);
    let job = fake.enqueue(
        JobSpec::new("vm", "on: push\njobs:\n  vm:\n    runs-on: tiny\n    steps:\n      - run: echo \"inside $(uname -n)\"; sleep 600\n")
            .runs_on(["tiny"]),
    );
    let booted = fake
        .wait_until(Duration::from_secs(240), |f| f.job_task(job).is_some_and(|t| f.log(t).iter().any(|l| l.starts_with("inside vm-"))))
        .await;
    let listing = tokio::task::spawn_blocking({
        let store = store.clone();
        move || vm_list(&store)
    })
    .await
    .unwrap();
    serve.term();
    let exit = serve.wait().await;
    let stderr = String::from_utf8_lossy(&exit.stderr);
    assert!(booted, "the VM job never started:\n{stderr}");
    let line = listing.lines().find(|l| l.starts_with("vm-")).unwrap_or_else(|| panic!("no machine listed:\n{listing}"));
    assert!(line.ends_with("running"), "{listing}");
    let machine = line.split_whitespace().next().unwrap().to_owned();
    assert_eq!(exit.status.code(), Some(0), "{stderr}");
    let task = fake.task(fake.job_task(job).unwrap()).unwrap();
    assert_eq!(task.status, Status::Failure, "interrupted by the shutdown, as Forgejo's runner reports it: {stderr}");
    assert_nothing_left_of(&machine, &store);
}

/// A runner Forgejo refuses (its credentials are unknown) stops the service: exit 4
/// (the forge refused the runner) with the runner named, after an orderly shutdown.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_runner_stops_serve_with_exit_4() {
    let fake = FakeForgejo::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runner_file = dir.path().join(".runner");
    let labels = [LabelSpec::parse("host:host").unwrap()];
    let file = solstice_forgejo::RunnerFile::new(
        7,
        "00000000-0000-4000-8000-000000000007".into(),
        "impostor".into(),
        Secret::new("not-a-registered-token".to_owned()),
        fake.url().to_owned(),
        &labels,
    );
    file.save(&runner_file).unwrap();
    let config = dir.path().join("solstice.toml");
    let state = dir.path().join("state.db");
    std::fs::write(
        &config,
        format!("[store]\nurl = \"sqlite://{}\"\n[metrics]\nlisten = \"\"\n[forgejo]\nfile = {runner_file:?}\n", state.display()),
    )
    .unwrap();
    let serve = Serve::start(&config);
    let exit = tokio::time::timeout(Duration::from_secs(60), serve.wait()).await.expect("serve stopped by itself");
    let stderr = String::from_utf8_lossy(&exit.stderr);
    assert_eq!(exit.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("the forgejo runner failed"), "{stderr}");
    assert!(!stderr.contains("not-a-registered-token"), "the token leaked: {stderr}");
}

/// Runs one failing host job that opts in to debug SSH under serve with `extra` in its
/// file, then stops serve: the job's log, serve's stderr and its exit code.
async fn opted_in_host_job(extra: &str) -> (Vec<String>, String, Option<i32>) {
    let fake = FakeForgejo::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = setup(&fake, dir.path(), "host:host", port, extra).await;
    let serve = Serve::start(&config);
    let job = fake.enqueue(JobSpec::new(
        "debug",
        "on: push\njobs:\n  debug:\n    runs-on: host\n    env:\n      SOLSTICE_DEBUG_SSH: true\n    steps:\n      - run: exit 1\n",
    ));
    let task = fake.wait_job_done(job, Duration::from_secs(60)).await;
    serve.term();
    let exit = serve.wait().await;
    let stderr = String::from_utf8_lossy(&exit.stderr).into_owned();
    let task = task.unwrap_or_else(|| panic!("the job was not reported:\n{stderr}"));
    assert_eq!(task.status, Status::Failure, "{stderr}");
    (fake.log(task.id), stderr, exit.status.code())
}

/// `[debug_ssh]` in `solstice.toml`: serve says debug SSH is on, and the engine has the
/// keeper: a failed host job that opted in is told its machine is the host, not that
/// this orchestrator offers no debug SSH. SIGTERM still stops serve cleanly.
#[tokio::test(flavor = "multi_thread")]
async fn serve_with_debug_ssh_wires_the_keeper_into_the_engine() {
    let debug_port = free_port();
    let extra = format!("[debug_ssh]\nlisten = \"127.0.0.1\"\nfirst_port = {debug_port}\nlast_port = {debug_port}\nttl = 60\n");
    let (log, stderr, code) = opted_in_host_job(&extra).await;
    assert!(log.iter().any(|l| l.contains("Debug SSH: this job ran directly on the host")), "{log:#?}");
    assert!(!log.iter().any(|l| l.contains("does not offer debug SSH")), "{log:#?}");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("debug SSH into failed jobs that opt in is on"), "{stderr}");
    assert!(stderr.contains("listen=127.0.0.1"), "{stderr}");
}

/// Without `[debug_ssh]` an opted-in job is told this orchestrator does not offer it.
#[tokio::test(flavor = "multi_thread")]
async fn serve_without_debug_ssh_tells_an_opted_in_job_so() {
    let (log, stderr, code) = opted_in_host_job("").await;
    assert!(log.iter().any(|l| l.contains("does not offer debug SSH")), "{log:#?}");
    assert!(!stderr.contains("debug SSH into failed jobs that opt in is on"), "{stderr}");
    assert_eq!(code, Some(0), "{stderr}");
}

/// A public key for the fake forge to publish (nobody holds the private half).
const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGaWDkPZa4NE3U9uJmQTeWs2uaUXGpOJ1rVfESVmhxNk tester@laptop";

/// A failed VM job that opted in keeps its machine behind the configured port, which
/// answers SSH; SIGTERM ends serve without waiting out the keep time, and the kept
/// machine goes with it.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_vm_job_that_opted_in_is_kept_for_debug_ssh_until_serve_stops() {
    let fake = FakeForgejo::start().await.unwrap();
    fake.set_user_keys("tester", &[ED25519]);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let debug_port = free_port();
    let extra = format!(
        "shutdown_grace = 5\n[debug_ssh]\nlisten = \"127.0.0.1\"\nhost = \"debug.example.org\"\nfirst_port = {debug_port}\nlast_port = {debug_port}\nttl = 600\n"
    );
    let config = setup(&fake, dir.path(), "tiny:vm:tiny-linux", port, &extra).await;
    let serve = Serve::start(&config);
    let job = fake.enqueue(
        JobSpec::new(
            "vm",
            "on: push\njobs:\n  vm:\n    runs-on: tiny\n    env:\n      SOLSTICE_DEBUG_SSH: true\n    steps:\n      - run: echo \"inside $(uname -n)\"; exit 1\n",
        )
        .runs_on(["tiny"]),
    );
    let task = fake.wait_job_done(job, Duration::from_secs(240)).await;
    let banner = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", debug_port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .await
    .unwrap();
    let started = Instant::now();
    serve.term();
    let exit = serve.wait().await;
    let stderr = String::from_utf8_lossy(&exit.stderr);
    let task = task.unwrap_or_else(|| panic!("the VM job was not reported:\n{stderr}"));
    assert_eq!(task.status, Status::Failure, "{stderr}");
    let log = fake.log(task.id);
    assert!(log.iter().any(|l| l.contains("its machine is kept for 10 min")), "{log:#?}");
    let command = format!("ssh -p {debug_port} ");
    assert!(log.iter().any(|l| l.starts_with(&command) && l.ends_with("@debug.example.org")), "{log:#?}");
    let banner = banner.unwrap_or_else(|| panic!("nothing answered on the debug port:\n{stderr}"));
    assert!(banner.starts_with("SSH-2.0-"), "{banner:?}");
    assert_eq!(exit.status.code(), Some(0), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(60), "serve waited for the kept machine:\n{stderr}");
    let machine = log.iter().find_map(|l| l.strip_prefix("inside ")).unwrap_or_else(|| panic!("{log:#?}")).to_owned();
    assert!(machine.starts_with("vm-"), "{machine}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", debug_port)).is_err(), "the debug port is still open");
    // Removed in order by the keeper's shutdown, not just killed with the process: no
    // process, no record, no files.
    assert_nothing_left_of(&machine, &format!("sqlite://{}", dir.path().join("state.db").display()));
}

/// Failed Forgejo calls show in serve's `/metrics` (`solstice_forge_api_errors_total`),
/// and the runner carries on after them.
#[tokio::test(flavor = "multi_thread")]
async fn failed_forgejo_calls_are_counted_in_the_metrics() {
    use solstice_forgejo::{ConnectCode, Procedure};

    let fake = FakeForgejo::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = setup(&fake, dir.path(), "host:host", port, "").await;
    fake.fail_next(Procedure::FetchTask, 3, ConnectCode::Unavailable);
    let serve = Serve::start(&config);
    wait_for_metrics(port).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut metrics = get(port, "/metrics");
    while !metrics.contains("solstice_forge_api_errors_total 3\n") {
        assert!(Instant::now() < deadline, "the failed fetches were not counted:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        metrics = get(port, "/metrics");
    }
    let job = fake.enqueue(JobSpec::new("after", "on: push\njobs:\n  after:\n    runs-on: host\n    steps:\n      - run: echo still here\n"));
    let task = fake.wait_job_done(job, Duration::from_secs(60)).await;
    let metrics = get(port, "/metrics");
    serve.term();
    let exit = serve.wait().await;
    let stderr = String::from_utf8_lossy(&exit.stderr);
    let task = task.unwrap_or_else(|| panic!("the job after the errors was not reported:\n{stderr}"));
    assert_eq!(task.status, Status::Success, "{stderr}");
    assert!(metrics.contains("solstice_forge_api_errors_total 3\n"), "no further errors expected:\n{metrics}");
    assert_eq!(exit.status.code(), Some(0), "{stderr}");
}
