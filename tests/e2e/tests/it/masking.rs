//! Issue 16's masking corpus in the tiny VM, through the SSH executor: no form of a
//! secret reaches the job's events. An `::add-mask::` on one stream does not yet always
//! cover the value printed right after it on the other (see the ignored test).

use solstice_core::testing::secret_corpus;
use solstice_core::{Engine, JobEventKind, JobRequest, JobResult, Secret, StepCommand};
use solstice_e2e::{LABEL, hypervisor};
use solstice_vm::SshExecutor;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_form_of_a_secret_leaves_a_vm_job() {
    let run_dir = tempfile::tempdir().expect("tempdir");
    let hypervisor = hypervisor(run_dir.path());
    // Without `-e`: a tool the guest lacks must not hide the forms printed after it.
    let mut print = StepCommand::run("print every form", secret_corpus::script());
    print.env = secret_corpus::env_with_values();
    if let solstice_core::StepAction::Run { shell, .. } = &mut print.action {
        *shell = "bash --noprofile --norc {0}".into();
    }
    let mut job = JobRequest::new("corpus", vec![LABEL.into()], vec![print]);
    job.secrets = secret_corpus::secrets().into_iter().map(|(_, v)| Secret::new(v)).collect();
    let engine = Engine::builder().hypervisor(hypervisor.clone()).executor(SshExecutor::new()).build().expect("engine");
    let (result, lines) = run(engine, job).await;
    let text = lines.join("\n");
    assert_eq!(result, JobResult::Success, "{text}");
    for expected in ["plain: ***", "plain on stderr: ***", "after add-mask: ***", "on stderr: ***", "overlap: ***", "cr: ***"] {
        assert!(lines.iter().any(|l| l == expected), "no line `{expected}` in:\n{text}");
    }
    let leaks = secret_corpus::leaks(&text);
    assert!(leaks.is_empty(), "forms leaked from the VM: {leaks:?}\n{text}");
}

async fn run(engine: Engine, job: JobRequest) -> (JobResult, Vec<String>) {
    let (result, events) = engine.run_job_collect(job).await;
    let lines = events
        .iter()
        .filter_map(|e| match &e.kind {
            JobEventKind::Log { line, .. } => Some(line.clone()),
            _ => None,
        })
        .collect();
    (result, lines)
}

// Issue 16 item 4 in a VM. The host reads what the guest's SSH server forwarded from
// both streams together, `::add-mask::` first, but the SSH server reads the two pipes
// itself and may forward a stderr line before the stdout line written earlier: on
// 2026-12-06, 4 runs of 5 had no leak and one had 25 of 200. Fixing it needs one
// ordered pipe from the guest (a helper that tags stderr lines), which is not done yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "known gap: stream order across the guest's SSH server (docs/security.md)"]
async fn add_mask_on_stdout_covers_stderr_in_a_vm() {
    let run_dir = tempfile::tempdir().expect("tempdir");
    let hypervisor = hypervisor(run_dir.path());
    let ordering = StepCommand::run(
        "ordering",
        "for i in $(seq 200); do\n  echo \"::add-mask::order-$i-Sec\"\"ret\"\n  echo \"value order-$i-Sec\"\"ret\" >&2\ndone",
    );
    let job = JobRequest::new("ordering", vec![LABEL.into()], vec![ordering]);
    let engine = Engine::builder().hypervisor(hypervisor.clone()).executor(SshExecutor::new()).build().expect("engine");
    let (result, lines) = run(engine, job).await;
    assert_eq!(result, JobResult::Success);
    let leaked: Vec<&String> = lines.iter().filter(|l| l.contains("-Secret")).collect();
    assert!(leaked.is_empty(), "{} of 200 add-mask values leaked across streams, e.g. {:?}", leaked.len(), leaked.first());
}
