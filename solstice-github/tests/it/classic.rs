//! The classic path: encrypted pool messages, timeline, feed, log uploads, `JobCompleted`.

use std::time::Duration;

use serde_json::json;
use solstice_github_fake::{FakeConfig, FakeGithub, FakeJob};

use crate::support::{JOB_LIMIT, Runner, register, runner};

fn job(name: &str) -> FakeJob {
    FakeJob::new(name).labels(&["self-hosted", "host"])
}

#[tokio::test]
async fn a_classic_job_reports_every_step_log_and_result() {
    let fake = FakeGithub::start(FakeConfig::default()).await.expect("fake");
    let (_dir, runner) = runner(&fake, "classic-1").await;
    let id = fake
        .enqueue(
            job("build")
                .env("GREETING", "world")
                .run("echo hello $GREETING")
                .run_expr("format('echo sha={0} run={1}', github.sha, github.run_id)")
                .run_named("out", "Set output", "echo v=42 >> \"$GITHUB_OUTPUT\"", None)
                .outputs(json!({"type": 2, "map": [{"Key": "v", "Value": {"type": 3, "expr": "steps.out.outputs.v"}}]})),
        )
        .await;
    let view = fake.wait_completed(&id, JOB_LIMIT).await.expect("job");
    assert_eq!(view.result.as_deref(), Some("succeeded"), "{view:#?}");
    let steps = view.step_results();
    let names: Vec<&str> = steps.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["Set up job", "Run echo hello $GREETING", "Run ${{ format('echo sha={0} run={1}', github.sha, github.run_id) }}", "Set output", "Complete job"]);
    assert!(steps.iter().all(|(_, r)| r == "succeeded"), "{steps:?}");
    let hello = view.step_log("Run echo hello $GREETING").expect("step log");
    assert!(hello.lines().any(|l| l.ends_with(" hello world")), "{hello}");
    // Log file lines carry the 7-digit timestamp.
    assert!(hello.lines().all(|l| l.len() > 29 && &l[27..29] == "Z "), "{hello}");
    assert!(view.all_logs().contains("sha=0123456789abcdef0123456789abcdef01234567 run=4242"));
    // Live feed lines arrived for the first step, without timestamps.
    assert!(view.feed.values().flatten().any(|l| l == "hello world"), "{:?}", view.feed);
    // The job record went to completed with the result, and the outputs came along.
    let record = view.records.get(&view.id).expect("job record");
    assert_eq!(record["state"], "completed");
    assert_eq!(record["result"], "succeeded");
    let completion = view.completion.expect("JobCompleted");
    assert_eq!(completion["outputs"]["v"]["value"], "42");
    assert!(view.renewals >= 1, "the lock is renewed before the job starts");
    runner.shutdown().await;
    assert_eq!(fake.session_count().await, 0, "the session is deleted on shutdown");
}

#[tokio::test]
async fn a_failing_step_fails_the_job_and_skips_the_rest() {
    let fake = FakeGithub::start(FakeConfig::default()).await.expect("fake");
    let (_dir, runner) = runner(&fake, "classic-2").await;
    let id = fake
        .enqueue(job("fail").run("echo before\nexit 3").run("echo never").run_named("always", "Always", "echo cleanup", Some("always()")))
        .await;
    let view = fake.wait_completed(&id, JOB_LIMIT).await.expect("job");
    assert_eq!(view.result.as_deref(), Some("failed"));
    let steps = view.step_results();
    assert_eq!(steps[1].1, "failed");
    assert_eq!(steps[2], ("Run echo never".to_owned(), "skipped".to_owned()));
    assert_eq!(steps[3], ("Always".to_owned(), "succeeded".to_owned()));
    let logs = view.all_logs();
    assert!(logs.contains("exit code 3"), "{logs}");
    assert!(!logs.contains(" never\n"), "{logs}");
    runner.shutdown().await;
}

#[tokio::test]
async fn secrets_tokens_and_mask_regexes_never_reach_the_logs() {
    let fake = FakeGithub::start(FakeConfig::default()).await.expect("fake");
    let (_dir, runner) = runner(&fake, "classic-3").await;
    let spec = job("secret")
        .secret("MY_SECRET", "s3cr3t-value")
        .mask_regex("fake-secret-[0-9]+")
        .env("TOKEN", json!({"type": 3, "expr": "secrets.GITHUB_TOKEN"}))
        .run_expr("format('echo secret={0}\necho code=fake-secret-12345\necho token=$TOKEN', secrets.MY_SECRET)");
    let github_token = spec.github_token().to_owned();
    let id = fake.enqueue(spec).await;
    let view = fake.wait_completed(&id, JOB_LIMIT).await.expect("job");
    assert_eq!(view.result.as_deref(), Some("succeeded"));
    let logs = view.all_logs();
    assert!(logs.contains("secret=***"), "{logs}");
    assert!(logs.contains("code=***"), "{logs}");
    assert!(logs.contains("token=***"), "{logs}");
    for leaked in ["s3cr3t-value", "fake-secret-12345", github_token.as_str()] {
        assert!(!logs.contains(leaked), "{leaked} leaked");
    }
    runner.shutdown().await;
}

