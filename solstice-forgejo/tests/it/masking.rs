//! Issue 16's masking corpus through the Forgejo runner against the fake Forgejo, with
//! the service's logs captured at `trace` level: no form of a secret reaches Forgejo
//! (log rows, job outputs) or a service log line.

use solstice_core::testing::secret_corpus;
use solstice_forgejo_fake::{FakeForgejo, JobSpec, Status};

use crate::support::{Runner, WAIT};

/// The corpus script as a job whose step reads the secrets from its `env:`, plus job
/// outputs that hold a secret (GitHub's runner drops those: `JobExtension.cs`) and a
/// step whose name is built from one.
fn workflow() -> String {
    let env: String = secret_corpus::env_from_secrets_context()
        .iter()
        .map(|(name, value)| format!("          {name}: {value}\n"))
        .collect();
    let script: String = secret_corpus::script().lines().map(|l| format!("          {l}\n")).collect();
    format!(
        "name: ci\non: push\njobs:\n  build:\n    name: build\n    runs-on: host\n    outputs:\n      leaked: ${{{{ secrets.MASK_PLAIN }}}}\n      embedded: ${{{{ format('x{{0}}y', secrets.MASK_B64) }}}}\n      broken: ${{{{ fromJSON(secrets.MASK_PLAIN) }}}}\n      fine: ok\n    steps:\n      - name: print every form\n        env:\n{env}        run: |\n{script}      - name: deploy to ${{{{ secrets.MASK_PLAIN }}}}\n        run: echo named\n"
    )
}

#[tokio::test]
async fn no_form_of_a_secret_reaches_forgejo_or_the_service_log() {
    let traces = secret_corpus::capture_traces();
    tracing::trace!("trace capture is on");
    let fake = FakeForgejo::start().await.unwrap();
    let runner = Runner::start(&fake).await;
    let mut spec = JobSpec::new("build", &workflow());
    for (name, value) in secret_corpus::secrets() {
        spec = spec.secret(name, &value);
    }
    let job = fake.enqueue(spec);
    let task = fake.wait_job_done(job, WAIT).await.expect("task done");
    let log = fake.log(task.id).join("\n");
    assert_eq!(task.status, Status::Success, "{log}");
    for expected in ["plain: ***", "after add-mask: ***", "on stderr: ***", "overlap: ***", "named"] {
        assert!(log.lines().any(|l| l == expected), "no row `{expected}` in:\n{log}");
    }
    assert!(log.contains("Skip output 'leaked' since it may contain secret."), "{log}");
    assert!(log.contains("Skip output 'embedded' since it may contain secret."), "{log}");
    assert!(log.contains("`broken` could not be evaluated"), "{log}");
    assert_eq!(task.outputs.keys().collect::<Vec<_>>(), ["fine"], "{:?}", task.outputs);
    let leaks = secret_corpus::leaks(&log);
    assert!(leaks.is_empty(), "forms reached Forgejo's log: {leaks:?}\n{log}");
    let logged = traces.text();
    assert!(logged.contains("trace capture is on"), "the trace capture is not installed");
    let leaks = secret_corpus::leaks(&logged);
    assert!(leaks.is_empty(), "forms reached the service log: {leaks:?}");
    runner.stop().await.unwrap();
}
