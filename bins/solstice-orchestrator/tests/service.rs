//! The orchestrator binary against a real RabbitMQ: jobs run, /metrics counts them,
//! SIGTERM lets the running job finish before the process exits.
//!
//! Needs RabbitMQ: `eval "$(.ci/services.sh)"` exports SOLSTICE_TEST_AMQP_URL.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use solstice_core::{AmqpQueue, EventConsumer, JobEventKind, JobId, JobQueue, JobRequest, JobResult, StepCommand};

fn amqp_url() -> String {
    std::env::var("SOLSTICE_TEST_AMQP_URL").unwrap_or_else(|_| {
        panic!("SOLSTICE_TEST_AMQP_URL is not set: start RabbitMQ with `eval \"$(.ci/services.sh)\"` (scripts/test does)")
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

fn scrape(port: u16) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to /metrics");
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"), "{response}");
    response.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()
}

struct Orchestrator(Child);

impl Drop for Orchestrator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_run_metrics_count_them_and_sigterm_lets_the_running_job_finish() {
    let url = amqp_url();
    let label = format!("orch-test-{}", uuid::Uuid::new_v4());
    let route = format!("orch-test-source-{}", uuid::Uuid::new_v4());
    let state = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_solstice-orchestrator"))
        .env("SOLSTICE_QUEUE_URL", &url)
        .env("SOLSTICE_STORE_URL", format!("sqlite://{}", state.path().join("state.db").display()))
        .env("SOLSTICE_ENGINE_HOST_LABELS", &label)
        .env("SOLSTICE_METRICS_LISTEN", format!("127.0.0.1:{port}"))
        .env("SOLSTICE_CAPACITY", "2")
        .env("SOLSTICE_LOG_LEVEL", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start solstice-orchestrator");
    let mut orchestrator = Orchestrator(child);

    let queue: Arc<dyn JobQueue> = Arc::new(AmqpQueue::connect(&url).await.expect("RabbitMQ"));
    let mut events = queue.consume_events(&route).await.expect("event consumer");
    let job = |script: &str| {
        let mut job = JobRequest::new("t", vec![label.clone()], vec![StepCommand::run("s", script)]);
        job.origin.source = route.clone();
        job
    };
    let jobs = [job("echo one"), job("echo two"), job("exit 3")];
    for j in &jobs {
        queue.publish_job(j).await.expect("publish");
    }
    let mut results: HashMap<JobId, JobResult> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while results.len() < jobs.len() {
        let delivery = tokio::time::timeout_at(deadline, events.next()).await.expect("jobs finish within 60 s").expect("event");
        if let JobEventKind::JobFinished { result } = delivery.event.kind {
            results.insert(delivery.event.job_id, result);
        }
        delivery.acker.ack().await.expect("ack");
    }
    assert_eq!(results[&jobs[0].id], JobResult::Success);
    assert_eq!(results[&jobs[1].id], JobResult::Success);
    assert_eq!(results[&jobs[2].id], JobResult::Failure);

    let text = tokio::task::spawn_blocking(move || scrape(port)).await.expect("scrape");
    let metrics = solstice_service::parse_metrics_text(&text).unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{text}"));
    assert_eq!(metrics.get("solstice_jobs_finished_total{result=\"success\"}"), Some(&2.0));
    assert_eq!(metrics.get("solstice_jobs_finished_total{result=\"failure\"}"), Some(&1.0));
    assert_eq!(metrics.get("solstice_jobs_running"), Some(&0.0));
    assert_eq!(metrics.get("solstice_job_duration_seconds_count"), Some(&3.0));

    // A job that is running when SIGTERM arrives finishes, then the process exits 0.
    let slow = job("echo started\nsleep 2\necho finished");
    queue.publish_job(&slow).await.expect("publish");
    let mut lines = Vec::new();
    let result = loop {
        let delivery = tokio::time::timeout_at(deadline, events.next()).await.expect("slow job events").expect("event");
        match &delivery.event.kind {
            JobEventKind::Log { line, .. } if line == "started" => {
                let pid = nix::unistd::Pid::from_raw(i32::try_from(orchestrator.0.id()).expect("pid"));
                nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
                lines.push(line.clone());
            }
            JobEventKind::Log { line, .. } => lines.push(line.clone()),
            JobEventKind::JobFinished { result } => {
                let result = *result;
                delivery.acker.ack().await.expect("ack");
                break result;
            }
            _ => {}
        }
        delivery.acker.ack().await.expect("ack");
    };
    assert_eq!(result, JobResult::Success, "{lines:?}");
    assert!(lines.contains(&"finished".to_owned()), "the job was cut short: {lines:?}");
    let status = tokio::task::spawn_blocking(move || {
        let status = orchestrator.0.wait();
        (status, orchestrator)
    });
    let (status, _orchestrator) = tokio::time::timeout(Duration::from_secs(30), status).await.expect("exits after SIGTERM").expect("join");
    assert_eq!(status.expect("wait").code(), Some(0));
}

/// A label in `vm_images` runs its jobs in a fresh QEMU VM of the tiny test guest.
#[tokio::test(flavor = "multi_thread")]
async fn a_vm_label_from_rabbitmq_runs_in_a_fresh_vm() {
    let url = amqp_url();
    let label = format!("orch-vm-{}", uuid::Uuid::new_v4().simple());
    let route = format!("orch-vm-source-{}", uuid::Uuid::new_v4());
    let state = tempfile::tempdir().expect("tempdir");
    let _orchestrator = start_vm_orchestrator(&url, state.path(), &label, &label, 60);

    let queue: Arc<dyn JobQueue> = Arc::new(AmqpQueue::connect(&url).await.expect("RabbitMQ"));
    let mut events = queue.consume_events(&route).await.expect("event consumer");
    let mut job = JobRequest::new("vm", vec![label.clone()], vec![StepCommand::run("where", "echo \"inside $(uname -n)\"")]);
    job.origin.source = route.clone();
    queue.publish_job(&job).await.expect("publish");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    let mut lines = Vec::new();
    let result = loop {
        let kind = next_kind(&mut events, deadline, "the VM job finishes").await;
        match kind {
            JobEventKind::Log { line, .. } => lines.push(line),
            JobEventKind::JobFinished { result } => break result,
            _ => {}
        }
    };
    assert_eq!(result, JobResult::Success, "{lines:#?}");
    assert!(lines.iter().any(|l| l.starts_with("inside vm-")), "the step did not run in a VM: {lines:#?}");
    assert!(lines.iter().any(|l| l.contains("destroyed")), "{lines:#?}");
}

/// Where the orchestrator keeps its machines' files: `run/` in its cache directory.
fn vm_run_dir() -> std::path::PathBuf {
    solstice_config::default_cache_dir().join("run")
}

/// Processes whose command line mentions `machine` (QEMU is started with `-name`).
fn processes_of(machine: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(machine))
                .unwrap_or(false)
        })
        .collect()
}

