//! Multi-process tests on one RabbitMQ and one PostgreSQL: a submitter process and
//! orchestrator processes, one of them killed with SIGKILL mid-run; and a broker
//! restart while jobs are queued and running.
//!
//! Needs the services of `.ci/services.sh` (URLs from `SOLSTICE_TEST_AMQP_URL` and
//! `SOLSTICE_TEST_POSTGRES_URL`, defaulting to what that script sets up); fails with a
//! clear message when they do not answer. The broker restart runs
//! `SOLSTICE_TEST_AMQP_RESTART` (default: `rabbitmqctl stop_app` and `start_app`).
//! A failing test keeps its processes' logs in the temporary directory and says where;
//! `SOLSTICE_TEST_KEEP_LOGS=1` keeps them for passing tests too.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use solstice_core::{AmqpQueue, JobId, JobRecord, JobState, Store};
use solstice_scale::{Report, expected_result, plan_job};
use sqlx::Connection;
use tokio::process::{Child, Command};

/// The tests restart the broker; they must not overlap.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const JOBS: usize = 200;
const SLEEP_MS: u64 = 150;
/// The orchestrators' claim lease: short, so that a killed orchestrator's jobs are
/// taken over within seconds, and renewed several times during a long job.
const LEASE_MS: u64 = 3000;

fn amqp_url() -> String {
    std::env::var("SOLSTICE_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/solstice-test".to_owned())
}

