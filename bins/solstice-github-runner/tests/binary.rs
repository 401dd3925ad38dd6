//! The binary against the fake GitHub: register, run one ephemeral job, and prove that
//! no token or private key reaches the logs or any file besides the credential files.

use std::process::Stdio;
use std::time::Duration;

use solstice_github_fake::{Delivery, FakeConfig, FakeGithub, FakeJob};

const BIN: &str = env!("CARGO_BIN_EXE_solstice-github-runner");

async fn run(args: &[&str], dir: &std::path::Path, token: Option<&str>) -> (bool, String) {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .env("SOLSTICE_GITHUB_DIR", dir)
        .env("SOLSTICE_LOG_LEVEL", "trace")
        .env_remove("SOLSTICE_CONFIG")
        // No metrics endpoint: the default port would be shared by the tests running at once.
        .env("SOLSTICE_METRICS_LISTEN", "")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(token) = token {
        cmd.env("SOLSTICE_GITHUB_TOKEN", token);
    }
    let child = cmd.spawn().expect("spawn");
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output()).await.expect("in time").expect("output");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn files_under(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap_or_default()));
        }
    }
    out
}

#[tokio::test]
async fn the_runner_never_logs_or_persists_its_tokens_or_key() {
    leak_check(FakeConfig::default(), Delivery::Pool, false).await;
}

/// The same through the runner-admin registration and a broker job with its live
/// console websocket.
#[tokio::test]
async fn the_runner_admin_path_never_logs_or_persists_tokens_either() {
    // Registered ephemeral: the runner-admin API takes no runner credentials, so GitHub
    // itself deletes the runner after its job.
    leak_check(FakeConfig { use_v2_flow: true, ..Default::default() }, Delivery::Broker, true).await;
}

async fn leak_check(config: FakeConfig, delivery: Delivery, register_ephemeral: bool) {
    let fake = FakeGithub::start(config).await.expect("fake");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = fake.repo_url();
    let mut args = vec!["register", "--url", &url, "--name", "bin-1", "--labels", "host"];
    if register_ephemeral {
        args.push("--ephemeral");
    }
    let (ok, register_log) = run(&args, dir.path(), Some("AREGTOKEN")).await;
    assert!(ok, "register failed:\n{register_log}");
    // The key material, to search for afterwards.
    let key: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(".credentials_rsaparams")).expect("key file")).expect("json");
    let private: Vec<String> = ["d", "p", "q", "dp", "dq", "inverseQ"]
        .iter()
        .map(|k| key[*k].as_str().expect("component").to_owned())
        .collect();
    #[cfg(unix)]
    for name in [".runner", ".credentials", ".credentials_rsaparams"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(name)).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }

    let job = FakeJob::new("leak").labels(&["host"]).delivery(delivery).run("echo job ran");
    let github_token = job.github_token().to_owned();
    let id = fake.enqueue(job).await;
    let (ok, run_log) = run(&["run", "--ephemeral"], dir.path(), None).await;
    assert!(ok, "run failed:\n{run_log}");
    let view = fake.job(&id).await.expect("job");
    assert_eq!(view.result.as_deref(), Some("succeeded"), "{run_log}");
    assert!(view.all_logs().contains("job ran"));
    assert!(fake.agents().await.is_empty(), "the ephemeral registration is gone");
    assert!(!dir.path().join(".credentials_rsaparams").exists(), "credentials removed after the ephemeral job");

    let mut secrets = fake.issued_tokens().await;
    assert!(secrets.len() >= 3, "tenant, runner and job tokens were issued: {secrets:?}");
    secrets.push("AREGTOKEN".to_owned());
    secrets.push(github_token);
    secrets.extend(private);
    let logs = register_log + &run_log;
    assert!(logs.contains("TRACE") || logs.contains("DEBUG"), "the logs were verbose");
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a secret leaked into the logs");
    }
    for (path, bytes) in files_under(dir.path()) {
        let text = String::from_utf8_lossy(&bytes);
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "a secret was persisted in {path}");
        }
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// `GET path` over HTTP/1.0: the status code and the body.
async fn get(port: u16, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).await.expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status code");
    (status, body.to_owned())
}

