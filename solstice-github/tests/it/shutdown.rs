//! Stopping a runner whose jobs run elsewhere (RabbitMQ orchestrators, or the engine of
//! `solstice serve` during its grace period).

use std::sync::Arc;
use std::time::Duration;

use solstice_core::{Engine, HostExecutor, HostHypervisor, JobQueue, MemoryQueue};
use solstice_github::GithubSource;
use solstice_github_fake::{FakeConfig, FakeGithub, FakeJob};
use tokio_util::sync::CancellationToken;

use crate::support::{JOB_LIMIT, register};

fn job(name: &str) -> FakeJob {
    FakeJob::new(name).labels(&["self-hosted", "host"])
}

/// Once stopped, the runner takes no new job from GitHub (nothing would run it), and
/// reports the job still running until it ends.
#[tokio::test]
async fn a_stopping_runner_takes_no_new_job_and_reports_the_running_one_to_its_end() {
    let fake = FakeGithub::start(FakeConfig::default()).await.expect("fake");
    let (_dir, config) = register(&fake, "drain-1", false).await;
    let source = GithubSource::builder(config)
        .retry_delay(Duration::from_millis(100))
        .drain_limit(JOB_LIMIT)
        .build()
        .expect("source");
    let queue: Arc<dyn JobQueue> = Arc::new(MemoryQueue::new());
    // Not the runner's engine: it lets its running job finish after the runner stops.
    let engine = Engine::builder().hypervisor(HostHypervisor::new()).executor(HostExecutor::new()).build().expect("engine");
    let engine_stop = CancellationToken::new();
    let engine_task = {
        let (queue, stop) = (queue.clone(), engine_stop.clone());
        tokio::spawn(async move { engine.serve(queue, &["host".to_owned()], stop, CancellationToken::new()).await })
    };
    let stop = CancellationToken::new();
    let runner = tokio::spawn(solstice_github::serve_with_queue(source, queue, None, stop.clone()));

    let first = fake.enqueue(job("first").run("echo started\nsleep 3\necho done")).await;
    fake.wait_for(&first, JOB_LIMIT, |j| j.feed.values().flatten().any(|l| l == "started")).await.expect("the first job runs");
    stop.cancel();
    engine_stop.cancel();
    let second = fake.enqueue(job("second").run("echo must not be taken")).await;

    tokio::time::timeout(JOB_LIMIT, runner)
        .await
        .expect("the runner stops once its job is reported")
        .expect("join")
        .expect("serve");
    let first = fake.job(&first).await.expect("first job");
    assert_eq!((first.state.as_str(), first.result.as_deref()), ("completed", Some("succeeded")));
    assert!(first.all_logs().contains("done"), "the job was cut short: {}", first.all_logs());
    let second = fake.job(&second).await.expect("second job");
    assert_eq!(second.state, "queued", "a stopping runner took a job");
    engine_task.await.expect("join").expect("engine");
}

/// GitHub asks the runner to shut down (`RunnerShutdown`) while a job runs: the runner
/// takes no more jobs, stops its running job and reports it failed with the shutdown
/// message (as GitHub's runner does),
/// and stops on its own, leaving its session to GitHub as the official runner does.
#[tokio::test]
async fn a_runner_shutdown_message_stops_the_runner_after_reporting_its_job() {
    let fake = FakeGithub::start(FakeConfig::default()).await.expect("fake");
    let (_dir, runner) = crate::support::runner(&fake, "drain-2").await;
    let first = fake.enqueue(job("first").run("echo started\nsleep 60")).await;
    fake.wait_for(&first, JOB_LIMIT, |j| j.feed.values().flatten().any(|l| l == "started")).await.expect("the job runs");
    fake.request_runner_shutdown("the runner was removed").await;
    let second = fake.enqueue(job("second").run("echo must not be taken")).await;

    tokio::time::timeout(JOB_LIMIT, runner.task)
        .await
        .expect("the runner stops on its own")
        .expect("join")
        .expect("serve");
    let first = fake.job(&first).await.expect("first job");
    // As GitHub's runner reports a job its shutdown interrupted.
    assert_eq!((first.state.as_str(), first.result.as_deref()), ("completed", Some("failed")));
    assert!(first.all_logs().contains("The runner has received a shutdown signal."), "{}", first.all_logs());
    assert_eq!(fake.job(&second).await.expect("second job").state, "queued", "a stopping runner took a job");
    assert_eq!(fake.session_count().await, 1, "the session is left to GitHub");
}
