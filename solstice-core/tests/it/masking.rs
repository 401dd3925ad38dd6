//! Issue 16's masking corpus through the host executor, with the service's own logs
//! captured at `trace` level: no form of any secret reaches a job event or a log line.
//!
//! The forms are those GitHub's runner masks (actions/runner
//! `src/Sdk/DTLogging/Logging/ValueEncoders.cs`, `SecretMasker.cs`,
//! `src/Runner.Worker/ActionCommandManager.cs` for `::add-mask::`).

use solstice_core::testing::secret_corpus;
use solstice_core::{Engine, HostExecutor, HostHypervisor, JobEvent, JobEventKind, JobRequest, JobResult, Secret, StepCommand};

fn host_engine(hv: &HostHypervisor) -> Engine {
    Engine::builder().hypervisor(hv.clone()).executor(HostExecutor::new()).build().expect("engine")
}

/// Everything of the events that leaves the engine as text: log lines, annotations,
/// step names, step outputs.
fn reported_text(events: &[JobEvent]) -> String {
    let mut text = String::new();
    for event in events {
        match &event.kind {
            JobEventKind::Log { line, .. } => text.push_str(line),
            JobEventKind::Annotation { annotation, .. } => {
                text.push_str(&annotation.message);
                text.push_str(annotation.title.as_deref().unwrap_or_default());
            }
            JobEventKind::StepStarted { name, .. } => text.push_str(name),
            JobEventKind::StepFinished { outputs, .. } => {
                for value in outputs.values() {
                    text.push_str(value);
                    text.push('\n');
                }
            }
            _ => {}
        }
        text.push('\n');
    }
    text
}

fn corpus_job() -> JobRequest {
    let mut print = StepCommand::run("print every form", secret_corpus::script());
    print.env = secret_corpus::env_with_values();
    // A step output that holds a secret, a step name built from one, and an `env:`
    // expression that fails on one (its message quotes the value).
    let mut output = StepCommand::run("output", "echo \"out=$MASK_PLAIN\" >> \"$GITHUB_OUTPUT\"");
    output.id = Some("output".into());
    output.env = secret_corpus::env_with_values();
    let named = StepCommand::run("deploy to ${{ secrets.MASK_PLAIN }}", "true");
    let mut bad_env = StepCommand::run("bad env", "true");
    bad_env.env.insert("BAD".into(), "${{ fromJSON(secrets.MASK_PLAIN) }}".into());
    bad_env.continue_on_error = true;
    let mut job = JobRequest::new("corpus", vec!["host".into()], vec![print, output, named, bad_env]);
    job.secrets = secret_corpus::secrets().into_iter().map(|(_, v)| Secret::new(v)).collect();
    let context: serde_json::Map<_, _> =
        secret_corpus::secrets().into_iter().map(|(k, v)| (k.to_owned(), serde_json::Value::String(v))).collect();
    job.contexts.insert("secrets".into(), serde_json::Value::Object(context));
    job
}

#[tokio::test]
async fn no_form_of_a_secret_leaves_a_host_job_or_the_service_log() {
    let traces = secret_corpus::capture_traces();
    tracing::trace!("trace capture is on");
    let hv = HostHypervisor::new();
    let (result, events) = host_engine(&hv).run_job_collect(corpus_job()).await;
    let text = reported_text(&events);
    assert_eq!(result, JobResult::Success, "{text}");
    // The script ran to its end and its lines were masked, not lost.
    for expected in ["plain: ***", "plain on stderr: ***", "after add-mask: ***", "on stderr: ***", "overlap: ***", "cr: ***", "trailing: ***."] {
        assert!(text.lines().any(|l| l == expected), "no line `{expected}` in:\n{text}");
    }
    assert!(text.contains("deploy to ***"), "{text}");
    assert!(text.contains("could not be evaluated"), "the bad env step did not fail as expected:\n{text}");
    let leaks = secret_corpus::leaks(&text);
    assert!(leaks.is_empty(), "forms leaked into the job's events: {leaks:?}\n{text}");
    let logged = traces.text();
    assert!(logged.contains("trace capture is on"), "the trace capture is not installed");
    let leaks = secret_corpus::leaks(&logged);
    assert!(leaks.is_empty(), "forms leaked into the service log: {leaks:?}");
}

// Issue 16 item 4: `::add-mask::VALUE` on one stream, then VALUE on the other, leaked
// 198 times in 200. The runner processes both streams' lines in one place
// (`ScriptHandler.cs` hands both to `OutputManager.OnDataReceived`).
#[tokio::test]
async fn add_mask_on_one_stream_masks_the_other_stream_at_once() {
    let script = "for i in $(seq 200); do\n  echo \"::add-mask::order-$i-Sec\"\"ret\"\n  echo \"value order-$i-Sec\"\"ret\" >&2\n  echo \"::add-mask::reverse-$i-Sec\"\"ret\" >&2\n  echo \"value reverse-$i-Sec\"\"ret\"\ndone";
    let hv = HostHypervisor::new();
    let job = JobRequest::new("ordering", vec!["host".into()], vec![StepCommand::run("race", script)]);
    let (result, events) = host_engine(&hv).run_job_collect(job).await;
    assert_eq!(result, JobResult::Success);
    let text = reported_text(&events);
    let leaked: Vec<&str> = text.lines().filter(|l| l.contains("-Secret")).collect();
    assert!(leaked.is_empty(), "{} of 400 values leaked, e.g. {:?}", leaked.len(), leaked.first());
    assert_eq!(text.lines().filter(|l| *l == "value ***").count(), 400, "{text}");
}

// The corpus is not vacuous: unmasked, the script prints every form it claims to test.
#[test]
fn the_corpus_script_prints_every_form_when_nothing_masks_it() {
    let out = std::process::Command::new("bash")
        .args(["-c", &secret_corpus::script()])
        .envs(secret_corpus::env_with_values())
        .output()
        .expect("bash");
    let raw = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let printed = secret_corpus::leaks(&raw);
    let all: Vec<&str> = secret_corpus::needles().into_iter().map(|(form, _)| form).collect();
    assert_eq!(printed, all, "{raw}");
}
