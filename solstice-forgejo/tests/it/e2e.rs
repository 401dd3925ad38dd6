//! End to end: fake Forgejo ← ForgejoSource ← serve_source → MemoryQueue → Engine (host).

use std::time::Duration;

use solstice_forgejo::Procedure;
use solstice_forgejo_fake::{FakeForgejo, JobSpec, Status};

use crate::support::{Runner, WAIT, output, payload};

#[tokio::test]
async fn a_job_runs_and_forgejo_gets_every_line_in_order_with_step_states() {
    let fake = FakeForgejo::start().await.unwrap();
    let runner = Runner::start(&fake).await;
    let steps = "      - name: greet\n        run: |\n          echo one\n          echo two\n      - name: count\n        run: for i in $(seq 1 200); do echo line $i; done\n";
    let job = fake.enqueue(JobSpec::new("build", &payload(steps)));
    let task = fake.wait_job_done(job, WAIT).await.expect("task done");
    assert_eq!(task.status, Status::Success);
    assert_eq!(task.steps.iter().map(|s| s.status).collect::<Vec<_>>(), [Some(Status::Success); 2]);
    assert_eq!(task.log_closed_before_final, Some(true), "UpdateLog(no_more) must come before the final UpdateTask");

    let log = fake.log(task.id);
    assert!(log[0].contains("received task"), "{log:?}");
    let greet = fake.step_log(task.id, 0);
    assert_eq!(output(&greet), ["one", "two"]);
    let count = output(&fake.step_log(task.id, 1));
    let expected: Vec<String> = (1..=200).map(|i| format!("line {i}")).collect();
    assert_eq!(count, expected);
    // Steps' slices are contiguous and inside the log.
    let (s0, s1) = (&task.steps[0], &task.steps[1]);
    assert!(s0.log_index > 0 && s0.log_index + s0.log_length <= s1.log_index);
    assert!(s1.log_index + s1.log_length <= log.len() as i64);
    assert!(s0.started > 0 && s0.stopped >= s0.started);
    runner.stop().await.unwrap();
}

#[tokio::test]
async fn a_failing_step_fails_the_task_and_skips_the_rest() {
    let fake = FakeForgejo::start().await.unwrap();
    let runner = Runner::start(&fake).await;
    let steps = "      - run: echo before; exit 3\n      - run: echo never\n      - if: failure()\n        run: echo cleanup\n";
    let job = fake.enqueue(JobSpec::new("build", &payload(steps)));
    let task = fake.wait_job_done(job, WAIT).await.expect("task done");
    assert_eq!(task.status, Status::Failure);
    let states: Vec<_> = task.steps.iter().map(|s| s.status).collect();
    assert_eq!(states, [Some(Status::Failure), Some(Status::Skipped), Some(Status::Success)]);
    let log = fake.log(task.id);
    assert!(log.iter().any(|l| l.contains("exit code 3")), "{log:?}");
    assert!(!log.iter().any(|l| l == "never"));
    assert_eq!(output(&fake.step_log(task.id, 2)), ["cleanup"]);
    runner.stop().await.unwrap();
}

#[tokio::test]
async fn continue_on_error_keeps_the_job_green_but_shows_the_failed_step() {
    let fake = FakeForgejo::start().await.unwrap();
    let runner = Runner::start(&fake).await;
    let steps = "      - run: exit 1\n        continue-on-error: true\n      - run: echo after\n";
    let job = fake.enqueue(JobSpec::new("build", &payload(steps)));
    let task = fake.wait_job_done(job, WAIT).await.expect("task done");
    assert_eq!(task.status, Status::Success);
    assert_eq!(task.steps[0].status, Some(Status::Failure));
    assert_eq!(task.steps[1].status, Some(Status::Success));
    assert_eq!(output(&fake.step_log(task.id, 1)), ["after"]);
    runner.stop().await.unwrap();
}

