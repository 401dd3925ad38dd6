//! Debug SSH end to end through `ForgejoSource`: a job that opts in gets the public keys
//! the instance publishes for the user who started the run (`INSTANCE/USER.keys`) in the
//! `JobRequest` the source hands out, and the task log says whose keys were found or why
//! none; other jobs fetch nothing.

use std::time::Duration;

use solstice_core::{JobEvent, JobEventKind, JobRequest, JobResult, JobSource, SourceMessage};
use solstice_forgejo::{ForgejoClient, ForgejoSource};
use solstice_forgejo_fake::{FakeForgejo, JobSpec, Status};
use tokio_util::sync::CancellationToken;

use crate::support::{WAIT, register};

const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGaWDkPZa4NE3U9uJmQTeWs2uaUXGpOJ1rVfESVmhxNk tester@laptop";
const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 tester@desktop";

/// A single-job workflow whose job sets `SOLSTICE_DEBUG_SSH` to `value`.
fn payload(value: &str) -> String {
    format!("name: ci\non: push\njobs:\n  build:\n    runs-on: host\n    env:\n      SOLSTICE_DEBUG_SSH: {value}\n    steps:\n      - run: exit 1\n")
}

async fn source(fake: &FakeForgejo) -> ForgejoSource {
    let file = register(fake).await;
    let client = ForgejoClient::builder(fake.url()).build().expect("client").with_credentials(file.credentials());
    ForgejoSource::builder(client)
        .labels(vec!["host".into()])
        .runner_name("test-runner")
        .fetch_interval(Duration::from_millis(50))
        .report_interval(Duration::from_millis(50))
        .build()
        .expect("source")
}

/// The next job the source hands out.
async fn next_job(source: &ForgejoSource) -> JobRequest {
    let cancel = CancellationToken::new();
    match tokio::time::timeout(WAIT, source.next(&cancel)).await.expect("a job in time").expect("next") {
        Some(SourceMessage::Job(job)) => *job,
        other => panic!("expected a job, got {other:?}"),
    }
}

/// Reports the job accepted and failed without a step (as when no machine could be
/// had), waits until Forgejo has the final state, and returns the task log.
async fn fail(fake: &FakeForgejo, source: &ForgejoSource, job: usize, request: &JobRequest) -> Vec<String> {
    let kinds = [JobEventKind::Accepted { orchestrator: "test".into() }, JobEventKind::JobFinished { result: JobResult::Failure }];
    for (seq, kind) in kinds.into_iter().enumerate() {
        let event = JobEvent { job_id: request.id, attempt: 1, seq: seq as u64 + 1, at: time::OffsetDateTime::now_utc(), kind };
        source.report(&event).await.expect("report");
    }
    let task = fake.wait_job_done(job, WAIT).await.expect("task done");
    assert_eq!(task.status, Status::Failure);
    fake.log(task.id)
}

#[tokio::test]
async fn an_opted_in_job_gets_the_actors_published_keys_and_others_fetch_nothing() {
    let fake = FakeForgejo::start().await.expect("fake");
    fake.set_user_keys("tester", &[ED25519, "", "# not a key", RSA]);
    let source = source(&fake).await;

    let job = fake.enqueue(JobSpec::new("build", &payload("true")));
    let request = next_job(&source).await;
    assert!(request.debug_ssh);
    assert_eq!(request.debug_keys, [ED25519, RSA], "comments and blank lines are dropped");
    assert_eq!(fake.key_requests(), ["tester"]);
    let log = fail(&fake, &source, job, &request).await;
    assert!(log.iter().any(|l| l == "Debug SSH: 2 public SSH key(s) of tester found on the forge."), "{log:?}");
    assert!(!log.iter().any(|l| l.contains("AAAAC3NzaC1lZDI1NTE5")), "the keys themselves are not logged: {log:?}");

    let job = fake.enqueue(JobSpec::new("build", &payload("false")).run(2));
    let request = next_job(&source).await;
    assert!(!request.debug_ssh);
    assert!(request.debug_keys.is_empty());
    let log = fail(&fake, &source, job, &request).await;
    assert!(!log.iter().any(|l| l.contains("Debug SSH")), "{log:?}");
    assert_eq!(fake.key_requests(), ["tester"], "nothing fetched for the second job");
    assert!(source.close(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn a_user_the_instance_does_not_know_gets_no_keys_and_the_log_says_why() {
    let fake = FakeForgejo::start().await.expect("fake");
    let source = source(&fake).await;
    let job = fake.enqueue(JobSpec::new("build", &payload("true")).actor("ghost"));
    let request = next_job(&source).await;
    assert!(request.debug_ssh, "the job still runs");
    assert!(request.debug_keys.is_empty());
    assert_eq!(fake.key_requests(), ["ghost"]);
    let log = fail(&fake, &source, job, &request).await;
    let line = "##[warning]Debug SSH: could not fetch the public SSH keys of ghost: the public keys of ghost are not available: HTTP 404";
    assert!(log.iter().any(|l| l == line), "{log:?}");
    assert!(source.close(Duration::from_secs(5)).await);
}
