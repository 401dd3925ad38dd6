//! Registration, replacement, removal, ephemeral runners.

use std::time::Duration;

use solstice_core::Secret;
use solstice_github::RegistrationConfig;
use solstice_github_fake::{Delivery, FakeConfig, FakeGithub, FakeJob};

use crate::support::{JOB_LIMIT, Runner, key, register};

#[tokio::test]
async fn register_replace_and_remove() {
    let fake = FakeGithub::start(FakeConfig::default()).await.expect("fake");
    let (_dir, config) = register(&fake, "reg-1", false).await;
    assert_eq!(config.settings.agent_name, "reg-1");
    assert_eq!(config.settings.labels, ["self-hosted", "Linux", "X64", "host"]);
    assert!(!config.credentials.data.fips());
    let mut again = RegistrationConfig {
        url: fake.repo_url(),
        token: Secret::new("AREGTOKEN"),
        name: "reg-1".into(),
        ..Default::default()
    };
    let err = solstice_github::register_with_key(&again, key()).await.expect_err("duplicate name");
    assert!(err.to_string().contains("exists already"), "{err}");
    again.replace = true;
    let replaced = solstice_github::register_with_key(&again, key()).await.expect("replace");
    assert_eq!(replaced.settings.agent_id, config.settings.agent_id);
    assert_eq!(fake.agents().await.len(), 1);
    let wrong = solstice_github::unregister(&replaced, &Secret::new("nope"), None).await;
    assert!(wrong.is_err());
    solstice_github::unregister(&replaced, &Secret::new("AREMOVETOKEN"), None).await.expect("remove");
    assert!(fake.agents().await.is_empty());
    let requests = fake.requests().await;
    assert!(requests.iter().any(|r| r.path == "/api/v3/actions/runner-registration" && r.auth_scheme.as_deref() == Some("RemoteAuth")));
    assert!(requests.iter().filter(|r| r.path.contains("/agents")).all(|r| r.accept.contains("api-version=6.0-preview.2")));
}

#[tokio::test]
async fn an_ephemeral_runner_takes_one_job_and_is_gone() {
    let fake = FakeGithub::start(FakeConfig::default()).await.expect("fake");
    let (_dir, config) = register(&fake, "eph-1", true).await;
    let runner = Runner::start(config);
    let first = fake.enqueue(FakeJob::new("one").labels(&["host"]).run("echo one")).await;
    let second = fake.enqueue(FakeJob::new("two").labels(&["host"]).run("echo two")).await;
    let ended = tokio::time::timeout(JOB_LIMIT, runner.task).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "the runner ends by itself: {ended:?}");
    assert_eq!(fake.job(&first).await.expect("first").result.as_deref(), Some("succeeded"));
    let second = fake.job(&second).await.expect("second");
    assert_eq!(second.state, "queued", "the second job is left for another runner");
    assert!(fake.agents().await.is_empty(), "the registration is gone");
    assert_eq!(fake.session_count().await, 0);
}

#[tokio::test]
async fn a_stale_session_conflict_is_waited_out() {
    let fake = FakeGithub::start(FakeConfig::default()).await.expect("fake");
    fake.session_conflicts(2).await;
    let (_dir, runner) = crate::support::runner(&fake, "conflict-1").await;
    let id = fake.enqueue(FakeJob::new("j").labels(&["host"]).run("echo ok")).await;
    let view = fake.wait_completed(&id, JOB_LIMIT).await.expect("job");
    assert_eq!(view.result.as_deref(), Some("succeeded"));
    runner.shutdown().await;
    let _ = Duration::ZERO;
}

/// A service that answers `use_v2_flow: true`: the runner registers through the
/// runner-admin API and then talks only to the broker (no pool session).
#[tokio::test]
async fn a_runner_admin_registration_runs_jobs_through_the_broker() {
    let fake = FakeGithub::start(FakeConfig { use_v2_flow: true, ..Default::default() }).await.expect("fake");
    let (_dir, config) = register(&fake, "v2-1", false).await;
    assert!(config.settings.use_v2_flow && config.settings.use_runner_admin_flow);
    assert_eq!(config.settings.server_url_v2, Some(format!("{}/broker/", fake.url())));
    assert!(config.credentials.data.fips(), "no agent properties: FIPS (PS256) as the official runner defaults");
    let registered = config.settings.agent_id;

    let runner = Runner::start(config);
    let id = fake
        .enqueue(FakeJob::new("v2").labels(&["self-hosted", "host"]).delivery(Delivery::Broker).run("echo via the broker"))
        .await;
    let view = fake.wait_completed(&id, JOB_LIMIT).await.expect("job");
    assert_eq!(view.result.as_deref(), Some("succeeded"));
    assert!(view.all_logs().contains("via the broker"));
    runner.shutdown().await;
    assert_eq!(fake.session_count().await, 0, "the broker session is deleted on shutdown");

    let requests = fake.requests().await;
    let admin = |path: &str| requests.iter().any(|r| r.path == path && r.auth_scheme.as_deref() == Some("RemoteAuth"));
    assert!(admin("/api/v3/actions/runners/register"));
    assert!(admin("/api/v3/repos/octo/demo/actions/runner-groups"));
    assert!(requests.iter().any(|r| r.method == "POST" && r.path == "/broker/session"));
    assert!(requests.iter().any(|r| r.method == "DELETE" && r.path == "/broker/session"));
    assert!(!requests.iter().any(|r| r.path.contains("/sessions") || r.path.contains("/messages")), "no pool session or poll");

    // Replacing keeps the id; removal goes through the REST API.
    let mut again = RegistrationConfig { url: fake.repo_url(), token: Secret::new("AREGTOKEN"), name: "v2-1".into(), ..Default::default() };
    let err = solstice_github::register_with_key(&again, key()).await.expect_err("duplicate name");
    assert!(err.to_string().contains("exists already"), "{err}");
    again.replace = true;
    let replaced = solstice_github::register_with_key(&again, key()).await.expect("replace");
    assert_eq!(replaced.settings.agent_id, registered);
    solstice_github::unregister(&replaced, &Secret::new("AREMOVETOKEN"), None).await.expect("remove");
    assert!(fake.agents().await.is_empty());
    assert!(fake.requests().await.iter().any(|r| r.method == "DELETE" && r.path == format!("/api/v3/repos/octo/demo/actions/runners/{registered}")));
}