#[tokio::test]
async fn a_matrix_job_arrives_as_separate_tasks() {
    let fake = FakeForgejo::start().await.unwrap();
    let runner = Runner::start(&fake).await;
    let mut jobs = Vec::new();
    for os in ["omnios", "freebsd"] {
        let yaml = format!(
            "name: ci\non: push\njobs:\n  build:\n    name: build ({os})\n    runs-on: host\n    strategy:\n      matrix:\n        os: [{os}]\n    steps:\n      - run: echo building for ${{{{ matrix.os }}}}\n"
        );
        jobs.push((os, fake.enqueue(JobSpec::new("build", &yaml))));
    }
    for (os, job) in jobs {
        let task = fake.wait_job_done(job, WAIT).await.expect("task done");
        assert_eq!(task.status, Status::Success);
        assert_eq!(output(&fake.step_log(task.id, 0)), [format!("building for {os}")]);
    }
    assert_eq!(fake.task_ids().len(), 2);
    runner.stop().await.unwrap();
}

#[tokio::test]
async fn secrets_and_the_task_token_are_masked() {
    let fake = FakeForgejo::start().await.unwrap();
    let runner = Runner::start(&fake).await;
    let steps = "      - run: |\n          echo \"deploy with ${{ secrets.DEPLOY_KEY }}\"\n          echo \"token ${{ secrets.GITHUB_TOKEN }} / ${{ github.token }}\"\n          echo \"::add-mask::extra-value\"\n          echo \"then extra-value\"\n";
    let job = fake.enqueue(JobSpec::new("build", &payload(steps)).secret("DEPLOY_KEY", "hunter2-s3cr3t"));
    let task = fake.wait_job_done(job, WAIT).await.expect("task done");
    assert_eq!(task.status, Status::Success);
    let log = fake.log(task.id);
    assert!(log.iter().all(|l| !l.contains("hunter2-s3cr3t") && !l.contains(&task.token) && !l.contains("extra-value")), "{log:?}");
    assert_eq!(output(&fake.step_log(task.id, 0)), ["deploy with ***", "token *** / ***", "then ***"]);
    runner.stop().await.unwrap();
}

#[tokio::test]
async fn a_cancellation_from_forgejo_stops_the_job_promptly() {
    let fake = FakeForgejo::start().await.unwrap();
    let runner = Runner::start(&fake).await;
    let steps = "      - run: |\n          echo started\n          sleep 60\n          echo never\n      - if: always()\n        run: echo cleanup ran\n";
    let job = fake.enqueue(JobSpec::new("build", &payload(steps)));
    assert!(fake.wait_until(WAIT, |f| f.job_task(job).is_some_and(|t| f.log(t).iter().any(|l| l == "started"))).await);
    let task_id = fake.job_task(job).unwrap();
    let cancelled_at = std::time::Instant::now();
    fake.cancel_task(task_id);
    assert!(fake.wait_until(WAIT, |f| f.task(task_id).is_some_and(|t| t.archived)).await, "the runner closes the log");
    assert!(cancelled_at.elapsed() < Duration::from_secs(20), "took {:?}", cancelled_at.elapsed());
    let log = fake.log(task_id);
    assert!(log.iter().any(|l| l.contains("cancelled on Forgejo")), "{log:?}");
    assert!(!log.iter().any(|l| l == "never"));
    assert!(log.iter().any(|l| l == "cleanup ran"), "always() steps still run: {log:?}");
    assert_eq!(fake.task(task_id).unwrap().status, Status::Cancelled);
    assert!(fake.wait_until(WAIT, |_| runner.source.active_tasks() == 0).await);
    runner.stop().await.unwrap();
}

#[tokio::test]
async fn a_server_answering_503_for_a_while_loses_nothing() {
    let fake = FakeForgejo::start().await.unwrap();
    let runner = Runner::start(&fake).await;
    let steps = "      - run: for i in $(seq 1 30); do echo line $i; sleep 0.05; done\n";
    let job = fake.enqueue(JobSpec::new("build", &payload(steps)));
    assert!(fake.wait_until(WAIT, |f| f.job_task(job).is_some()).await);
    fake.set_unavailable(true);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    fake.set_unavailable(false);
    let task = fake.wait_job_done(job, WAIT).await.expect("task done");
    assert_eq!(task.status, Status::Success);
    let expected: Vec<String> = (1..=30).map(|i| format!("line {i}")).collect();
    assert_eq!(output(&fake.step_log(task.id, 0)), expected);
    let refused = fake.requests().iter().filter(|r| r.status == 503).count();
    assert!(refused > 0, "the outage was seen");
    runner.stop().await.unwrap();
}