#[tokio::test]
async fn a_cancelled_job_stops_and_is_reported_cancelled() {
    let fake = FakeGithub::start(FakeConfig::default()).await.expect("fake");
    let (_dir, runner) = runner(&fake, "classic-4").await;
    let id = fake.enqueue(job("cancel").run("echo started\nsleep 60").run("echo after")).await;
    let running = fake
        .wait_for(&id, JOB_LIMIT, |j| j.feed.values().flatten().any(|l| l == "started"))
        .await
        .expect("job");
    assert_eq!(running.state, "assigned");
    let started = std::time::Instant::now();
    fake.cancel(&id).await;
    let view = fake.wait_completed(&id, JOB_LIMIT).await.expect("job");
    assert_eq!(view.result.as_deref(), Some("canceled"));
    assert!(started.elapsed() < Duration::from_secs(30), "cancelled in {:?}", started.elapsed());
    let steps = view.step_results();
    assert_eq!(steps[1].1, "canceled", "{steps:?}");
    runner.shutdown().await;
}

#[tokio::test]
async fn the_job_lock_is_renewed_across_a_long_step() {
    let fake = FakeGithub::start(FakeConfig::default()).await.expect("fake");
    let (_dir, config) = register(&fake, "classic-5", false).await;
    let runner = Runner::start_with(config, |b| b.renew_interval(Duration::from_millis(200)));
    let id = fake.enqueue(job("long").run("sleep 2")).await;
    let view = fake.wait_completed(&id, JOB_LIMIT).await.expect("job");
    assert_eq!(view.result.as_deref(), Some("succeeded"));
    assert!(view.renewals >= 6, "renewed {} times", view.renewals);
    runner.shutdown().await;
}

#[tokio::test]
async fn a_job_with_an_unsupported_action_fails_with_the_reason() {
    let fake = FakeGithub::start(FakeConfig::default()).await.expect("fake");
    let (_dir, runner) = runner(&fake, "classic-6").await;
    let id = fake.enqueue(job("uses").uses("actions/cache", "v4").run("echo hi")).await;
    let view = fake.wait_completed(&id, JOB_LIMIT).await.expect("job");
    assert_eq!(view.result.as_deref(), Some("failed"));
    let steps = view.step_results();
    assert_eq!(steps[1], ("Run actions/cache@v4".to_owned(), "failed".to_owned()));
    assert_eq!(steps[2].1, "skipped");
    let log = view.step_log("Run actions/cache@v4").expect("log");
    assert!(log.contains("`uses: actions/cache@v4` is not supported"), "{log}");
    runner.shutdown().await;
}

// GitHub's runner only prepares and fails a step it starts: an action it cannot run under
// an `if:` that is false is skipped and the job succeeds (actions/runner `StepsRunner`:
// the condition is evaluated before the step runs).
#[tokio::test]
async fn an_unsupported_action_under_a_false_condition_is_skipped() {
    let fake = FakeGithub::start(FakeConfig::default()).await.expect("fake");
    let (_dir, runner) = runner(&fake, "classic-6b").await;
    let guarded = json!({"type": "action", "name": "__action", "reference": {"type": "repository", "name": "actions/cache",
        "ref": "v4", "repositoryType": "GitHub", "path": ""}, "inputs": {"type": 2, "map": []}, "condition": "failure()"});
    let id = fake.enqueue(job("guarded").run("echo hi").step(guarded).run("echo after")).await;
    let view = fake.wait_completed(&id, JOB_LIMIT).await.expect("job");
    assert_eq!(view.result.as_deref(), Some("succeeded"), "{view:#?}");
    let steps = view.step_results();
    assert_eq!(steps[2], ("Run actions/cache@v4".to_owned(), "skipped".to_owned()));
    assert_eq!(steps[3].1, "succeeded");
    runner.shutdown().await;
}

#[tokio::test]
async fn fips_services_get_ps256_assertions_and_sha256_session_keys() {
    let config = FakeConfig { require_fips: true, fips_session_keys: true, ..Default::default() };
    let fake = FakeGithub::start(config).await.expect("fake");
    let (_dir, runner) = runner(&fake, "classic-7").await;
    let id = fake.enqueue(job("fips").run("echo fips")).await;
    let view = fake.wait_completed(&id, JOB_LIMIT).await.expect("job");
    assert_eq!(view.result.as_deref(), Some("succeeded"));
    runner.shutdown().await;
}