/// Starts `run` (with `options` before it) on the runner in `dir`, serving `/metrics`
/// on `port`; killed when dropped.
fn spawn_run(dir: &std::path::Path, options: &[&str], port: u16) -> tokio::process::Child {
    tokio::process::Command::new(BIN)
        .args(options)
        .arg("run")
        .env("SOLSTICE_GITHUB_DIR", dir)
        .env_remove("SOLSTICE_CONFIG")
        .env("SOLSTICE_METRICS_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn")
}

/// `run` serves `/metrics` (the in-process engine's, as Prometheus text) and `/healthz`
/// on `[metrics] listen`, here set through SOLSTICE_METRICS_LISTEN.
#[tokio::test]
async fn run_serves_the_engine_metrics_and_health() {
    let fake = FakeGithub::start(FakeConfig::default()).await.expect("fake");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = fake.repo_url();
    let (ok, log) = run(&["register", "--url", &url, "--name", "metrics-1", "--labels", "host"], dir.path(), Some("AREGTOKEN")).await;
    assert!(ok, "register failed:\n{log}");
    let id = fake.enqueue(FakeJob::new("metrics").labels(&["host"]).run("echo counted")).await;
    let port = free_port();
    let mut child = spawn_run(dir.path(), &[], port);
    let view = fake.wait_for(&id, Duration::from_secs(60), |j| j.result.is_some()).await.expect("job");
    assert_eq!(view.result.as_deref(), Some("succeeded"), "{}", view.all_logs());

    // The engine may count the job a moment after GitHub got its result.
    let success = "solstice_jobs_finished_total{result=\"success\"}";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let (status, body) = get(port, "/metrics").await;
        assert_eq!(status, 200, "{body}");
        let metrics = solstice_service::parse_metrics_text(&body).unwrap_or_else(|e| panic!("{e}:\n{body}"));
        if metrics.get(success) == Some(&1.0) || tokio::time::Instant::now() > deadline {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(metrics.get(success), Some(&1.0), "{metrics:?}");
    assert_eq!(metrics.get("solstice_jobs_finished_total{result=\"failure\"}"), Some(&0.0), "{metrics:?}");
    assert_eq!(metrics.get("solstice_jobs_running"), Some(&0.0), "{metrics:?}");
    assert_eq!(get(port, "/healthz").await, (200, "ok\n".to_owned()));
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;
}

/// A runner named `name`, registered with a fake GitHub for a label of its own, whose
/// configuration hands its jobs to RabbitMQ (`[engine] enabled = false`): the fake, the runner's
/// directory, the configuration's path and the label.
async fn register_for_rabbitmq(name: &str) -> (FakeGithub, tempfile::TempDir, String, String) {
    let amqp = std::env::var("SOLSTICE_TEST_AMQP_URL").unwrap_or_else(|_| {
        panic!("SOLSTICE_TEST_AMQP_URL is not set: start RabbitMQ with `eval \"$(.ci/services.sh)\"` (scripts/test does)")
    });
    let label = format!("gh-{}", uuid::Uuid::new_v4().simple());
    let fake = FakeGithub::start(FakeConfig::default()).await.expect("fake");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("runner.toml");
    std::fs::write(&config, format!("[github]\nlabels = [{label:?}]\n[queue]\nurl = {amqp:?}\n[engine]\nenabled = false\n")).expect("config");
    let config = config.to_string_lossy().into_owned();
    let url = fake.repo_url();
    let (ok, log) = run(&["--config", &config, "register", "--url", &url, "--name", name, "--labels", &label], dir.path(), Some("AREGTOKEN")).await;
    assert!(ok, "register failed:\n{log}");
    (fake, dir, config, label)
}

/// With its engine off (jobs go to orchestrators through RabbitMQ), `run` still serves
/// `/metrics` and `/healthz`: the forge's errors are counted, the job metrics stay 0
/// (operator guide, "Metrics"); SIGTERM stops it cleanly.
#[tokio::test]
async fn with_rabbitmq_and_the_engine_off_run_serves_metrics_and_health() {
    let (_fake, dir, config, _label) = register_for_rabbitmq("mq-metrics").await;
    let port = free_port();
    let mut child = spawn_run(dir.path(), &["--config", &config], port);
    // Until the endpoint is up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(tokio::time::Instant::now() < deadline, "no /metrics on port {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = get(port, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    let metrics = solstice_service::parse_metrics_text(&body).unwrap_or_else(|e| panic!("{e}:\n{body}"));
    assert_eq!(metrics.get("solstice_forge_api_errors_total"), Some(&0.0), "{metrics:?}");
    assert_eq!(metrics.get("solstice_jobs_running"), Some(&0.0), "{metrics:?}");
    assert_eq!(metrics.get("solstice_jobs_finished_total{result=\"success\"}"), Some(&0.0), "{metrics:?}");
    assert_eq!(get(port, "/healthz").await, (200, "ok\n".to_owned()));
    let pid = child.id().expect("pid").to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("stops after SIGTERM").expect("wait");
    assert!(status.success(), "{status:?}");
}

#[test]
fn help_lists_the_commands_and_exit_codes() {
    let out = std::process::Command::new(BIN).arg("--help").output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["register", "remove", "run", "Exit codes"] {
        assert!(text.contains(word), "{word} missing from --help:\n{text}");
    }
}

/// A label listed in `vm_images` runs its job in a fresh QEMU VM of the tiny test guest.
#[tokio::test]
async fn a_vm_label_runs_the_job_in_a_fresh_vm() {
    let fake = FakeGithub::start(FakeConfig::default()).await.expect("fake");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("runner.toml");
    std::fs::write(&config, "[github]\nlabels = [\"tiny\"]\n\n[engine]\nvm_images = { tiny = \"tiny-linux\" }\n").expect("config");
    let config = config.to_string_lossy().into_owned();
    let url = fake.repo_url();
    let (ok, log) = run(&["--config", &config, "register", "--url", &url, "--name", "vm-1", "--labels", "tiny"], dir.path(), Some("AREGTOKEN")).await;
    assert!(ok, "register failed:\n{log}");
    let id = fake.enqueue(FakeJob::new("vm").labels(&["tiny"]).run("echo \"inside $(uname -n)\"")).await;
    let (ok, run_log) = run(&["--config", &config, "run", "--ephemeral"], dir.path(), None).await;
    assert!(ok, "run failed:\n{run_log}");
    let view = fake.job(&id).await.expect("job");
    let logs = view.all_logs();
    assert_eq!(view.result.as_deref(), Some("succeeded"), "{logs}");
    assert!(logs.contains("inside vm-"), "the step did not run in a VM:\n{logs}");
}

/// A VM job's `runner.os`/`runner.arch` and `RUNNER_*` are what the image catalog
/// declares for its image (FreeBSD/ARM64 here, on the tiny Linux guest).
#[tokio::test]
async fn a_vm_job_reports_the_os_and_arch_its_catalog_declares() {
    let fake = FakeGithub::start(FakeConfig::default()).await.expect("fake");
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = solstice_e2e::catalog_declaring_freebsd(dir.path(), "fake-bsd");
    let config = dir.path().join("runner.toml");
    std::fs::write(&config, format!("[github]\nlabels = [\"bsd\"]\n\n[engine]\nimage_catalog = {catalog:?}\n\n[engine.vm_images]\nbsd = \"fake-bsd\"\n")).expect("config");
    let config = config.to_string_lossy().into_owned();
    let url = fake.repo_url();
    let (ok, log) = run(&["--config", &config, "register", "--url", &url, "--name", "bsd-1", "--labels", "bsd"], dir.path(), Some("AREGTOKEN")).await;
    assert!(ok, "register failed:\n{log}");
    let job = FakeJob::new("vm")
        .labels(&["bsd"])
        .run_expr("format('echo \"os={0}/{1} env=$RUNNER_OS/$RUNNER_ARCH kernel=$(uname -s)\"', runner.os, runner.arch)")
        .run_named("linux", "Linux only", "echo linux-only-step", Some("success() && runner.os == 'Linux'"));
    let id = fake.enqueue(job).await;
    let (ok, run_log) = run(&["--config", &config, "run", "--ephemeral"], dir.path(), None).await;
    assert!(ok, "run failed:\n{run_log}");
    let view = fake.job(&id).await.expect("job");
    let logs = view.all_logs();
    assert_eq!(view.result.as_deref(), Some("succeeded"), "{logs}");
    assert!(logs.lines().any(|l| l.ends_with(" os=FreeBSD/ARM64 env=FreeBSD/ARM64 kernel=Linux")), "{logs}");
    assert!(!logs.contains("linux-only-step"), "{logs}");
}

/// Scale-out mode: the runner only talks to GitHub (`[engine] enabled = false`), the job travels
/// through a real RabbitMQ to an orchestrator engine elsewhere (here in the test), and
/// its log and result come back the same way.
#[tokio::test(flavor = "multi_thread")]
async fn with_rabbitmq_jobs_go_to_a_separate_orchestrator_and_back() {
    use solstice_core::{AmqpQueue, Engine, HostExecutor, HostHypervisor, JobQueue};
    use std::sync::Arc;
    use tokio_util::sync::CancellationToken;

    let (fake, dir, config, label) = register_for_rabbitmq("mq-1").await;
    let amqp = std::env::var("SOLSTICE_TEST_AMQP_URL").expect("checked when registering");

    let queue: Arc<dyn JobQueue> = Arc::new(AmqpQueue::connect(&amqp).await.expect("RabbitMQ"));
    let engine = Engine::builder()
        .hypervisor(HostHypervisor::with_labels(vec![label.clone()]))
        .executor(HostExecutor::new())
        .name("test-orchestrator")
        .build()
        .expect("engine");
    let metrics = engine.metrics().clone();
    let stop = CancellationToken::new();
    let orchestrator = {
        let (queue, stop, labels) = (queue.clone(), stop.clone(), vec![label.clone()]);
        tokio::spawn(async move { engine.serve(queue, &labels, stop, CancellationToken::new()).await })
    };
    let id = fake.enqueue(FakeJob::new("mq").labels(&[label.as_str()]).run("echo \"ran by $SOLSTICE_MACHINE\"")).await;
    let (ok, run_log) = run(&["--config", &config, "run", "--ephemeral"], dir.path(), None).await;
    stop.cancel();
    orchestrator.await.expect("join").expect("serve");
    assert!(ok, "run failed:\n{run_log}");
    let view = fake.job(&id).await.expect("job");
    let logs = view.all_logs();
    assert_eq!(view.result.as_deref(), Some("succeeded"), "{logs}");
    assert!(logs.contains("ran by host-"), "{logs}");
    assert_eq!(metrics.finished(solstice_core::JobResult::Success), 1, "the job did not run on the separate orchestrator");
}

/// A runner killed with SIGKILL in the middle of a job leaves a record of it (mode 0600,
/// no tokens); the next start completes that job as failed with a log that says why,
/// then serves jobs as usual.
#[tokio::test]
async fn a_job_left_by_a_killed_runner_is_completed_as_failed_on_restart() {
    let (fake, id) = crash_and_restart(true).await;
    let view = fake.job(&id).await.expect("job");
    let record = view.records.get(&id).expect("job record");
    assert_eq!(record["result"], "failed");
    assert!(record["issues"][0]["message"].as_str().is_some_and(|m| m.contains("runner stopped while this job was running")), "{record}");
    assert!(view.all_logs().contains("##[error]The runner stopped while this job was running"), "{:?}", view.logs);
}

/// A service whose plan routes take only job tokens: the job request is finished on the
/// pool with the runner's token instead.
#[tokio::test]
async fn without_plan_access_the_left_job_request_is_finished_as_failed() {
    let (fake, id) = crash_and_restart(false).await;
    let view = fake.job(&id).await.expect("job");
    assert!(!view.all_logs().contains("runner stopped"), "no plan access, no log of it: {:?}", view.logs);
    let requests = fake.requests().await;
    assert!(requests.iter().any(|r| r.method == "PATCH" && r.path.contains("/jobrequests/")), "finished through the job request");
}

/// Registers, starts `run`, SIGKILLs it mid-job, checks the record it left, restarts it
/// (`run --ephemeral`, with a second job to take) and checks that the first job ended
/// failed and the second ran. Returns the fake and the first job's id.
async fn crash_and_restart(plan_routes_take_runner_tokens: bool) -> (FakeGithub, String) {
    let config = FakeConfig { session_timeout: Duration::from_secs(2), plan_routes_take_runner_tokens, ..Default::default() };
    let fake = FakeGithub::start(config).await.expect("fake");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = fake.repo_url();
    let (ok, log) = run(&["register", "--url", &url, "--name", "crash-1", "--labels", "host"], dir.path(), Some("AREGTOKEN")).await;
    assert!(ok, "register failed:\n{log}");
    let job = FakeJob::new("crash").labels(&["host"]).run("echo started\nsleep 120");
    let github_token = job.github_token().to_owned();
    let id = fake.enqueue(job).await;

    let mut child = tokio::process::Command::new(BIN)
        .args(["run"])
        .env("SOLSTICE_GITHUB_DIR", dir.path())
        .env_remove("SOLSTICE_CONFIG")
        // No metrics endpoint: the default port would be shared by the tests running at once.
        .env("SOLSTICE_METRICS_LISTEN", "")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let running = fake.wait_for(&id, Duration::from_secs(60), |j| j.feed.values().flatten().any(|l| l == "started")).await.expect("job");
    assert_eq!(running.state, "assigned");
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;

    // The record: one file, mode 0600, and no token or job secret in it.
    let records: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".job-"))
        .collect();
    assert_eq!(records.len(), 1, "one job record");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(records[0].metadata().expect("stat").permissions().mode() & 0o777, 0o600);
    }
    let text = std::fs::read_to_string(records[0].path()).expect("record");
    assert!(text.contains(&id), "{text}");
    let mut secrets = fake.issued_tokens().await;
    secrets.push(github_token);
    for secret in &secrets {
        assert!(!text.contains(secret.as_str()), "a token was persisted in the job record");
    }
    assert_eq!(fake.job(&id).await.expect("job").state, "assigned", "GitHub still thinks the job runs");

    // Restart once the dead process's session expired (2 s after its last poll, which
    // may have been held open up to the 1 s poll window); a second job shows the runner
    // serves as usual afterwards.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let next = fake.enqueue(FakeJob::new("after").labels(&["host"]).run("echo after restart")).await;
    let (ok, run_log) = run(&["run", "--ephemeral"], dir.path(), None).await;
    assert!(ok, "run failed:\n{run_log}");
    let view = fake.job(&id).await.expect("job");
    assert_eq!(view.state, "completed");
    assert_eq!(view.result.as_deref(), Some("failed"), "{run_log}");
    assert_eq!(fake.job(&next).await.expect("second job").result.as_deref(), Some("succeeded"));
    assert!(!std::fs::read_dir(dir.path()).expect("dir").flatten().any(|e| e.file_name().to_string_lossy().starts_with(".job-")), "the record is gone");
    (fake, id)
}

