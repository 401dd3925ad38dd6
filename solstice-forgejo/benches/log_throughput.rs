//! Log lines per second from a step's output to the fake Forgejo's stored log, and the
//! process's peak memory while doing it.
//!
//! `cargo bench -p solstice-forgejo --bench log_throughput -- [LINES] [--json FILE]`
//! (default 1 000 000 lines). Everything runs in this process: fake Forgejo (logs stored in
//! files, as Forgejo does), ForgejoSource, serve_source, MemoryQueue, Engine with the host
//! executor. The baseline, in the same run, is the floor under all of that: the same
//! command's output read line by line and written with a timestamp per line to a file by a
//! bare loop. `--json FILE` hands the figures to the harness in `benches/`.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use solstice_bench::Figures;

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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = Figures::path_from_args(args.iter().cloned());
    let lines: u64 = args
        .iter()
        .filter(|a| json.as_deref() != Some(Path::new(a.as_str())))
        .find_map(|a| a.replace('_', "").parse().ok())
        .unwrap_or(1_000_000);
    let figures = Figures::new(json).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(bench(lines, figures));
}

async fn bench(lines: u64, mut figures: Figures) {
    figures.number("lines", lines as f64).unwrap();
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
    figures.number("rss_before_job_mib", before).unwrap();
    let command = format!("yes 'a build log line of a typical length, with some words in it' | head -n {lines}");
    let (bare_lines, bare) = bare_loop(&command, logs.path()).await;
    assert_eq!(bare_lines, lines);
    let bare_rate = lines as f64 / bare.as_secs_f64();
    figures.number("baseline_lines_per_s", bare_rate).unwrap();
    println!("log_throughput: baseline (bare loop to a file): {lines} lines in {:.2} s = {bare_rate:.0} lines/s", bare.as_secs_f64());

    let payload = format!("on: push\njobs:\n  build:\n    runs-on: host\n    steps:\n      - run: {command}\n");
    let started = Instant::now();
    let job = fake.enqueue(JobSpec::new("build", &payload));
    let task = fake.wait_job_done(job, Duration::from_secs(3600)).await.expect("the job finished");
    let elapsed = started.elapsed();
    assert_eq!(task.status, Status::Success);
    let step = &task.steps[0];
    assert!(step.log_length >= lines as i64, "stored {} rows of the step", step.log_length);

    let rate = lines as f64 / elapsed.as_secs_f64();
    figures.number("ours_lines_per_s", rate).unwrap();
    figures.number("peak_rss_mib", peak_rss_mib()).unwrap();
    println!("log_throughput: {lines} lines in {:.2} s = {rate:.0} lines/s ({:.2}x the baseline's time)", elapsed.as_secs_f64(), bare_rate / rate);
    println!("log_throughput: stored rows {} (step {}), peak RSS {:.1} MiB (before the job {:.1} MiB)", task.log_rows, step.log_length, peak_rss_mib(), before);
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

/// The floor: runs `command`, reads its output line by line and writes each line with a
/// timestamp to a file, as the fake stores a log, with no runner, protocol or server in
/// between. Returns the lines and the time taken.
async fn bare_loop(command: &str, dir: &Path) -> (u64, Duration) {
    use tokio::io::AsyncBufReadExt;
    let started = Instant::now();
    let mut child = tokio::process::Command::new("bash").args(["-c", command]).stdout(Stdio::piped()).spawn().unwrap();
    let mut output = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut file = std::io::BufWriter::with_capacity(256 * 1024, std::fs::File::create(dir.join("bare.log")).unwrap());
    let mut count = 0;
    while let Some(line) = output.next_line().await.unwrap() {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        writeln!(file, "{}.{:09} {line}", now.as_secs(), now.subsec_nanos()).unwrap();
        count += 1;
    }
    file.flush().unwrap();
    assert!(child.wait().await.unwrap().success());
    (count, started.elapsed())
}