#[tokio::test]
async fn a_malformed_step_fails_the_task_with_the_reason_and_position() {
    let fake = FakeForgejo::start().await.unwrap();
    let runner = Runner::start(&fake).await;
    let steps = "      - run: echo hi\n      - uses: actions/checkout@v4\n        with:\n          fetch-depth: many\n";
    let job = fake.enqueue(JobSpec::new("build", &payload(steps)));
    let task = fake.wait_job_done(job, WAIT).await.expect("task done");
    assert_eq!(task.status, Status::Failure);
    let log = fake.log(task.id);
    let error = log.iter().find(|l| l.contains("fetch-depth") && l.starts_with("##[error]")).expect("error line");
    assert!(error.contains("ci.yml") && error.contains("Line: 9"), "{error}");
    assert!(log.iter().any(|l| l == "  11 |           fetch-depth: many"), "{log:#?}");
    assert!(!log.iter().any(|l| l.starts_with("Job accepted")), "the job never ran");
    assert!(task.steps.iter().all(|s| s.status == Some(Status::Failure) || s.status == Some(Status::Cancelled)));
    runner.stop().await.unwrap();
}

#[tokio::test]
async fn an_action_the_runner_cannot_run_fails_its_step_with_the_reason() {
    let fake = FakeForgejo::start().await.unwrap();
    let runner = Runner::start(&fake).await;
    let steps = "      - run: echo hi\n      - uses: actions/setup-node@v4\n        with:\n          node-version: 20\n";
    let job = fake.enqueue(JobSpec::new("build", &payload(steps)));
    let task = fake.wait_job_done(job, WAIT).await.expect("task done");
    assert_eq!(task.status, Status::Failure);
    assert_eq!(task.steps.iter().map(|s| s.status).collect::<Vec<_>>(), [Some(Status::Success), Some(Status::Failure)]);
    assert_eq!(output(&fake.step_log(task.id, 0)), ["hi"]);
    let log = fake.step_log(task.id, 1);
    assert!(log.iter().any(|l| l.starts_with("##[error]the action 'actions/setup-node@v4' cannot run on Solstice CI yet")), "{log:#?}");
    runner.stop().await.unwrap();
}

#[tokio::test]
async fn job_outputs_reach_dependent_jobs_through_needs() {
    let fake = FakeForgejo::start().await.unwrap();
    let runner = Runner::start(&fake).await;
    let first = "name: ci\non: push\njobs:\n  setup:\n    runs-on: host\n    outputs:\n      version: ${{ steps.v.outputs.version }}\n    steps:\n      - id: v\n        run: echo \"version=1.2.3\" >> \"$GITHUB_OUTPUT\"\n";
    let second = "name: ci\non: push\njobs:\n  build:\n    runs-on: host\n    steps:\n      - run: echo \"building ${{ needs.setup.outputs.version }} after ${{ needs.setup.result }}\"\n";
    let a = fake.enqueue(JobSpec::new("setup", first));
    let b = fake.enqueue(JobSpec::new("build", second).needs(["setup"]));
    let task_a = fake.wait_job_done(a, WAIT).await.expect("setup done");
    assert_eq!(task_a.outputs.get("version").map(String::as_str), Some("1.2.3"));
    let task_b = fake.wait_job_done(b, WAIT).await.expect("build done");
    assert_eq!(output(&fake.step_log(task_b.id, 0)), ["building 1.2.3 after success"]);
    runner.stop().await.unwrap();
}