/// Files in the run directory that belong to `machine`.
fn files_of(machine: &str) -> Vec<String> {
    std::fs::read_dir(vm_run_dir())
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str().map(str::to_owned))
                .filter(|name| name.starts_with(machine))
                .collect()
        })
        .unwrap_or_default()
}

/// The machine id from the engine's "Booting vm-… (" line.
fn booted_machine(line: &str) -> Option<String> {
    line.strip_prefix("Booting ")?.split_whitespace().next().map(str::to_owned)
}

fn start_vm_orchestrator(url: &str, state: &std::path::Path, name: &str, label: &str, grace: u64) -> Orchestrator {
    let config = state.join("orchestrator.toml");
    std::fs::write(&config, format!("name = \"{name}\"\nshutdown_grace = {grace}\n[engine]\nvm_images = {{ {label} = \"tiny-linux\" }}\n"))
        .expect("config");
    let child = Command::new(env!("CARGO_BIN_EXE_solstice-orchestrator"))
        .args(["--config", &config.to_string_lossy()])
        .env("SOLSTICE_QUEUE_URL", url)
        .env("SOLSTICE_STORE_URL", format!("sqlite://{}", state.join("state.db").display()))
        .env("SOLSTICE_METRICS_LISTEN", "")
        .env("SOLSTICE_LOG_LEVEL", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start solstice-orchestrator");
    Orchestrator(child)
}

/// The next event's kind, acknowledged; fails the test at `deadline`.
async fn next_kind(events: &mut Box<dyn EventConsumer>, deadline: tokio::time::Instant, what: &str) -> JobEventKind {
    let delivery = tokio::time::timeout_at(deadline, events.next())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .expect("event");
    delivery.acker.ack().await.expect("ack");
    delivery.event.kind
}

async fn wait_until(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + deadline;
    while !done() {
        assert!(tokio::time::Instant::now() < until, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A job whose step prints `waiting` and sleeps for ten minutes, published to a VM
/// orchestrator of its own: how the machine-reaping and the shutdown tests begin.
struct LongVmJob {
    name: String,
    label: String,
    state: tempfile::TempDir,
    events: Box<dyn EventConsumer>,
    job: JobRequest,
}

impl LongVmJob {
    /// Starts an orchestrator named `kind-…` with `grace` seconds of shutdown grace and
    /// publishes the job to it.
    async fn start(kind: &str, grace: u64) -> (Orchestrator, Self) {
        let url = amqp_url();
        let label = format!("{kind}-{}", uuid::Uuid::new_v4().simple());
        let route = format!("{kind}-source-{}", uuid::Uuid::new_v4());
        let name = format!("{kind}-{}", uuid::Uuid::new_v4().simple());
        let state = tempfile::tempdir().expect("tempdir");
        let orchestrator = start_vm_orchestrator(&url, state.path(), &name, &label, grace);
        let queue: Arc<dyn JobQueue> = Arc::new(AmqpQueue::connect(&url).await.expect("RabbitMQ"));
        let events = queue.consume_events(&route).await.expect("event consumer");
        let mut job = JobRequest::new("long", vec![label.clone()], vec![StepCommand::run("wait", "echo waiting; sleep 600")]);
        job.origin.source = route;
        queue.publish_job(&job).await.expect("publish");
        (orchestrator, Self { name, label, state, events, job })
    }

    /// Waits until the step runs; returns the machine it runs on and the log so far.
    async fn wait_for_the_step(&mut self, deadline: tokio::time::Instant) -> (String, Vec<String>) {
        let mut machine = None;
        let mut lines = Vec::new();
        loop {
            match next_kind(&mut self.events, deadline, "the step starts").await {
                JobEventKind::Log { line, .. } if line == "waiting" => {
                    lines.push(line);
                    break;
                }
                JobEventKind::Log { line, .. } => {
                    machine = machine.or_else(|| booted_machine(&line));
                    lines.push(line);
                }
                JobEventKind::JobFinished { result } => panic!("the job ended early: {result:?}\n{lines:#?}"),
                _ => {}
            }
        }
        (machine.expect("the log names the machine it booted"), lines)
    }

    /// The job's result once it ends, with the lines logged until then; `Accepted`
    /// (the job running again) fails the test.
    async fn wait_for_the_end(&mut self, deadline: tokio::time::Instant, lines: &mut Vec<String>) -> JobResult {
        loop {
            match next_kind(&mut self.events, deadline, "the job ends").await {
                JobEventKind::Log { line, .. } => lines.push(line),
                JobEventKind::JobFinished { result } => return result,
                JobEventKind::Accepted { .. } => panic!("the job must not run again: {lines:#?}"),
                _ => {}
            }
        }
    }

    /// The orchestrator's state store.
    async fn store(&self) -> solstice_core::Store {
        solstice_core::Store::connect(&format!("sqlite://{}", self.state.path().join("state.db").display()))
            .await
            .expect("open the orchestrator's store")
    }
}

/// SIGKILL while a VM runs a job; the restarted orchestrator finds the machine in its
/// store, removes what is left of it and fails the job with a line that says why.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_sigkill_the_restarted_orchestrator_reaps_the_vm_and_the_job_gets_a_final_state() {
    let (mut orchestrator, mut long) = LongVmJob::start("orch-orphan", 60).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    let (machine, _) = long.wait_for_the_step(deadline).await;
    let store = long.store().await;
    let recorded = store.all_vms().await.expect("list");
    assert_eq!(recorded.len(), 1, "the running machine is recorded: {recorded:?}");
    assert_eq!((recorded[0].id.as_str(), recorded[0].owner.as_str()), (machine.as_str(), long.name.as_str()));
    assert!(recorded[0].pid.is_some());
    assert!(!files_of(&machine).is_empty(), "the machine has files in {}", vm_run_dir().display());

    orchestrator.0.kill().expect("SIGKILL");
    let _ = orchestrator.0.wait();
    let _restarted = start_vm_orchestrator(&amqp_url(), long.state.path(), &long.name, &long.label, 60);

    let mut lines = Vec::new();
    let result = long.wait_for_the_end(deadline, &mut lines).await;
    assert_eq!(result, JobResult::Failure);
    assert!(lines.iter().any(|l| l.contains("stopped unexpectedly") && l.contains(&machine)), "{lines:#?}");
    wait_until("the machine's process is gone", Duration::from_secs(15), || processes_of(&machine).is_empty()).await;
    assert!(files_of(&machine).is_empty(), "files left: {:?}", files_of(&machine));
    assert!(store.all_vms().await.expect("list").is_empty(), "the record is gone");
    let record = store.job(long.job.id).await.expect("query").expect("job");
    assert_eq!(record.state, solstice_core::JobState::Finished(JobResult::Failure));
}

/// SIGTERM while a VM job runs longer than the grace period: the job is cancelled and
/// reported, the process exits, and neither QEMU nor a file of the machine is left.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_cancels_a_vm_job_after_the_grace_period_and_leaves_nothing_behind() {
    let (mut orchestrator, mut long) = LongVmJob::start("orch-term", 2).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    let (machine, mut lines) = long.wait_for_the_step(deadline).await;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(orchestrator.0.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let result = long.wait_for_the_end(deadline, &mut lines).await;
    assert_eq!(result, JobResult::Cancelled, "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("destroyed")), "{lines:#?}");
    let status = tokio::task::spawn_blocking(move || {
        let status = orchestrator.0.wait();
        (status, orchestrator)
    });
    let (status, _orchestrator) =
        tokio::time::timeout(Duration::from_secs(60), status).await.expect("exits after SIGTERM").expect("join");
    assert_eq!(status.expect("wait").code(), Some(0));
    assert!(processes_of(&machine).is_empty(), "QEMU of {machine} is still running");
    assert!(files_of(&machine).is_empty(), "files left: {:?}", files_of(&machine));
    assert!(long.store().await.all_vms().await.expect("list").is_empty(), "no machine record is left");
}

/// `--log-format json` (or SOLSTICE_LOG_FORMAT) writes one JSON object per line.
#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_one_object_per_line() {
    let state = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_solstice-orchestrator"))
        .env("SOLSTICE_STORE_URL", format!("sqlite://{}", state.path().join("state.db").display()))
        .env("SOLSTICE_ENGINE_HOST_LABELS", "json-logs")
        .env("SOLSTICE_METRICS_LISTEN", "")
        .env("SOLSTICE_LOG_LEVEL", "info")
        .env("SOLSTICE_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start solstice-orchestrator");
    let stderr = child.stderr.take().expect("stderr");
    let lines = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.expect("read");
            let serving = line.contains("serving jobs");
            lines.push(line);
            if serving {
                break;
            }
        }
        lines
    });
    let lines = tokio::time::timeout(Duration::from_secs(30), lines).await.expect("it starts serving").expect("join");
    let _ = child.kill();
    let _ = child.wait();
    assert!(lines.iter().any(|l| l.contains("serving jobs")), "{lines:#?}");
    for line in &lines {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value.get("level").is_some() && value.get("fields").is_some(), "{line}");
    }
}
