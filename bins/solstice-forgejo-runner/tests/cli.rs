//! The binary against the fake Forgejo server.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use solstice_forgejo_fake::{FakeForgejo, JobSpec, Scope, Status};

const BIN: &str = env!("CARGO_BIN_EXE_solstice-forgejo-runner");

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET path` over HTTP/1.0: the status code and the body.
fn get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// The samples of `/metrics` once `series` reads `want`, or the last scrape's after 10 s
/// (the engine may count a job a moment after Forgejo got its result).
async fn metrics_once(port: u16, series: &str, want: f64) -> std::collections::BTreeMap<String, f64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = tokio::task::spawn_blocking(move || get(port, "/metrics")).await.unwrap();
        assert_eq!(status, 200, "{body}");
        let samples = solstice_service::parse_metrics_text(&body).unwrap_or_else(|e| panic!("{e}:\n{body}"));
        if samples.get(series) == Some(&want) || tokio::time::Instant::now() > deadline {
            return samples;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts `daemon` with `config`, serving `/metrics` on `metrics_port` if given; its
/// stderr is piped, for the test to show.
fn spawn_daemon(config: &std::path::Path, metrics_port: Option<u16>) -> std::process::Child {
    let mut command = Command::new(BIN);
    command.args(["--config", config.to_str().unwrap(), "daemon"]).stdout(Stdio::null()).stderr(Stdio::piped());
    if let Some(port) = metrics_port {
        command.env("SOLSTICE_METRICS_LISTEN", format!("127.0.0.1:{port}"));
    }
    command.spawn().unwrap()
}

/// Writes a configuration (`[forgejo]` polling fast, plus `extra` TOML) in `dir` and
/// registers the binary with the fake under `name` and `labels`; returns the
/// configuration's path.
async fn register(fake: &FakeForgejo, dir: &std::path::Path, name: &str, labels: &str, extra: &str) -> std::path::PathBuf {
    let runner_file = dir.join(".runner");
    let config = dir.join("runner.toml");
    std::fs::write(
        &config,
        // No metrics endpoint unless a test asks (SOLSTICE_METRICS_LISTEN): the default
        // port would be shared by the tests running at once.
        format!("[forgejo]\nfile = {runner_file:?}\nfetch_interval = \"100ms\"\nreport_interval = \"100ms\"\n{extra}\n[metrics]\nlisten = \"\"\n"),
    )
    .unwrap();
    let token = fake.registration_token(Scope::Instance);
    let (url, cfg, name, labels) = (fake.url().to_owned(), config.clone(), name.to_owned(), labels.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["--config", cfg.to_str().unwrap(), "register", "--instance", &url, "--name", &name, "--labels", &labels])
            .env("SOLSTICE_FORGEJO_REGISTRATION_TOKEN", token)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    config
}

/// A mistake in the configuration file is reported at its file:line:column, and the
/// runner exits 2 without doing anything.
#[test]
fn a_configuration_mistake_is_reported_where_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("runner.toml");
    std::fs::write(&config, "capacity = 2\n[forgejo]\nfetch_intervall = 5\n").unwrap();
    let out = Command::new(BIN).args(["--config", config.to_str().unwrap(), "daemon"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{}:3:1", config.display())), "{stderr}");
    assert!(stderr.contains("fetch_intervall"), "{stderr}");

    // A bad value from the environment names the variable it came from.
    std::fs::write(&config, "capacity = 2\n").unwrap();
    let out = Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "daemon"])
        .env("SOLSTICE_CAPACITY", "\"two\"")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("environment variable SOLSTICE_CAPACITY: "), "{stderr}");

    // The other forge's section is refused, naming who reads it.
    std::fs::write(&config, "[github]\n").unwrap();
    let out = Command::new(BIN).args(["--config", config.to_str().unwrap(), "daemon"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("[github] is read by solstice-github-runner"), "{stderr}");
}

/// The exit-code table: a bad flag is a usage error (3), `--help` and `--version`
/// succeed and `--help` states the table, a runner that was never registered is
/// invalid input (2).
#[test]
fn exit_codes_follow_the_table() {
    let out = Command::new(BIN).args(["daemon", "--no-such-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Exit codes: 0 ok; 1 a job failed"), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(Command::new(BIN).arg("--version").output().unwrap().status.code(), Some(0));
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("daemon")
        .env("SOLSTICE_FORGEJO_FILE", dir.path().join("missing.runner"))
        .env("SOLSTICE_METRICS_LISTEN", "")
        .env_remove("SOLSTICE_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("forgejo.file: register the runner first"), "{stderr}");
}

#[tokio::test]
async fn an_invalid_registration_token_is_a_clear_error_and_a_nonzero_exit() {
    let fake = FakeForgejo::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = fake.url().to_owned();
    let runner_file = dir.path().join(".runner");
    let file_env = runner_file.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["register", "--instance", &url, "--name", "r1", "--labels", "host:host"])
            .env("SOLSTICE_FORGEJO_REGISTRATION_TOKEN", "bogus-token-4242")
            .env("SOLSTICE_FORGEJO_FILE", file_env.to_str().unwrap())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("runner registration token not found"), "{stderr}");
    assert!(!stderr.contains("bogus-token-4242"), "{stderr}");
    assert!(!runner_file.exists());
}

#[tokio::test]
async fn register_then_daemon_runs_a_job_and_stops_on_sigterm() {
    let fake = FakeForgejo::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = register(&fake, dir.path(), "cli-runner", "host:host", "").await;
    let runner_file = dir.path().join(".runner");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&runner_file).unwrap().permissions().mode() & 0o777, 0o600);
    }

    let port = free_port();
    let daemon = spawn_daemon(&config, Some(port));
    let payload = "on: push\njobs:\n  build:\n    runs-on: host\n    steps:\n      - run: echo from the binary\n";
    let job = fake.enqueue(JobSpec::new("build", payload));
    let task = fake.wait_job_done(job, Duration::from_secs(60)).await;
    // The in-process engine's metrics, served on the configured address.
    let success = "solstice_jobs_finished_total{result=\"success\"}";
    let metrics = metrics_once(port, success, 1.0).await;
    assert_eq!(metrics.get(success), Some(&1.0), "{metrics:?}");
    assert_eq!(metrics.get("solstice_jobs_finished_total{result=\"failure\"}"), Some(&0.0), "{metrics:?}");
    assert_eq!(metrics.get("solstice_jobs_running"), Some(&0.0), "{metrics:?}");
    assert_eq!(metrics.get("solstice_forge_api_errors_total"), Some(&0.0), "{metrics:?}");
    let (status, body) = tokio::task::spawn_blocking(move || get(port, "/healthz")).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let status = Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || daemon.wait_with_output().unwrap()).await.unwrap();
    let task = task.expect("the job ran");
    assert_eq!(task.status, Status::Success);
    assert!(fake.log(task.id).iter().any(|l| l == "from the binary"));
    assert!(exit.status.success(), "{}", String::from_utf8_lossy(&exit.stderr));
    let uuid = fake.runner_uuids().pop().unwrap();
    assert_eq!(fake.runner(&uuid).unwrap().name, "cli-runner");
}

/// A `name:vm:image` label runs the task in a fresh QEMU VM of the tiny test guest:
/// Forgejo gets the guest's output, the boot log and the VM's destruction.
#[tokio::test]
async fn a_vm_label_runs_the_task_in_a_fresh_vm() {
    let fake = FakeForgejo::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = register(&fake, dir.path(), "vm-runner", "tiny:vm:tiny-linux", "").await;
    let daemon = spawn_daemon(&config, None);
    let payload = "on: push\njobs:\n  build:\n    runs-on: tiny\n    steps:\n      - run: echo \"inside $(uname -n)\"\n";
    let job = fake.enqueue(JobSpec::new("build", payload).runs_on(["tiny"]));
    let task = fake.wait_job_done(job, Duration::from_secs(120)).await;
    let _ = Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status();
    let exit = tokio::task::spawn_blocking(move || daemon.wait_with_output().unwrap()).await.unwrap();
    let stderr = String::from_utf8_lossy(&exit.stderr);
    let Some(task) = task else { panic!("the job did not finish; the runner said:\n{stderr}") };
    let log = fake.log(task.id);
    assert_eq!(task.status, Status::Success, "{log:#?}\n{stderr}");
    assert!(log.iter().any(|l| l.starts_with("inside vm-")), "the step did not run in a VM: {log:#?}");
    assert!(log.iter().any(|l| l.contains("answered SSH")), "{log:#?}");
    assert!(log.iter().any(|l| l.contains("destroyed")), "{log:#?}");
}

/// A VM job's `runner.os`/`runner.arch` and `RUNNER_*` are what the image catalog
/// declares for its image (FreeBSD/ARM64 here, on the tiny Linux guest).
#[tokio::test]
async fn a_vm_job_reports_the_os_and_arch_its_catalog_declares() {
    let fake = FakeForgejo::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let catalog = solstice_e2e::catalog_declaring_freebsd(dir.path(), "fake-bsd");
    let extra = format!("\n[engine]\nimage_catalog = {catalog:?}\n");
    let config = register(&fake, dir.path(), "bsd-runner", "bsd:vm:fake-bsd", &extra).await;
    let daemon = spawn_daemon(&config, None);
    let payload = "on: push\njobs:\n  build:\n    runs-on: bsd\n    steps:\n      - run: echo \"os=${{ runner.os }}/${{ runner.arch }} env=$RUNNER_OS/$RUNNER_ARCH kernel=$(uname -s)\"\n";
    let job = fake.enqueue(JobSpec::new("build", payload).runs_on(["bsd"]));
    let task = fake.wait_job_done(job, Duration::from_secs(120)).await;
    let _ = Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status();
    let exit = tokio::task::spawn_blocking(move || daemon.wait_with_output().unwrap()).await.unwrap();
    let stderr = String::from_utf8_lossy(&exit.stderr);
    let Some(task) = task else { panic!("the job did not finish; the runner said:\n{stderr}") };
    let log = fake.log(task.id);
    assert_eq!(task.status, Status::Success, "{log:#?}\n{stderr}");
    assert!(log.iter().any(|l| l == "os=FreeBSD/ARM64 env=FreeBSD/ARM64 kernel=Linux"), "{log:#?}");
}

/// Scale-out mode: the runner only fetches and reports (`[engine] enabled = false`),
/// jobs travel through a real RabbitMQ to an orchestrator elsewhere (here an engine in
/// the test process), and the events come back the same way to Forgejo.
#[tokio::test(flavor = "multi_thread")]
async fn with_rabbitmq_jobs_go_to_a_separate_orchestrator_and_back() {
    use solstice_core::{AmqpQueue, Engine, HostExecutor, HostHypervisor, JobQueue};
    use std::sync::Arc;
    use tokio_util::sync::CancellationToken;

    let amqp = std::env::var("SOLSTICE_TEST_AMQP_URL").unwrap_or_else(|_| {
        panic!("SOLSTICE_TEST_AMQP_URL is not set: start RabbitMQ with `eval \"$(.ci/services.sh)\"` (scripts/test does)")
    });
    // A label of its own, so no other test's orchestrator takes these jobs.
    let label = format!("fj-{}", uuid::Uuid::new_v4().simple());
    let fake = FakeForgejo::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("\n[queue]\nurl = {amqp:?}\n\n[engine]\nenabled = false\n");
    let config = register(&fake, dir.path(), "mq-runner", &format!("{label}:host"), &extra).await;

    let queue: Arc<dyn JobQueue> = Arc::new(AmqpQueue::connect(&amqp).await.expect("RabbitMQ"));
    let engine = Engine::builder()
        .executor(HostExecutor::new())
        .hypervisor(HostHypervisor::with_labels(vec![label.clone()]))
        .name("test-orchestrator")
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let metrics = engine.metrics().clone();
    let orchestrator = {
        let (queue, stop, labels) = (queue.clone(), stop.clone(), vec![label.clone()]);
        tokio::spawn(async move { engine.serve(queue, &labels, stop, CancellationToken::new()).await })
    };
    let port = free_port();
    let daemon = spawn_daemon(&config, Some(port));
    let payload = format!(
        "on: push\njobs:\n  build:\n    runs-on: {label}\n    steps:\n      - run: echo \"ran by $SOLSTICE_MACHINE\"\n      - run: exit 5\n"
    );
    let job = fake.enqueue(JobSpec::new("build", &payload).runs_on([label.as_str()]));
    let task = fake.wait_job_done(job, Duration::from_secs(60)).await;
    // With its engine off, the runner serves /metrics still: the forge's errors count,
    // the job metrics stay 0 (the job ran elsewhere), as docs/operator-guide.md says.
    let samples = metrics_once(port, "solstice_forge_api_errors_total", 0.0).await;
    assert_eq!(samples.get("solstice_forge_api_errors_total"), Some(&0.0), "{samples:?}");
    assert_eq!(samples.get("solstice_jobs_finished_total{result=\"failure\"}"), Some(&0.0), "{samples:?}");
    assert_eq!(samples.get("solstice_jobs_running"), Some(&0.0), "{samples:?}");
    let (status, body) = tokio::task::spawn_blocking(move || get(port, "/healthz")).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let _ = Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status();
    let exit = tokio::task::spawn_blocking(move || daemon.wait_with_output().unwrap()).await.unwrap();
    stop.cancel();
    orchestrator.await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&exit.stderr);
    let Some(task) = task else { panic!("the job did not finish; the runner said:\n{stderr}") };
    let log = fake.log(task.id);
    assert_eq!(task.status, Status::Failure, "{log:#?}\n{stderr}");
    assert!(log.iter().any(|l| l.starts_with("ran by host-")), "{log:#?}");
    assert!(log.iter().any(|l| l.contains("exit code 5")), "{log:#?}");
    assert_eq!(metrics.finished(solstice_core::JobResult::Failure), 1, "the job did not run on the separate orchestrator");
}

