//! Debug SSH: a job that opts in gets the public keys GitHub publishes for the user who
//! started the run (`{server_url}/{actor}.keys`) in the `JobRequest` the source hands
//! out, and its log says whose keys were found or why none; other jobs fetch nothing.

use std::time::Duration;

use solstice_core::{JobEvent, JobEventKind, JobRequest, JobResult, JobSource, SourceMessage};
use solstice_github::GithubSource;
use solstice_github_fake::{Delivery, FakeConfig, FakeGithub, FakeJob};
use tokio_util::sync::CancellationToken;

use crate::support::{JOB_LIMIT, register};

const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGaWDkPZa4NE3U9uJmQTeWs2uaUXGpOJ1rVfESVmhxNk octocat@laptop";
const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 octocat@desktop";

/// A job started by `actor`.
fn job(name: &str, delivery: Delivery, actor: &str) -> FakeJob {
    FakeJob::new(name).labels(&["self-hosted", "host"]).delivery(delivery).github("actor", actor).run("exit 1")
}

/// The next job the source hands out.
async fn next_job(source: &GithubSource) -> JobRequest {
    let cancel = CancellationToken::new();
    let message = tokio::time::timeout(JOB_LIMIT, source.next(&cancel)).await.expect("a job in time").expect("next");
    match message {
        Some(SourceMessage::Job(job)) => *job,
        other => panic!("expected a job, got {other:?}"),
    }
}

/// Reports the job as accepted and failed without running a step (what the engine does
/// when the machine cannot be had), and waits until GitHub has the completion.
async fn fail(fake: &FakeGithub, source: &GithubSource, github_id: &str, job: &JobRequest) -> String {
    let kinds = [
        JobEventKind::Accepted { orchestrator: "test".into() },
        JobEventKind::JobFinished { result: JobResult::Failure },
    ];
    for (seq, kind) in kinds.into_iter().enumerate() {
        let event = JobEvent { job_id: job.id, attempt: 1, seq: seq as u64 + 1, at: time::OffsetDateTime::now_utc(), kind };
        source.report(&event).await.expect("report");
    }
    let view = fake.wait_completed(github_id, JOB_LIMIT).await.expect("job");
    assert_eq!(view.result.as_deref(), Some("failed"), "{view:#?}");
    view.all_logs()
}

async fn key_fetches(fake: &FakeGithub) -> Vec<String> {
    fake.requests().await.into_iter().filter(|r| r.path.ends_with(".keys")).map(|r| r.path).collect()
}

async fn source(fake: &FakeGithub, name: &str) -> (tempfile::TempDir, GithubSource) {
    let (dir, config) = register(fake, name, false).await;
    let source = GithubSource::builder(config).retry_delay(Duration::from_millis(100)).build().expect("source");
    (dir, source)
}

#[tokio::test]
async fn an_opted_in_job_gets_the_actors_published_keys_and_others_fetch_nothing() {
    for (n, delivery) in [Delivery::Pool, Delivery::Broker].into_iter().enumerate() {
        let fake = FakeGithub::start(FakeConfig::default()).await.expect("fake");
        fake.set_user_keys("octocat", &[ED25519, "", "# not a key", RSA]).await;
        let (_dir, source) = source(&fake, &format!("debug-{n}")).await;

        let id = fake.enqueue(job("opted-in", delivery, "octocat").env("SOLSTICE_DEBUG_SSH", "true")).await;
        let request = next_job(&source).await;
        assert!(request.debug_ssh, "{delivery:?}");
        assert_eq!(request.debug_keys, [ED25519, RSA], "{delivery:?}: comments and blank lines are dropped");
        assert_eq!(key_fetches(&fake).await, ["/octocat.keys"], "{delivery:?}");
        let logs = fail(&fake, &source, &id, &request).await;
        assert!(logs.contains("Debug SSH: 2 public SSH key(s) of octocat found on the forge."), "{delivery:?}: {logs}");
        assert!(!logs.contains("AAAAC3NzaC1lZDI1NTE5"), "{delivery:?}: the keys themselves are not logged: {logs}");

        let id = fake.enqueue(job("not-opted-in", delivery, "octocat").env("SOLSTICE_DEBUG_SSH", "no")).await;
        let request = next_job(&source).await;
        assert!(!request.debug_ssh, "{delivery:?}");
        assert!(request.debug_keys.is_empty(), "{delivery:?}");
        let logs = fail(&fake, &source, &id, &request).await;
        assert!(!logs.contains("Debug SSH"), "{delivery:?}: {logs}");
        assert_eq!(key_fetches(&fake).await, ["/octocat.keys"], "{delivery:?}: nothing fetched for the second job");
        source.shutdown().await;
    }
}

#[tokio::test]
async fn a_user_without_published_keys_gets_none_and_the_log_says_why() {
    let fake = FakeGithub::start(FakeConfig::default()).await.expect("fake");
    let (_dir, source) = source(&fake, "debug-none").await;

    // An account GitHub does not know: 404, the job still runs, with no keys.
    let id = fake.enqueue(job("ghost", Delivery::Pool, "ghost").env("SOLSTICE_DEBUG_SSH", "TRUE")).await;
    let request = next_job(&source).await;
    assert!(request.debug_ssh);
    assert!(request.debug_keys.is_empty());
    let logs = fail(&fake, &source, &id, &request).await;
    assert!(logs.contains("##[warning]Debug SSH: could not fetch the public SSH keys of ghost: the public keys of ghost are not available: HTTP 404"), "{logs}");

    // A bot account's name is not put in a URL at all.
    let id = fake.enqueue(job("bot", Delivery::Pool, "dependabot[bot]").env("SOLSTICE_DEBUG_SSH", "1")).await;
    let request = next_job(&source).await;
    assert!(request.debug_ssh && request.debug_keys.is_empty());
    let logs = fail(&fake, &source, &id, &request).await;
    assert!(logs.contains("could not fetch the public SSH keys of dependabot[bot]: `dependabot[bot]` is not a user name"), "{logs}");
    assert_eq!(key_fetches(&fake).await, ["/ghost.keys"]);
    source.shutdown().await;
}
