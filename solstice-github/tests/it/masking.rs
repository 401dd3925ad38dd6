//! Issue 16's masking corpus through the GitHub runner against the fake GitHub, with the
//! service's logs captured at `trace` level: no form of a secret reaches GitHub (logs,
//! live feed, timeline record names, job outputs) or a service log line.

use serde_json::json;
use solstice_core::testing::secret_corpus;
use solstice_github_fake::{FakeConfig, FakeGithub, FakeJob};

use crate::support::{JOB_LIMIT, runner};

#[tokio::test]
async fn no_form_of_a_secret_reaches_github_or_the_service_log() {
    let traces = secret_corpus::capture_traces();
    tracing::trace!("trace capture is on");
    let fake = FakeGithub::start(FakeConfig::default()).await.expect("fake");
    let (_dir, runner) = runner(&fake, "masking-1").await;
    let mut spec = FakeJob::new("corpus").labels(&["self-hosted", "host"]);
    for (name, value) in secret_corpus::secrets() {
        spec = spec.secret(name, &value).env(name, json!({"type": 3, "expr": format!("secrets.{name}")}));
    }
    // A step whose display name GitHub evaluates with the `secrets` context (issue 16
    // item 5), and job outputs that hold a secret, which GitHub's runner drops with a
    // warning (`JobExtension.cs`) instead of sending them.
    let named = json!({
        "type": "action", "name": "__named", "contextName": "named", "reference": {"type": "script"},
        "condition": "success()", "inputs": {"type": 2, "map": [{"Key": "script", "Value": "echo named"}]},
        "displayNameToken": {"type": 3, "expr": "format('deploy to {0}', secrets.MASK_PLAIN)"},
    });
    let outputs = json!({"type": 2, "map": [
        {"Key": "leaked", "Value": {"type": 3, "expr": "secrets.MASK_PLAIN"}},
        {"Key": "embedded", "Value": {"type": 3, "expr": "format('x{0}y', secrets.MASK_B64)"}},
        {"Key": "fine", "Value": "ok"},
    ]});
    let spec = spec.run(&secret_corpus::script()).step(named).outputs(outputs);
    let id = fake.enqueue(spec).await;
    let view = fake.wait_completed(&id, JOB_LIMIT).await.expect("job");
    let logs = view.all_logs();
    assert_eq!(view.result.as_deref(), Some("succeeded"), "{logs}");
    for expected in ["plain: ***", "after add-mask: ***", "on stderr: ***", "overlap: ***", "named"] {
        assert!(logs.lines().any(|l| l.ends_with(&format!(" {expected}")) || l == expected), "no line `{expected}` in:\n{logs}");
    }
    assert!(logs.contains("Skip output 'leaked' since it may contain secret."), "{logs}");
    assert!(logs.contains("Skip output 'embedded' since it may contain secret."), "{logs}");
    let names: Vec<String> = view.step_results().into_iter().map(|(name, _)| name).collect();
    assert!(names.contains(&"deploy to ***".to_owned()), "{names:?}");
    let completion = view.completion.clone().expect("completion");
    assert_eq!(completion["outputs"], json!({"fine": {"value": "ok", "isSecret": false}}), "{completion}");
    let reported = format!("{logs}\n{}\n{completion}", names.join("\n"));
    let leaks = secret_corpus::leaks(&reported);
    assert!(leaks.is_empty(), "forms reached GitHub: {leaks:?}\n{reported}");
    let logged = traces.text();
    assert!(logged.contains("trace capture is on"), "the trace capture is not installed");
    let leaks = secret_corpus::leaks(&logged);
    assert!(leaks.is_empty(), "forms reached the service log: {leaks:?}");
    runner.shutdown().await;
}
