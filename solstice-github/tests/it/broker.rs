//! The github.com path: `BrokerMigration`, broker polls, the run and results services.

use std::time::Duration;

use serde_json::json;
use solstice_github_fake::{BlobStorage, Delivery, FakeConfig, FakeGithub, FakeJob};

use crate::support::{JOB_LIMIT, runner};

fn job(name: &str) -> FakeJob {
    FakeJob::new(name).labels(&["self-hosted", "host"]).delivery(Delivery::Broker)
}

async fn run_broker_job(config: FakeConfig, name: &str) {
    let fake = FakeGithub::start(config).await.expect("fake");
    let (_dir, runner) = runner(&fake, name).await;
    let id = fake
        .enqueue(
            job("build")
                .run("echo hello broker")
                .run_expr("format('echo sha={0}', github.sha)")
                .run("echo failing\nexit 1")
                .run_named("last", "Never", "echo never", None)
                .outputs(json!({"type": 2, "map": [{"Key": "r", "Value": "x"}]})),
        )
        .await;
    let view = fake.wait_completed(&id, JOB_LIMIT).await.expect("job");
    let completion = view.completion.clone().expect("completejob");
    assert_eq!(completion["conclusion"], "failed");
    assert_eq!(completion["billingOwnerId"], "O_fake");
    assert_eq!(completion["outputs"]["r"]["value"], "x");
    let step_results = completion["stepResults"].as_array().expect("stepResults");
    assert_eq!(step_results.len(), 6);
    assert_eq!(step_results[3]["conclusion"], "failed");
    assert_eq!(step_results[4]["conclusion"], "skipped");
    let steps = view.step_results();
    let results: Vec<&str> = steps.iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(results, ["succeeded", "succeeded", "succeeded", "failed", "skipped", "succeeded"], "{steps:?}");
    assert!(view.step_states.values().all(|s| s["status"] == 6), "all completed: {:?}", view.step_states);
    let hello = view.step_log("Run echo hello broker").expect("step log");
    assert!(hello.lines().any(|l| l.ends_with(" hello broker")), "{hello}");
    let (step_id, _) = view.step_states.iter().find(|(_, s)| s["name"] == "Run echo hello broker").expect("step");
    assert_eq!(view.step_log_lines.get(step_id).copied(), Some(hello.lines().count() as i64));
    assert!(view.all_logs().contains("sha=0123456789abcdef"));
    assert!(view.job_log.as_deref().is_some_and(|l| l.contains("hello broker")));
    assert!(view.renewals >= 1);
    let requests = fake.requests().await;
    assert!(requests.iter().any(|r| r.path == "/broker/message"), "polled the broker");
    assert!(requests.iter().any(|r| r.path == "/broker/acknowledge"), "acknowledged");
    // No api-version on the broker (it rejects it) and none on the run service.
    assert!(requests.iter().filter(|r| r.path.starts_with("/broker/") || r.path.starts_with("/run/")).all(|r| !r.accept.contains("api-version")));
    runner.shutdown().await;
}

#[tokio::test]
async fn a_broker_job_reports_through_the_results_service() {
    run_broker_job(FakeConfig::default(), "broker-1").await;
}

#[tokio::test]
async fn unspecified_blob_storage_works_too() {
    run_broker_job(FakeConfig { blob_storage: BlobStorage::Unspecified, ..Default::default() }, "broker-2").await;
}

#[tokio::test]
async fn dropped_long_polls_are_retried() {
    let fake = FakeGithub::start(FakeConfig::default()).await.expect("fake");
    let (_dir, runner) = runner(&fake, "broker-3").await;
    fake.fail_polls(3).await;
    let id = fake.enqueue(job("after-drops").run("echo survived")).await;
    let view = fake.wait_completed(&id, JOB_LIMIT).await.expect("job");
    assert_eq!(view.result.as_deref(), Some("succeeded"));
    assert!(view.all_logs().contains("survived"));
    runner.shutdown().await;
}

#[tokio::test]
async fn a_broker_job_can_be_cancelled() {
    let fake = FakeGithub::start(FakeConfig::default()).await.expect("fake");
    let (_dir, runner) = runner(&fake, "broker-4").await;
    let id = fake.enqueue(job("cancel").run("sleep 60")).await;
    fake.wait_for(&id, JOB_LIMIT, |j| j.step_states.values().any(|s| s["status"] == 3)).await.expect("running");
    fake.cancel(&id).await;
    let view = fake.wait_completed(&id, Duration::from_secs(30)).await.expect("job");
    assert_eq!(view.result.as_deref(), Some("canceled"));
    runner.shutdown().await;
}