fn postgres_url() -> String {
    std::env::var("SOLSTICE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://solstice:solstice@127.0.0.1:5432/solstice_test".to_owned())
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

/// One test's namespace, database and log directory.
struct Env {
    run: String,
    store_url: String,
    database: String,
    store: Store,
    logs: tempfile::TempDir,
}

impl Env {
    async fn new(kind: &str) -> Self {
        let run = format!("{kind}-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        // Fail early and clearly if a service is missing.
        let probe = AmqpQueue::builder(amqp_url()).prefix(&run).connect().await.unwrap_or_else(|e| {
            panic!(
                "RabbitMQ is unreachable at {}: {e:?}. Start it with `eval \"$(.ci/services.sh)\"`.",
                redact(&amqp_url())
            )
        });
        probe.close().await;
        let database = run.replace('-', "_");
        admin(&format!("CREATE DATABASE {database}")).await;
        let base = postgres_url();
        let server = base.rsplit_once('/').map_or(base.as_str(), |(server, _)| server);
        let store_url = format!("{server}/{database}");
        // Migrate once here, before the orchestrators start.
        let store = Store::connect(&store_url).await.expect("open the test database");
        Self { run, store_url, database, store, logs: tempfile::tempdir().expect("log directory") }
    }

    fn log(&self, name: &str) -> PathBuf {
        self.logs.path().join(format!("{name}.log"))
    }

    fn orchestrator(&self, name: &str, capacity: usize) -> Child {
        let log = std::fs::File::create(self.log(name)).expect("log file");
        Command::new(env!("CARGO_BIN_EXE_scale-orchestrator"))
            .args(["--amqp-url", &amqp_url(), "--store-url", &self.store_url, "--prefix", &self.run])
            .args(["--name", name, "--capacity", &capacity.to_string(), "--lease-ms", &LEASE_MS.to_string()])
            .env("RUST_LOG", "info,solstice_core=debug,solstice_core::engine::serve=trace")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start scale-orchestrator")
    }

    fn submitter(&self) -> Child {
        self.submitter_with(JOBS, SLEEP_MS)
    }

    fn submitter_with(&self, jobs: usize, sleep_ms: u64) -> Child {
        let log = std::fs::File::create(self.log("submitter")).expect("log file");
        Command::new(env!("CARGO_BIN_EXE_scale-submitter"))
            .args(["--amqp-url", &amqp_url(), "--prefix", &self.run, "--run", &self.run])
            .args(["--jobs", &jobs.to_string(), "--sleep-ms", &sleep_ms.to_string(), "--deadline-secs", "90"])
            .env("RUST_LOG", "info,solstice_core=debug,solstice_core::dispatch=trace")
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start scale-submitter")
    }

    /// Jobs not finished, with their owners.
    async fn unfinished(&self) -> Vec<JobRecord> {
        let mut jobs = Vec::new();
        for state in ["provisioning", "running"] {
            jobs.extend(self.store.jobs_in_state(state, 10_000).await.expect("list jobs"));
        }
        jobs
    }

    async fn finished_count(&self) -> usize {
        self.store.jobs_in_state("finished", 10_000).await.expect("list jobs").len()
    }

    /// Waits for the submitter's report, printing the logs if it does not come.
    async fn report(&self, submitter: Child) -> Report {
        let output = tokio::time::timeout(Duration::from_secs(170), submitter.wait_with_output())
            .await
            .unwrap_or_else(|_| self.fail("the submitter did not exit in time"))
            .expect("wait for the submitter");
        if !output.status.success() {
            // Say which jobs never finished and what the store knows of them.
            let mut missing = Vec::new();
            if let Ok(partial) = serde_json::from_slice::<Report>(&output.stdout) {
                for outcome in partial.jobs.iter().filter(|o| o.finishes.is_empty()) {
                    let id = plan_job(&self.run, outcome.index, SLEEP_MS).id;
                    let record = self.store.job(id).await;
                    missing.push(format!("job {}: accepted {:?}, store {record:?}", outcome.index, outcome.accepted));
                    missing.extend(self.log_lines_naming(&id.to_string()).into_iter().take(60));
                }
            }
            self.fail(&format!(
                "the submitter failed ({}); jobs without a final event:\n{}",
                output.status,
                missing.join("\n")
            ));
        }
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| self.fail(&format!("unreadable report: {e}")))
    }

    /// Every log line that names `needle`, prefixed with the log's name.
    fn log_lines_naming(&self, needle: &str) -> Vec<String> {
        let mut lines = Vec::new();
        for entry in std::fs::read_dir(self.logs.path()).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            lines.extend(text.lines().filter(|l| l.contains(needle)).map(|l| format!("  {name}: {l}")));
        }
        lines
    }

    /// Copies the logs out of the test's temporary directory, for a closer look.
    fn keep_logs(&self) {
        let kept = std::env::temp_dir().join(format!("solstice-scale-{}", self.run));
        if std::fs::create_dir_all(&kept).is_ok() {
            for entry in std::fs::read_dir(self.logs.path()).into_iter().flatten().flatten() {
                let _ = std::fs::copy(entry.path(), kept.join(entry.file_name()));
            }
            eprintln!("==== the full logs are kept in {}", kept.display());
        }
    }

    fn fail(&self, why: &str) -> ! {
        self.keep_logs();
        for entry in std::fs::read_dir(self.logs.path()).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let tail: Vec<_> = text.lines().rev().take(40).collect();
            eprintln!("==== {} (last 40 lines)", entry.path().display());
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
        panic!("{why}");
    }

    /// Every job finished exactly once with its expected result, in the events and in
    /// the store.
    async fn check_exactly_once(&self, report: &Report, jobs: usize) {
        assert_eq!(report.jobs.len(), jobs);
        let mut problems = Vec::new();
        for outcome in &report.jobs {
            let want = expected_result(outcome.index).as_str();
            match outcome.finishes.as_slice() {
                [(_, result)] if result == want => {}
                finishes => problems.push(format!("job {}: finishes {finishes:?}, want one {want}", outcome.index)),
            }
            if !outcome.marker_seen {
                problems.push(format!("job {}: its output never arrived", outcome.index));
            }
            let id: JobId = plan_job(&self.run, outcome.index, SLEEP_MS).id;
            match self.store.job(id).await.expect("read job") {
                Some(JobRecord { state: JobState::Finished(result), .. }) if result.as_str() == want => {}
                other => problems.push(format!("job {}: store has {other:?}", outcome.index)),
            }
        }
        if !problems.is_empty() {
            self.fail(&format!("{} problems:\n{}", problems.len(), problems.join("\n")));
        }
    }

    /// Deletes the test's queues and database; keeps the logs if
    /// `SOLSTICE_TEST_KEEP_LOGS` is set.
    async fn cleanup(self) {
        if std::env::var_os("SOLSTICE_TEST_KEEP_LOGS").is_some() {
            self.keep_logs();
        }
        let q = AmqpQueue::builder(amqp_url()).prefix(&self.run).connect().await.expect("connect");
        q.delete_namespace(&[solstice_scale::LABEL], &[&self.run]).await.expect("delete the namespace");
        q.close().await;
        drop(self.store);
        admin(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database)).await;
    }
}

