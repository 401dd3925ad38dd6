//! The orchestrator binary against a real RabbitMQ: jobs run, /metrics counts them,
//! SIGTERM lets the running job finish before the process exits.
//!
//! Needs RabbitMQ: `eval "$(.ci/services.sh)"` exports SOLSTICE_TEST_AMQP_URL.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use solstice_core::{AmqpQueue, JobEventKind, JobId, JobQueue, JobRequest, JobResult, StepCommand};

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

/// Parses the Prometheus text format into `name{labels}` → value, checking every line.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut values = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.split_whitespace().collect();
            assert!(matches!(words.first(), Some(&"HELP") | Some(&"TYPE")), "bad comment line: {line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in: {line}"));
        values.insert(series.to_owned(), value);
    }
    values
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
        .env("SOLSTICE_HOST_LABELS", &label)
        .env("SOLSTICE_METRICS_LISTEN", format!("127.0.0.1:{port}"))
        .env("SOLSTICE_CAPACITY", "2")
        .env("SOLSTICE_LOG", "info")
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

    let metrics = parse_metrics(&tokio::task::spawn_blocking(move || scrape(port)).await.expect("scrape"));
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
    let config = state.path().join("orchestrator.toml");
    std::fs::write(&config, format!("[vm_images]\n{label} = \"tiny-linux\"\n")).expect("config");
    let child = Command::new(env!("CARGO_BIN_EXE_solstice-orchestrator"))
        .args(["--config", &config.to_string_lossy()])
        .env("SOLSTICE_QUEUE_URL", &url)
        .env("SOLSTICE_STORE_URL", format!("sqlite://{}", state.path().join("state.db").display()))
        .env("SOLSTICE_METRICS_LISTEN", "")
        .env("SOLSTICE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start solstice-orchestrator");
    let _orchestrator = Orchestrator(child);

    let queue: Arc<dyn JobQueue> = Arc::new(AmqpQueue::connect(&url).await.expect("RabbitMQ"));
    let mut events = queue.consume_events(&route).await.expect("event consumer");
    let mut job = JobRequest::new("vm", vec![label.clone()], vec![StepCommand::run("where", "echo \"inside $(uname -n)\"")]);
    job.origin.source = route.clone();
    queue.publish_job(&job).await.expect("publish");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    let mut lines = Vec::new();
    let result = loop {
        let delivery = tokio::time::timeout_at(deadline, events.next()).await.expect("the VM job finishes").expect("event");
        let kind = delivery.event.kind.clone();
        delivery.acker.ack().await.expect("ack");
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
