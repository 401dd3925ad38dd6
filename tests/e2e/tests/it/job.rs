//! A multi-step job through the engine, and the executor's streaming, cancellation
//! and checkout on a live machine.

use std::time::{Duration, Instant};

use solstice_core::{
    AnnotationLevel, CheckoutSource, CheckoutStep, Engine, JobEventKind, JobRequest, JobResult, LogSink, LogStream, ScriptRun,
    StepAction, StepCommand, StepExecutor,
};
use solstice_e2e::{LABEL, boot, hypervisor};
use solstice_vm::SshExecutor;
use solstice_vm::qemu::StopOutcome;
use tokio_util::sync::CancellationToken;

fn sh(name: &str, script: &str) -> StepCommand {
    let mut step = StepCommand::run(name, script);
    if let StepAction::Run { shell, .. } = &mut step.action {
        *shell = "sh -e {0}".into();
    }
    step
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_in_a_fresh_vm_and_leaves_nothing_behind() {
    let run_dir = tempfile::tempdir().expect("tempdir");
    let hypervisor = hypervisor(run_dir.path());
    let repo = tempfile::tempdir().expect("tempdir");
    std::fs::write(repo.path().join("README.md"), "hello from the repository\n").expect("write");
    std::fs::create_dir(repo.path().join("src")).expect("mkdir");
    std::fs::write(repo.path().join("src/main.sh"), "echo built\n").expect("write");

    let mut timeout_step = sh("times out", "echo sleeping; sleep 600");
    timeout_step.timeout = Some(Duration::from_secs(3));
    timeout_step.continue_on_error = true;
    let mut steps = vec![
        StepCommand { action: StepAction::Checkout(CheckoutStep::default()), ..StepCommand::run("checkout", "") },
        // The default shell is bash, which the test guest has, as cloud images do.
        StepCommand::run(
            "greet",
            "echo \"hello from $(uname -s) in $PWD\"\necho to-stderr >&2\necho answer=42 >> \"$GITHUB_OUTPUT\"\necho FOO=bar >> \"$GITHUB_ENV\"\nmkdir -p /opt/tool && echo /opt/tool >> \"$GITHUB_PATH\"",
        ),
        sh("sees env and path", "echo \"FOO=$FOO\"; case \":$PATH:\" in *:/opt/tool:*) echo path-ok;; esac; cat README.md; sh src/main.sh"),
        sh("working directory", "pwd"),
        timeout_step,
        sh("fails", "echo about to fail; exit 3"),
    ];
    steps[3].working_directory = Some("src".into());
    let mut always = sh("cleanup", "echo cleanup ran");
    always.condition = Some("always()".into());
    steps.push(always);
    let mut job = JobRequest::new("e2e", vec![LABEL.into()], steps);
    job.checkout = Some(CheckoutSource::LocalDir { path: repo.path().to_string_lossy().into_owned() });

    let engine = Engine::builder().hypervisor(hypervisor.clone()).executor(SshExecutor::new()).build().expect("engine");
    let started = Instant::now();
    let (result, events) = engine.run_job_collect(job).await;
    let lines: Vec<(Option<usize>, LogStream, String)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            JobEventKind::Log { step, stream, line } => Some((*step, *stream, line.clone())),
            _ => None,
        })
        .collect();
    let text: Vec<String> = lines.iter().map(|(s, k, l)| format!("{s:?} {k:?} {l}")).collect();
    let dump = text.join("\n");
    let has = |step: usize, stream: LogStream, needle: &str| {
        lines.iter().any(|(s, k, l)| *s == Some(step) && *k == stream && l.contains(needle))
    };
    assert_eq!(result, JobResult::Failure, "step 5 exits 3\n{dump}");
    assert!(lines.iter().any(|(_, _, l)| l.contains("solstice-guest: sshd started")), "boot console missing\n{dump}");
    assert!(lines.iter().any(|(_, _, l)| l.starts_with("##[group]Boot console")), "{dump}");
    assert!(has(1, LogStream::Stdout, "hello from Linux in /root/work"), "{dump}");
    // A step's stderr reaches the log in order with its stdout, through one pipe from the
    // guest (see `SshExecutor`: the order matters for `::add-mask::`).
    assert!(has(1, LogStream::Stdout, "to-stderr"), "{dump}");
    assert!(has(2, LogStream::Stdout, "FOO=bar"), "{dump}");
    assert!(has(2, LogStream::Stdout, "path-ok"), "{dump}");
    assert!(has(2, LogStream::Stdout, "hello from the repository"), "{dump}");
    assert!(has(2, LogStream::Stdout, "built"), "{dump}");
    assert!(has(3, LogStream::Stdout, "/root/work/src"), "{dump}");
    assert!(has(4, LogStream::Stdout, "sleeping"), "{dump}");
    assert!(has(6, LogStream::Stdout, "cleanup ran"), "{dump}");
    let finished: Vec<(usize, JobResult, Option<i32>)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            JobEventKind::StepFinished { index, outcome, exit_code, .. } => Some((*index, *outcome, *exit_code)),
            _ => None,
        })
        .collect();
    assert!(finished.contains(&(1, JobResult::Success, Some(0))), "{finished:?}");
    assert!(finished.iter().any(|(i, o, c)| *i == 4 && *o == JobResult::Failure && c.is_none()), "timeout: {finished:?}");
    assert!(finished.contains(&(5, JobResult::Failure, Some(3))), "{finished:?}");
    let outputs = events.iter().find_map(|e| match &e.kind {
        JobEventKind::StepFinished { index: 1, outputs, .. } => Some(outputs.clone()),
        _ => None,
    });
    assert_eq!(outputs.and_then(|o| o.get("answer").cloned()).as_deref(), Some("42"));
    assert_eq!(hypervisor.live_machines(), 0, "the machine must be destroyed");
    let left: Vec<_> = std::fs::read_dir(run_dir.path()).expect("run dir").filter_map(Result::ok).map(|e| e.path()).collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
    eprintln!("job with boot took {:.1} s", started.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_stream_live_cancel_kills_the_process_group_and_the_guest_powers_off() {
    let run_dir = tempfile::tempdir().expect("tempdir");
    let hypervisor = hypervisor(run_dir.path());
    let (machine, _) = boot(&hypervisor).await;
    let dir = hypervisor.machine_dir(&machine.id).expect("live machine has a directory");
    let pid = hypervisor.machine_pid(&machine.id).expect("pid");
    for file in ["seed.iso", "qmp.sock", "console.log"] {
        assert!(dir.join(file).exists(), "{file} missing in {}", dir.display());
    }
    let executor = SshExecutor::new();
    let step = |index: usize, script: &str| ScriptRun {
        index,
        script: script.into(),
        shell: "sh -e {0}".into(),
        env: [("GREETING".to_owned(), "it's \"quoted\" $HOME".to_owned())].into_iter().collect(),
        working_directory: None,
        path: Vec::new(),
    };

    // Streaming: the first line arrives while the step still runs.
    let (sink, mut rx) = LogSink::channel(64);
    let streaming = step(0, "echo \"$GREETING\"; echo first; sleep 4; echo second");
    let never = CancellationToken::new();
    let run = executor.run_script(&machine, &streaming, &sink, &never);
    tokio::pin!(run);
    let first = tokio::select! {
        line = async {
            while let Some(l) = rx.recv().await {
                if l.line == "first" {
                    return Some(l);
                }
            }
            None
        } => line.expect("the output channel closed before `first`"),
        exit = &mut run => panic!("the step ended before its first line was seen: {exit:?}"),
    };
    assert_eq!(first.stream, LogStream::Stdout);
    let exit = run.await.expect("step runs");
    assert_eq!(exit.exit_code, Some(0));
    let mut rest = Vec::new();
    while let Ok(l) = rx.try_recv() {
        rest.push(l.line);
    }
    assert!(rest.contains(&"second".to_owned()), "{rest:?}");

    // Env values with quotes and dollars arrive verbatim.
    let (sink, mut rx) = LogSink::channel(64);
    executor.run_script(&machine, &step(1, "printf '%s\\n' \"$GREETING\""), &sink, &CancellationToken::new()).await.expect("step");
    assert_eq!(rx.recv().await.map(|l| l.line).as_deref(), Some("it's \"quoted\" $HOME"));

    // Cancellation kills the whole process group, background children included.
    let cancel = CancellationToken::new();
    let (sink, _rx) = LogSink::channel(64);
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let exit = executor
        .run_script(&machine, &step(2, "sleep 1001 & sleep 1002 & sleep 1003"), &sink, &cancel)
        .await
        .expect("cancelled step");
    assert_eq!(exit.exit_code, None);
    assert!(started.elapsed() < Duration::from_secs(20), "cancellation took {:?}", started.elapsed());
    let (sink, mut rx) = LogSink::channel(64);
    executor
        .run_script(&machine, &step(3, "ps | grep 'sleep 100[123]' | grep -v grep | wc -l"), &sink, &CancellationToken::new())
        .await
        .expect("ps");
    assert_eq!(rx.recv().await.map(|l| l.line.trim().to_owned()).as_deref(), Some("0"), "sleeps survived the cancel");

    // Graceful stop: the power button powers the guest off; every file goes away.
    let outcome = hypervisor.stop(&machine.id).await.expect("stop");
    assert_eq!(outcome, StopOutcome::PoweredOff);
    assert!(!dir.exists(), "{} still exists", dir.display());
    let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
    assert!(!alive, "QEMU pid {pid} still exists");
    assert_eq!(hypervisor.live_machines(), 0);
}

/// Workflow commands and command files through the SSH executor: the engine processes
/// them, so a VM job behaves as a host job does. Checked against GitHub's "Workflow
/// commands for GitHub Actions" page: `::set-output` sets `steps.<id>.outputs`,
/// `$GITHUB_ENV` multi-line values and `$GITHUB_PATH` reach the following steps, and
/// `::error file=…,line=…` is an annotation shown as `##[error]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_commands_and_command_files_work_in_the_vm() {
    let run_dir = tempfile::tempdir().expect("tempdir");
    let hypervisor = hypervisor(run_dir.path());
    let mut first = sh(
        "write",
        "echo '::set-output name=greeting::hi from the guest'\n\
         { echo 'MULTI<<EOF'; echo 'one'; echo 'two'; echo EOF; } >> \"$GITHUB_ENV\"\n\
         mkdir -p /opt/cmd-tool && echo /opt/cmd-tool >> \"$GITHUB_PATH\"\n\
         echo '::error file=build.sh,line=7::it broke'",
    );
    first.id = Some("write".into());
    let second = sh("read", "echo \"got ${{ steps.write.outputs.greeting }}\"\necho \"$MULTI\"\ncase \":$PATH:\" in *:/opt/cmd-tool:*) echo path-ok;; esac");
    let job = JobRequest::new("e2e-commands", vec![LABEL.into()], vec![first, second]);
    let engine = Engine::builder().hypervisor(hypervisor.clone()).executor(SshExecutor::new()).build().expect("engine");
    let (result, events) = engine.run_job_collect(job).await;
    let lines: Vec<(Option<usize>, String)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            JobEventKind::Log { step, line, .. } => Some((*step, line.clone())),
            _ => None,
        })
        .collect();
    let dump = lines.iter().map(|(s, l)| format!("{s:?} {l}")).collect::<Vec<_>>().join("\n");
    assert_eq!(result, JobResult::Success, "{dump}");
    let step = |i: usize| lines.iter().filter(|(s, _)| *s == Some(i)).map(|(_, l)| l.as_str()).collect::<Vec<_>>();
    assert!(step(0).contains(&"##[error]it broke"), "{dump}");
    assert!(!step(0).iter().any(|l| l.starts_with("::")), "commands are not shown as typed\n{dump}");
    assert_eq!(step(1)[..4], ["got hi from the guest", "one", "two", "path-ok"], "{dump}");
    let annotation = events.iter().find_map(|e| match &e.kind {
        JobEventKind::Annotation { step: Some(0), annotation } if annotation.level == AnnotationLevel::Error => Some(annotation.clone()),
        _ => None,
    });
    let annotation = annotation.expect("annotation");
    assert_eq!((annotation.file.as_deref(), annotation.line, annotation.message.as_str()), (Some("build.sh"), Some(7), "it broke"));
    assert_eq!(hypervisor.live_machines(), 0);
}