/// The broker path's live console: lines travel over the `FeedStreamUrl` websocket while
/// the step still runs; the step's log blob still comes at its end.
#[tokio::test]
async fn broker_lines_reach_the_live_console_before_the_step_ends() {
    let fake = FakeGithub::start(FakeConfig::default()).await.expect("fake");
    let (_dir, runner) = runner(&fake, "broker-5").await;
    let long = "é".repeat(1500);
    let id = fake.enqueue(job("live").run(&format!("echo first-live-line\necho {long}\nsleep 4\necho after-sleep"))).await;
    let live = fake
        .wait_for(&id, JOB_LIMIT, |j| j.feed.values().flatten().any(|l| l == "first-live-line"))
        .await
        .expect("job");
    let (step_id, state) = live.step_states.iter().find(|(_, s)| s["name"] == "Run echo first-live-line").expect("step");
    assert_eq!(state["status"], 3, "the step is still in progress: {state}");
    assert!(!live.step_logs.contains_key(step_id), "the step's blob comes at its end");
    assert!(!live.feed.values().flatten().any(|l| l == "after-sleep"));
    let step_id = step_id.clone();

    let view = fake.wait_completed(&id, JOB_LIMIT).await.expect("job");
    assert_eq!(view.result.as_deref(), Some("succeeded"));
    // Every line of the step came live (the socket has its own task, so the last batch
    // may trail the completion a little), numbered as in the blob (which carries
    // timestamps the live lines do not).
    let blob_len = view.step_logs.get(&step_id).expect("the final blob is still uploaded").lines().count();
    let view = fake
        .wait_for(&id, Duration::from_secs(10), |j| j.feed.get(&step_id).is_some_and(|f| f.len() >= blob_len))
        .await
        .expect("job");
    let blob = view.step_logs.get(&step_id).expect("blob");
    let blob_lines: Vec<&str> = blob.lines().map(|l| &l[29..]).collect();
    let live_lines: Vec<&str> = view.feed.get(&step_id).expect("live lines").iter().map(String::as_str).collect();
    assert_eq!(live_lines, blob_lines);
    assert!(live_lines.contains(&long.as_str()) && live_lines.contains(&"after-sleep"));
    assert!(view.feed_messages >= 2, "batches: {}", view.feed_messages);
    assert!(view.feed_max_frame <= 1024 && view.feed_max_frame > 0, "frames of at most 1024 bytes: {}", view.feed_max_frame);
    runner.shutdown().await;
}

#[tokio::test]
async fn workflow_commands_become_step_annotations_in_completejob() {
    let fake = FakeGithub::start(FakeConfig::default()).await.expect("fake");
    let (_dir, runner) = runner(&fake, "broker-6").await;
    let id = fake.enqueue(job("annotate").run_named("lint", "Lint", crate::classic::ANNOTATING_SCRIPT, None)).await;
    let view = fake.wait_completed(&id, JOB_LIMIT).await.expect("job");
    assert_eq!(view.result.as_deref(), Some("succeeded"));
    let completion = view.completion.clone().expect("completejob");
    let step = completion["stepResults"].as_array().expect("steps").iter().find(|s| s["name"] == "Lint").cloned().expect("Lint");
    let annotations = step["annotations"].as_array().expect("annotations");
    let levels: Vec<&str> = annotations.iter().filter_map(|a| a["level"].as_str()).collect();
    assert_eq!(levels, ["failure", "warning", "notice"]);
    let error = &annotations[0];
    assert_eq!(error["message"], "it broke\nsecond line");
    assert_eq!(error["title"], "Bad: thing");
    assert_eq!(error["path"], "src/app.rs");
    assert_eq!((error["startLine"].as_i64(), error["endLine"].as_i64()), (Some(3), Some(3)));
    assert_eq!((error["startColumn"].as_i64(), error["endColumn"].as_i64()), (Some(5), Some(5)));
    assert_eq!(error["stepNumber"], step["number"]);
    // Without a line, the annotation points at its line in the step's log.
    assert_eq!(annotations[1]["startLine"].as_i64(), Some(3));
    assert_eq!(completion["annotations"].as_array().map(Vec::len), Some(3), "the job's list has them too");
    let log = view.step_log("Lint").expect("log");
    assert!(log.contains("##[error]it broke"), "{log}");
    runner.shutdown().await;
}

/// Without a live console (the websocket refuses), the runner tries three times, then
/// rests; the job and its step logs do not suffer.
#[tokio::test]
async fn a_refused_live_console_costs_nothing_but_the_live_lines() {
    let fake = FakeGithub::start(FakeConfig::default()).await.expect("fake");
    fake.refuse_feed(100).await;
    let (_dir, runner) = runner(&fake, "broker-7").await;
    let id = fake.enqueue(job("no-live").run("echo one\nsleep 1\necho two").run("echo three\nsleep 1\necho four")).await;
    let view = fake.wait_completed(&id, JOB_LIMIT).await.expect("job");
    assert_eq!(view.result.as_deref(), Some("succeeded"));
    assert!(view.feed.is_empty());
    assert_eq!(fake.feed_handshakes().await, 3, "three attempts, then a rest");
    let logs = view.all_logs();
    for line in ["one", "two", "three", "four"] {
        assert!(logs.contains(&format!(" {line}\n")), "{logs}");
    }
    runner.shutdown().await;
}

/// A live console connection cut in the middle of a step (a proxy, say): the runner
/// notices on a later write and connects again; later lines arrive live again.
#[tokio::test]
async fn a_dropped_live_console_is_reconnected() {
    let fake = FakeGithub::start(FakeConfig::default()).await.expect("fake");
    let (_dir, runner) = runner(&fake, "broker-8").await;
    let script = "echo before\nsleep 1\nfor i in 1 2 3 4 5 6 7 8; do echo after-$i; sleep 0.4; done";
    let id = fake.enqueue(job("drop").run(script)).await;
    fake.wait_for(&id, JOB_LIMIT, |j| j.feed.values().flatten().any(|l| l == "before")).await.expect("job");
    fake.drop_feed_connections();
    let view = fake.wait_completed(&id, JOB_LIMIT).await.expect("job");
    assert_eq!(view.result.as_deref(), Some("succeeded"));
    let view = fake
        .wait_for(&id, Duration::from_secs(10), |j| j.feed.values().flatten().any(|l| l == "after-8"))
        .await
        .expect("job");
    assert!(view.feed.values().flatten().any(|l| l == "after-8"), "{:?}", view.feed);
    assert_eq!(fake.feed_handshakes().await, 2, "one reconnection");
    runner.shutdown().await;
}