async fn admin(statement: &str) {
    let url = postgres_url();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap_or_else(|e| {
        panic!("PostgreSQL is unreachable at {}: {e}. Start it with `eval \"$(.ci/services.sh)\"`.", redact(&url))
    });
    sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("`{statement}` failed: {e}"));
    let _ = conn.close().await;
}

/// Polls `check` every 50 ms until it holds, failing after `limit`.
async fn wait_until<F, Fut>(env: &Env, what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        if Instant::now() > deadline {
            env.fail(&format!("timed out waiting until {what}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn terminate(mut child: Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    }
    let asked = Instant::now();
    if tokio::time::timeout(Duration::from_secs(20), child.wait()).await.is_err() {
        eprintln!("the orchestrator did not stop within 20 s of SIGTERM; killing it");
        let _ = child.kill().await;
    } else {
        eprintln!("the orchestrator stopped {:?} after SIGTERM", asked.elapsed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_orchestrators_survive_a_sigkill() {
    let _serial = SERIAL.lock().await;
    let env = Env::new("sigkill").await;
    let mut doomed = env.orchestrator("orch-a", 8);
    let survivor = env.orchestrator("orch-b", 8);
    let submitter = env.submitter();

    // Kill orch-a once some jobs finished and it is running some.
    wait_until(&env, "orch-a runs jobs after 40 finished", Duration::from_secs(90), || async {
        env.finished_count().await >= 40 && env.unfinished().await.iter().any(|j| j.owner.as_deref() == Some("orch-a"))
    })
    .await;
    doomed.start_kill().expect("SIGKILL orch-a");
    doomed.wait().await.expect("reap orch-a");
    let finished_at_kill = env.finished_count().await;
    eprintln!("killed orch-a with {finished_at_kill}/{JOBS} jobs finished");

    let report = env.report(submitter).await;
    env.check_exactly_once(&report, JOBS).await;

    // The jobs orch-a held when it died were redelivered and completed by orch-b.
    let taken_over: Vec<_> = report
        .jobs
        .iter()
        .filter(|o| o.accepted.iter().any(|(_, by)| by == "orch-a") && o.finishes.iter().all(|(attempt, _)| *attempt > 1))
        .collect();
    assert!(!taken_over.is_empty(), "no job of the killed orchestrator was redelivered");
    for outcome in &taken_over {
        let (attempt, _) = outcome.finishes[0];
        assert!(
            outcome.accepted.contains(&(attempt, "orch-b".to_owned())),
            "job {} finished by attempt {attempt}, not accepted by orch-b: {:?}",
            outcome.index,
            outcome.accepted
        );
        let record = env.store.job(plan_job(&env.run, outcome.index, SLEEP_MS).id).await.expect("read").expect("job");
        assert_eq!(record.owner.as_deref(), Some("orch-b"));
        assert!(record.attempt >= 2);
    }
    let by_a = report.jobs.iter().filter(|o| o.accepted.first().is_some_and(|(_, by)| by == "orch-a")).count();
    eprintln!(
        "{JOBS} jobs in {} ms; orch-a took {by_a}, {} of them were taken over by orch-b; {} duplicate events",
        report.elapsed_ms,
        taken_over.len(),
        report.jobs.iter().map(|o| o.duplicates).sum::<usize>()
    );
    terminate(survivor).await;
    env.cleanup().await;
}

fn restart_broker(env: &Env) {
    let command = std::env::var("SOLSTICE_TEST_AMQP_RESTART")
        .unwrap_or_else(|_| "rabbitmqctl -q stop_app && rabbitmqctl -q start_app".to_owned());
    let status = std::process::Command::new("sh").args(["-c", &command]).status();
    match status {
        Ok(s) if s.success() => {}
        other => env.fail(&format!("restarting the broker with `{command}` failed: {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let env = Env::new("restart").await;
    let orchestrator = env.orchestrator("orch-r", 12);
    let submitter = env.submitter();

    wait_until(&env, "jobs are running after 30 finished", Duration::from_secs(90), || async {
        env.finished_count().await >= 30 && !env.unfinished().await.is_empty()
    })
    .await;
    let (finished, running) = (env.finished_count().await, env.unfinished().await.len());
    assert!(finished + running < JOBS, "no job is left queued to test the restart with");
    let started = Instant::now();
    restart_broker(&env);
    eprintln!(
        "restarted RabbitMQ in {:?} with {finished} jobs finished, {running} running, the rest queued",
        started.elapsed()
    );

    let report = env.report(submitter).await;
    env.check_exactly_once(&report, JOBS).await;
    let redelivered = report.jobs.iter().filter(|o| o.accepted.iter().any(|(a, _)| *a > 1)).count();
    eprintln!(
        "{JOBS} jobs in {} ms; {redelivered} ran a second attempt; {} duplicate events",
        report.elapsed_ms,
        report.jobs.iter().map(|o| o.duplicates).sum::<usize>()
    );
    terminate(orchestrator).await;
    env.cleanup().await;
}

/// Makes the broker close the connection with the given name, as a network cut would.
fn close_connection(env: &Env, name: &str) {
    let output = std::process::Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "--no-table-headers", "pid", "client_properties"])
        .output()
        .unwrap_or_else(|e| env.fail(&format!("`rabbitmqctl list_connections` could not run: {e}")));
    let listing = String::from_utf8_lossy(&output.stdout);
    // One line per connection: `<rabbit@host.1.2.3>\t[{"connection_name",longstr,"…"},…]`.
    let Some(pid) = listing
        .lines()
        .find(|line| line.contains(&format!("\"{name}\"")))
        .and_then(|line| line.split('\t').next())
    else {
        env.fail(&format!("no connection named {name} in:\n{listing}"))
    };
    let status = std::process::Command::new("rabbitmqctl")
        .args(["-q", "close_connection", pid, "the test cuts the connection"])
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        env.fail(&format!("rabbitmqctl close_connection {pid}: {status:?}"));
    }
}

/// Issue 5: an orchestrator loses its RabbitMQ connection (not its process) while it
/// runs jobs; RabbitMQ hands the jobs to another orchestrator. The running one's
/// lease makes the other hold them instead of running them a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_does_not_run_a_job_twice() {
    const LONG_JOBS: usize = 4;
    let _serial = SERIAL.lock().await;
    let env = Env::new("lease").await;
    let first = env.orchestrator("orch-a", LONG_JOBS);
    // Each job outlives the lease twice over, so it is renewed while it runs.
    let submitter = env.submitter_with(LONG_JOBS, 3 * LEASE_MS);
    wait_until(&env, "orch-a runs every job", Duration::from_secs(60), || async {
        let running = env.store.jobs_in_state("running", 100).await.expect("list jobs");
        running.len() == LONG_JOBS && running.iter().all(|j| j.owner.as_deref() == Some("orch-a"))
    })
    .await;
    let second = env.orchestrator("orch-b", LONG_JOBS);
    wait_until(&env, "orch-b serves", Duration::from_secs(30), || async {
        std::fs::read_to_string(env.log("orch-b")).is_ok_and(|log| log.contains("serving"))
    })
    .await;
    // Let orch-b's consumer subscribe before the jobs come back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    close_connection(&env, "orch-a");

    let report = env.report(submitter).await;
    env.check_exactly_once(&report, LONG_JOBS).await;
    let log_b = std::fs::read_to_string(env.log("orch-b")).unwrap_or_default();
    let held = log_b.matches("holding its redelivery").count();
    for outcome in &report.jobs {
        assert_eq!(
            outcome.accepted,
            vec![(1, "orch-a".to_owned())],
            "job {} ran again after orch-a's connection dropped",
            outcome.index
        );
        let record = env.store.job(plan_job(&env.run, outcome.index, 0).id).await.expect("read").expect("job");
        assert_eq!((record.attempt, record.owner.as_deref()), (1, Some("orch-a")));
    }
    assert!(held > 0, "orch-b never received a redelivered running job, so the test proved nothing:\n{log_b}");
    eprintln!("orch-b held {held} redelivered running jobs until orch-a finished them");
    terminate(first).await;
    terminate(second).await;
    env.cleanup().await;
}