#[tokio::test]
async fn expired_sessions_and_tokens_are_renewed() {
    let config = FakeConfig { token_lifetime: Duration::from_secs(2), ..Default::default() };
    let fake = FakeGithub::start(config).await.expect("fake");
    let (_dir, runner) = runner(&fake, "classic-8").await;
    // Let the runner poll with its first token, then pull the rug.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    fake.expire_tokens().await;
    fake.expire_sessions().await;
    let id = fake.enqueue(job("after").run("sleep 3\necho ok")).await;
    let view = fake.wait_completed(&id, JOB_LIMIT).await.expect("job");
    assert_eq!(view.result.as_deref(), Some("succeeded"));
    assert!(fake.tokens_issued().await >= 3, "tokens: {}", fake.tokens_issued().await);
    let requests = fake.requests().await;
    assert!(requests.iter().filter(|r| r.path.ends_with("/sessions") && r.method == "POST").count() >= 2);
    runner.shutdown().await;
}

/// The script printing the three annotation commands (shared with the broker test).
pub const ANNOTATING_SCRIPT: &str = "echo '::error file=src/app.rs,line=3,col=5,title=Bad%3A thing::it broke%0Asecond line'\n\
     echo '::warning::careful'\n\
     echo 'plain line'\n\
     echo '::notice file=README.md::fyi'";

#[tokio::test]
async fn workflow_commands_become_timeline_issues() {
    let fake = FakeGithub::start(FakeConfig::default()).await.expect("fake");
    let (_dir, runner) = runner(&fake, "classic-9").await;
    let id = fake.enqueue(job("annotate").run_named("lint", "Lint", ANNOTATING_SCRIPT, None)).await;
    let view = fake.wait_completed(&id, JOB_LIMIT).await.expect("job");
    assert_eq!(view.result.as_deref(), Some("succeeded"), "annotations do not fail a job");
    let record = view.records.values().find(|r| r["name"] == "Lint").expect("step record");
    assert_eq!((record["errorCount"].as_i64(), record["warningCount"].as_i64(), record["noticeCount"].as_i64()), (Some(1), Some(1), Some(1)));
    let issues = record["issues"].as_array().expect("issues");
    let types: Vec<&str> = issues.iter().filter_map(|i| i["type"].as_str()).collect();
    assert_eq!(types, ["error", "warning", "notice"]);
    let error = &issues[0];
    assert_eq!(error["message"], "it broke\nsecond line");
    assert_eq!(error["data"]["file"], "src/app.rs");
    assert_eq!(error["data"]["line"], "3");
    assert_eq!(error["data"]["col"], "5");
    assert_eq!(error["data"]["title"], "Bad: thing");
    assert_eq!(error["data"]["logFileLineNumber"], "1");
    assert_eq!(issues[2]["data"]["file"], "README.md");
    let log = view.step_log("Lint").expect("log");
    let lines: Vec<&str> = log.lines().map(|l| &l[29..]).collect();
    assert_eq!(lines[..5], ["##[error]it broke", "second line", "##[warning]careful", "plain line", "##[notice]fyi"]);
    assert_eq!(issues[1]["data"]["logFileLineNumber"], "3");
    runner.shutdown().await;
}

/// `runner.*` and the `RUNNER_*` variables come from the machine the job runs on, when
/// the step runs: for a host job, this host's own values in GitHub's spelling. Values
/// that read `runner` in a step's `env:` are evaluated then too.
#[tokio::test]
async fn a_host_job_sees_the_hosts_os_and_arch_as_its_runner_context() {
    let fake = FakeGithub::start(FakeConfig::default()).await.expect("fake");
    let (_dir, runner) = runner(&fake, "classic-runner-os").await;
    let (os, arch) = (solstice_core::RunnerInfo::host_os(), solstice_core::RunnerInfo::host_arch());
    let with_env = json!({"type": "action", "name": "__run_3", "contextName": "env", "reference": {"type": "script"},
        "condition": "success()",
        "environment": {"type": 2, "map": [{"Key": "FROM_ENV", "Value": {"type": 3, "expr": "format('{0}-{1}', runner.os, runner.arch)"}}]},
        "inputs": {"type": 2, "map": [{"Key": "script", "Value": "echo \"env=$FROM_ENV\""}]}});
    let id = fake
        .enqueue(
            job("os")
                .run_expr("format('echo \"{0}/{1} $RUNNER_OS/$RUNNER_ARCH\"', runner.os, runner.arch)")
                .run_named("other", "Other OS", "echo not-this-host", Some(&format!("success() && runner.os != '{os}'")))
                .step(with_env),
        )
        .await;
    let view = fake.wait_completed(&id, JOB_LIMIT).await.expect("job");
    let logs = view.all_logs();
    assert_eq!(view.result.as_deref(), Some("succeeded"), "{logs}");
    assert!(logs.lines().any(|l| l.ends_with(&format!(" {os}/{arch} {os}/{arch}"))), "{logs}");
    assert!(logs.lines().any(|l| l.ends_with(&format!(" env={os}-{arch}"))), "{logs}");
    assert!(!logs.contains("not-this-host"), "{logs}");
    let results = view.step_results();
    assert!(results.iter().any(|(name, result)| name == "Other OS" && result == "skipped"), "{results:?}");
    runner.shutdown().await;
}
