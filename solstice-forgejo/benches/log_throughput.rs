//! Log lines per second from a step's output to the fake Forgejo's stored log, and the
//! process's peak memory while doing it.
//!
//! `cargo bench -p solstice-forgejo --bench log_throughput -- [LINES]` (default 1 000 000).
//! Everything runs in this process: fake Forgejo (logs stored in files, as Forgejo does),
//! ForgejoSource, serve_source, MemoryQueue, Engine with the host executor.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use solstice_core::{Engine, HostExecutor, HostHypervisor, MemoryQueue, Secret};
use solstice_forgejo::{ForgejoClient, ForgejoSource, LabelSpec, Registration, Service};
use solstice_forgejo_fake::{FakeForgejo, JobSpec, Scope, Status};
use tokio_util::sync::CancellationToken;

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn main() {
    let lines: u64 = std::env::args().skip(1).find_map(|a| a.replace('_', "").parse().ok()).unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(bench(lines));
}

async fn bench(lines: u64) {
    let logs = tempfile::tempdir().unwrap();
    let fake = FakeForgejo::builder().log_dir(logs.path()).record_bodies(false).start().await.unwrap();
    let client = ForgejoClient::builder(fake.url()).build().unwrap();
    let registration = Registration {
        name: "bench".into(),
        token: Secret::new(fake.registration_token(Scope::Instance)),
        labels: vec![LabelSpec::parse("host:host").unwrap()],
        ephemeral: false,
    };
    let file = solstice_forgejo::register(&client, &registration, Duration::from_secs(5), &CancellationToken::new()).await.unwrap();
    let source = ForgejoSource::builder(client.with_credentials(file.credentials()))
        .labels(vec!["host".into()])
        .fetch_interval(Duration::from_millis(100))
        .report_interval(Duration::from_millis(500))
        .build()
        .unwrap();
    let engine = Engine::builder().hypervisor(HostHypervisor::new()).executor(HostExecutor::new()).build().unwrap();
    let service = Service {
        source,
        queue: Arc::new(MemoryQueue::new()),
        engine: Some((engine, vec!["host".into()])),
        grace: Duration::from_secs(30),
    };
    let (shutdown, abort) = (CancellationToken::new(), CancellationToken::new());
    let running = tokio::spawn(solstice_forgejo::run_service(service, shutdown.clone(), abort));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let before = peak_rss_mib();
    let payload = format!(
        "on: push\njobs:\n  build:\n    runs-on: host\n    steps:\n      - run: yes 'a build log line of a typical length, with some words in it' | head -n {lines}\n"
    );
    let started = Instant::now();
    let job = fake.enqueue(JobSpec::new("build", &payload));
    let task = fake.wait_job_done(job, Duration::from_secs(3600)).await.expect("the job finished");
    let elapsed = started.elapsed();
    assert_eq!(task.status, Status::Success);
    let step = &task.steps[0];
    assert!(step.log_length >= lines as i64, "stored {} rows of the step", step.log_length);

    println!("log_throughput: {lines} lines in {:.2} s = {:.0} lines/s", elapsed.as_secs_f64(), lines as f64 / elapsed.as_secs_f64());
    println!("log_throughput: stored rows {} (step {}), peak RSS {:.1} MiB (before the job {:.1} MiB)", task.log_rows, step.log_length, peak_rss_mib(), before);
    shutdown.cancel();
    running.await.unwrap().unwrap();
}