/// The run-time part of a job in the guest, as on GitHub: the event payload is a file at
/// `GITHUB_EVENT_PATH` before the first step (docs, default environment variables;
/// actions/runner writes `<RUNNER_TEMP>/_github_workflow/event.json`), a `$GITHUB_ENV`
/// write overrides the job's `env:` for later steps ("Store information in variables"),
/// and `$GITHUB_OUTPUT` feeds `steps.<id>.outputs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_file_env_overrides_and_step_outputs_work_in_the_vm() {
    let run_dir = tempfile::tempdir().expect("tempdir");
    let hypervisor = hypervisor(run_dir.path());
    let mut probe = sh(
        "probe",
        "grep -q '\"number\":7' \"$GITHUB_EVENT_PATH\" && echo event-found\n\
         echo \"level=$LEVEL\"\n\
         echo LEVEL=from-github-env >> \"$GITHUB_ENV\"\n\
         echo word=guest >> \"$GITHUB_OUTPUT\"",
    );
    probe.id = Some("probe".into());
    let read = sh("read", "echo \"level=$LEVEL word=${{ steps.probe.outputs.word }} path=${{ github.event_path }}\"");
    let mut job = JobRequest::new("e2e-runtime", vec![LABEL.into()], vec![probe, read]);
    job.env.insert("LEVEL".into(), "job".into());
    job.contexts.insert("github".into(), serde_json::json!({ "event_name": "pull_request", "event": { "number": 7 } }));
    let engine = Engine::builder().hypervisor(hypervisor.clone()).executor(SshExecutor::new()).build().expect("engine");
    let (result, events) = engine.run_job_collect(job).await;
    let lines: Vec<(Option<usize>, String)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            JobEventKind::Log { step, line, .. } => Some((*step, line.clone())),
            _ => None,
        })
        .collect();
    let dump = lines.iter().map(|(s, l)| format!("{s:?} {l}")).collect::<Vec<_>>().join("\n");
    assert_eq!(result, JobResult::Success, "{dump}");
    let step = |i: usize| lines.iter().filter(|(s, _)| *s == Some(i)).map(|(_, l)| l.as_str()).collect::<Vec<_>>();
    assert_eq!(step(0)[..2], ["event-found", "level=job"], "{dump}");
    let read = step(1).first().copied().unwrap_or_default();
    let path = read.strip_prefix("level=from-github-env word=guest path=").unwrap_or_else(|| panic!("{dump}"));
    assert!(path.starts_with('/') && path.ends_with("/_github_workflow/event.json"), "{dump}");
    assert_eq!(hypervisor.live_machines(), 0);
}