/// The broker path after a crash: the run service documents the job's own token for
/// `completejob`, and that token died with the process. The restarted runner tries
/// with its OAuth token; the fake, modelled on that documentation, refuses, so the
/// runner gives up on the job (an error in its log) instead of retrying forever, and
/// the job stays with GitHub to time out. This pins down the known limit.
#[tokio::test]
async fn a_broker_job_left_by_a_killed_runner_is_tried_once_then_given_up() {
    let fake = FakeGithub::start(FakeConfig { session_timeout: Duration::from_secs(2), ..Default::default() }).await.expect("fake");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = fake.repo_url();
    let (ok, log) = run(&["register", "--url", &url, "--name", "crash-2", "--labels", "host"], dir.path(), Some("AREGTOKEN")).await;
    assert!(ok, "register failed:\n{log}");
    let id = fake.enqueue(FakeJob::new("crash").labels(&["host"]).delivery(Delivery::Broker).run("echo started\nsleep 120")).await;
    let spawn = || {
        tokio::process::Command::new(BIN)
            .args(["run"])
            .env("SOLSTICE_GITHUB_DIR", dir.path())
            .env_remove("SOLSTICE_CONFIG")
        // No metrics endpoint: the default port would be shared by the tests running at once.
        .env("SOLSTICE_METRICS_LISTEN", "")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn")
    };
    let mut child = spawn();
    fake.wait_for(&id, Duration::from_secs(60), |j| j.feed.values().flatten().any(|l| l == "started")).await.expect("job");
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;
    let record = || std::fs::read_dir(dir.path()).expect("dir").flatten().any(|e| e.file_name().to_string_lossy().starts_with(".job-"));
    assert!(record(), "the job was recorded");

    tokio::time::sleep(Duration::from_millis(3500)).await;
    let mut child = spawn();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while record() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.start_kill().expect("SIGKILL");
    let out = child.wait_with_output().await.expect("output");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!record(), "the record is dropped after the refusal:\n{log}");
    assert!(log.contains("GitHub refused to complete the unfinished job"), "{log}");
    let requests = fake.requests().await;
    assert_eq!(requests.iter().filter(|r| r.method == "POST" && r.path == "/run/completejob").count(), 2, "one try, and one after a fresh token");
    let view = fake.job(&id).await.expect("job");
    assert_eq!((view.state.as_str(), view.result.as_deref()), ("assigned", None), "left for GitHub to time out");
}