fn signal(daemon: &std::process::Child, name: &str) {
    assert!(Command::new("kill").args([name, &daemon.id().to_string()]).status().unwrap().success());
}

/// The stop behaviour every service shares (operator guide, "Stopping and upgrading"):
/// a task running at SIGTERM finishes and is reported, no new task is fetched after it;
/// a second signal cancels the running task, reported as Forgejo's runner reports a
/// task its shutdown interrupted (failed, the unfinished step cancelled).
#[tokio::test]
async fn the_first_sigterm_lets_the_running_task_finish_and_a_second_one_cancels_it() {
    let fake = FakeForgejo::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = register(&fake, dir.path(), "stop-runner", "host:host", "").await;
    // Two tasks at once (a top-level key, so before the file's tables).
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("capacity = 2\n{text}")).unwrap();
    let daemon = spawn_daemon(&config, None);
    let wait_for_line = |job, line: &'static str| {
        let fake = &fake;
        async move {
            fake.wait_until(Duration::from_secs(60), |f| f.job_task(job).is_some_and(|t| f.log(t).iter().any(|l| l == line))).await
        }
    };
    let quick = fake.enqueue(JobSpec::new("quick", "on: push\njobs:\n  quick:\n    runs-on: host\n    steps:\n      - run: echo q-started; sleep 3; echo q-finished\n"));
    let slow = fake.enqueue(JobSpec::new("slow", "on: push\njobs:\n  slow:\n    runs-on: host\n    steps:\n      - run: echo s-started; sleep 120\n"));
    assert!(wait_for_line(quick, "q-started").await && wait_for_line(slow, "s-started").await, "the jobs never started");
    signal(&daemon, "-TERM");
    std::thread::sleep(Duration::from_millis(500));
    let late = fake.enqueue(JobSpec::new("late", "on: push\njobs:\n  late:\n    runs-on: host\n    steps:\n      - run: echo late\n"));
    assert!(wait_for_line(quick, "q-finished").await, "the running job was not let finish");
    signal(&daemon, "-TERM");
    let exit = tokio::task::spawn_blocking(move || daemon.wait_with_output().unwrap()).await.unwrap();
    let stderr = String::from_utf8_lossy(&exit.stderr);
    assert!(exit.status.success(), "{stderr}");
    let quick = fake.task(fake.job_task(quick).unwrap()).unwrap();
    assert_eq!(quick.status, Status::Success, "{stderr}");
    let slow_task = fake.job_task(slow).unwrap();
    assert_eq!(fake.task(slow_task).unwrap().status, Status::Failure, "{stderr}");
    assert!(fake.log(slow_task).iter().any(|l| l == "The runner was stopped before the job ended."), "{:?}", fake.log(slow_task));
    assert!(fake.job_task(late).is_none(), "no task is fetched after the first signal");
}