#[tokio::test]
async fn a_lost_fetch_answer_is_recovered_with_the_same_request_key() {
    let fake = FakeForgejo::start().await.unwrap();
    fake.lose_fetch_answers(1);
    let job = fake.enqueue(JobSpec::new("build", &payload("      - run: echo once\n")));
    let runner = Runner::start(&fake).await;
    let task = fake.wait_job_done(job, WAIT).await.expect("task done");
    assert_eq!(task.status, Status::Success);
    assert_eq!(fake.task_ids(), [task.id], "one task, run once");
    assert!(fake.wait_until(WAIT, |f| f.requests_of(Procedure::FetchTask).len() >= 3).await);
    let fetches = fake.requests_of(Procedure::FetchTask);
    let lost = fetches.iter().position(|r| r.status == 503).expect("a lost answer");
    let key = |i: usize| fetches[i].header("x-runner-request-key").map(str::to_owned);
    assert!(key(lost).is_some());
    assert_eq!(key(lost + 1), key(lost), "the retry reuses the key");
    assert_eq!(fetches[lost + 1].response["tasksVersion"], serde_json::Value::Null, "recovered answers carry version 0");
    assert_ne!(key(lost + 2), key(lost + 1), "a new key after a success");
    runner.stop().await.unwrap();
}

#[tokio::test]
async fn a_false_job_condition_reports_the_task_skipped() {
    let fake = FakeForgejo::start().await.unwrap();
    let runner = Runner::start(&fake).await;
    let yaml = "on: push\njobs:\n  build:\n    runs-on: host\n    if: github.event_name == 'release'\n    steps:\n      - run: echo no\n";
    let job = fake.enqueue(JobSpec::new("build", yaml));
    let task = fake.wait_job_done(job, WAIT).await.expect("task done");
    assert_eq!(task.status, Status::Skipped);
    assert_eq!(task.steps[0].status, Some(Status::Skipped));
    runner.stop().await.unwrap();
}

#[tokio::test]
async fn an_old_server_without_declare_still_runs_jobs() {
    let fake = FakeForgejo::builder().legacy(true).start().await.unwrap();
    let runner = Runner::start(&fake).await;
    let job = fake.enqueue(JobSpec::new("build", &payload("      - run: echo legacy\n")));
    let task = fake.wait_job_done(job, WAIT).await.expect("task done");
    assert_eq!(task.status, Status::Success);
    assert_eq!(fake.requests_of(Procedure::Declare)[0].status, 404);
    runner.stop().await.unwrap();
}

/// `runner.os`, `runner.arch` and the `RUNNER_*` variables come from the machine the job
/// runs on: for a host job, this host's own values in GitHub's spelling.
#[tokio::test]
async fn a_host_job_sees_the_hosts_os_and_arch_as_its_runner_context() {
    let fake = FakeForgejo::start().await.unwrap();
    let runner = Runner::start(&fake).await;
    let (os, arch) = (solstice_core::RunnerInfo::host_os(), solstice_core::RunnerInfo::host_arch());
    let steps = format!(
        "      - run: echo \"${{{{ runner.os }}}}/${{{{ runner.arch }}}} $RUNNER_OS/$RUNNER_ARCH\"\n      - if: runner.os != '{os}'\n        run: echo not-this-host\n      - run: test -d \"$RUNNER_TEMP\" && test -d \"${{{{ runner.tool_cache }}}}\" && echo \"name=$RUNNER_NAME\"\n"
    );
    let job = fake.enqueue(JobSpec::new("build", &payload(&steps)));
    let task = fake.wait_job_done(job, WAIT).await.expect("task done");
    assert_eq!(task.status, Status::Success, "{:?}", fake.log(task.id));
    assert_eq!(output(&fake.step_log(task.id, 0)), [format!("{os}/{arch} {os}/{arch}")]);
    assert_eq!(task.steps[1].status, Some(Status::Skipped), "the condition saw another OS");
    let named = output(&fake.step_log(task.id, 2));
    assert!(named.len() == 1 && named[0].starts_with("name=host-"), "{named:?}");
    runner.stop().await.unwrap();
}