fn signal(child: &tokio::process::Child, name: &str) {
    let pid = child.id().expect("pid").to_string();
    assert!(std::process::Command::new("kill").args([name, &pid]).status().expect("kill").success());
}

/// The stop behaviour every service shares (operator guide, "Stopping and upgrading"):
/// a job running at SIGTERM finishes and is reported, and no new job is taken after it.
#[tokio::test]
async fn a_job_running_at_sigterm_finishes_and_no_new_job_is_taken() {
    let fake = FakeGithub::start(FakeConfig::default()).await.expect("fake");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = fake.repo_url();
    let (ok, log) = run(&["register", "--url", &url, "--name", "stop-1", "--labels", "host"], dir.path(), Some("AREGTOKEN")).await;
    assert!(ok, "register failed:\n{log}");
    let first = fake.enqueue(FakeJob::new("first").labels(&["host"]).run("echo started; sleep 3; echo finished after sigterm")).await;
    let mut child = spawn_run(dir.path(), &[], free_port());
    fake.wait_for(&first, Duration::from_secs(60), |j| j.all_logs().contains("started")).await.expect("the job starts");
    signal(&child, "-TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = fake.enqueue(FakeJob::new("second").labels(&["host"]).run("echo second")).await;
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await.expect("stops").expect("wait");
    assert!(status.success(), "{status:?}");
    let view = fake.job(&first).await.expect("job");
    assert_eq!(view.result.as_deref(), Some("succeeded"), "{}", view.all_logs());
    assert!(view.all_logs().contains("finished after sigterm"), "{}", view.all_logs());
    let second = fake.job(&second).await.expect("job");
    assert_eq!(second.result, None, "no job is taken after the first signal: {}", second.all_logs());
}

/// A second signal cancels the running job, and it is reported as GitHub's runner
/// reports a job its shutdown interrupted: failed, with its shutdown message.
#[tokio::test]
async fn a_second_signal_cancels_the_running_job_and_it_is_reported_as_github_does() {
    let fake = FakeGithub::start(FakeConfig::default()).await.expect("fake");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = fake.repo_url();
    let (ok, log) = run(&["register", "--url", &url, "--name", "stop-2", "--labels", "host"], dir.path(), Some("AREGTOKEN")).await;
    assert!(ok, "register failed:\n{log}");
    let id = fake.enqueue(FakeJob::new("long").labels(&["host"]).run("echo started; sleep 120")).await;
    let mut child = spawn_run(dir.path(), &[], free_port());
    fake.wait_for(&id, Duration::from_secs(60), |j| j.all_logs().contains("started")).await.expect("the job starts");
    signal(&child, "-TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.job(&id).await.expect("job").result, None, "the first signal lets the job run");
    signal(&child, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await.expect("stops").expect("wait");
    assert!(status.success(), "{status:?}");
    let view = fake.job(&id).await.expect("job");
    assert_eq!(view.result.as_deref(), Some("failed"), "{}", view.all_logs());
    assert!(view.all_logs().contains("The runner has received a shutdown signal."), "{}", view.all_logs());
}
