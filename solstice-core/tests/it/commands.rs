//! Workflow commands and command files, end to end through the engine with real
//! processes on the host. Each test cites what it checks against: GitHub's
//! "Workflow commands for GitHub Actions" page
//! (https://docs.github.com/actions/reference/workflow-commands-for-github-actions) or
//! the runner's source (actions/runner, `src/Runner.Worker/ActionCommandManager.cs` and
//! `src/Runner.Worker/FileCommandManager.cs`).

use std::collections::BTreeMap;

use solstice_core::{
    Annotation, AnnotationLevel, Engine, HostExecutor, HostHypervisor, JobEvent, JobEventKind, JobRequest, JobResult, StepCommand,
};

use crate::support::*;

async fn run(steps: Vec<StepCommand>, env: &[(&str, &str)]) -> (JobResult, Vec<JobEvent>) {
    let engine = Engine::builder().hypervisor(HostHypervisor::new()).executor(HostExecutor::new()).build().expect("engine");
    let mut job = JobRequest::new("commands", vec!["host".into()], steps);
    job.env.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let (result, events) = engine.run_job_collect(job).await;
    assert_well_formed(&events);
    (result, events)
}

fn with_id(id: &str, script: &str) -> StepCommand {
    let mut step = StepCommand::run(id, script);
    step.id = Some(id.to_owned());
    step
}

fn outputs(events: &[JobEvent], step: usize) -> BTreeMap<String, String> {
    events
        .iter()
        .find_map(|e| match &e.kind {
            JobEventKind::StepFinished { index, outputs, .. } if *index == step => Some(outputs.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

// Docs, "Setting an output parameter": `::set-output` is deprecated but the runner still
// sets the output (SetOutputCommandExtension) and warns.
#[tokio::test]
async fn set_output_feeds_the_steps_context() {
    let (result, events) = run(
        vec![with_id("a", "echo '::set-output name=greeting::hello%0Aworld'"), StepCommand::run("b", "echo \"got ${{ steps.a.outputs.greeting }}\"")],
        &[],
    )
    .await;
    assert_eq!(result, JobResult::Success, "{:#?}", log_lines(&events));
    assert_eq!(outputs(&events, 0).get("greeting").map(String::as_str), Some("hello\nworld"));
    assert_eq!(step_lines(&events, 1)[..2], ["got hello", "world"]);
    let first = step_lines(&events, 0);
    assert!(!first.iter().any(|l| l.contains("::set-output")), "echo is off by default: {first:?}");
    assert!(first.iter().any(|l| l.starts_with("##[warning]The `set-output` command is deprecated")), "{first:?}");
}

// Docs, "Multiline strings": `name<<DELIMITER` blocks in $GITHUB_OUTPUT; the step's
// outputs are what `needs.<job>.outputs` is evaluated from.
#[tokio::test]
async fn multi_line_outputs_from_github_output() {
    let script = "{ echo 'notes<<EOF'; echo 'line 1'; echo 'line=2'; echo EOF; echo 'single=x'; } >> \"$GITHUB_OUTPUT\"";
    let (result, events) = run(vec![with_id("out", script)], &[]).await;
    assert_eq!(result, JobResult::Success, "{:#?}", log_lines(&events));
    let found = outputs(&events, 0);
    assert_eq!(found.get("notes").map(String::as_str), Some("line 1\nline=2"));
    assert_eq!(found.get("single").map(String::as_str), Some("x"));
}

// Docs, "Adding a system path": the directory is on PATH for subsequent steps only.
#[tokio::test]
async fn github_path_reaches_the_next_step_only() {
    let tools = tempfile::tempdir().expect("tempdir");
    let tool = tools.path().join("solstice-probe-tool");
    std::fs::write(&tool, "#!/bin/sh\necho probe-ran\n").expect("tool");
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let dir = tools.path().display().to_string();
    let (result, events) = run(
        vec![
            StepCommand::run("add", format!("echo '{dir}' >> \"$GITHUB_PATH\"\ncommand -v solstice-probe-tool || echo not-yet")),
            StepCommand::run("use", "solstice-probe-tool"),
        ],
        &[],
    )
    .await;
    assert_eq!(result, JobResult::Success, "{:#?}", log_lines(&events));
    assert!(step_lines(&events, 0).contains(&"not-yet".to_owned()));
    assert_eq!(step_lines(&events, 1)[0], "probe-ran");
}

// Docs, "Setting an environment variable" and "Multiline strings": $GITHUB_ENV is for
// the steps after the one that writes it.
#[tokio::test]
async fn github_env_multi_line_values_reach_later_steps() {
    let script = "{ echo 'MULTI<<END'; echo 'a b'; echo 'c'; echo END; echo 'ONE=1'; } >> \"$GITHUB_ENV\"\necho \"now:${ONE:-unset}\"";
    let (result, events) =
        run(vec![StepCommand::run("set", script), StepCommand::run("read", "echo \"$MULTI\"\necho \"one:$ONE\"")], &[]).await;
    assert_eq!(result, JobResult::Success, "{:#?}", log_lines(&events));
    assert!(step_lines(&events, 0).contains(&"now:unset".to_owned()));
    assert_eq!(step_lines(&events, 1)[..3], ["a b", "c", "one:1"]);
}

// FileCommandManager.ProcessFiles: a malformed file fails the step even with exit 0,
// with "Unable to process file command 'env' successfully." and the parser's message.
#[tokio::test]
async fn a_malformed_github_env_fails_the_step() {
    let script = "{ echo 'GOOD=1'; echo 'BAD<<EOF'; echo never closed; } >> \"$GITHUB_ENV\"";
    let (result, events) = run(vec![StepCommand::run("bad", script), step_if("after", "echo \"good:$GOOD\"", "always()")], &[]).await;
    assert_eq!(result, JobResult::Failure);
    assert_eq!(step_results(&events)[0].1, JobResult::Failure);
    let lines = step_lines(&events, 0);
    assert!(lines.contains(&"##[error]Unable to process file command 'env' successfully.".to_owned()), "{lines:?}");
    assert!(lines.contains(&"##[error]Invalid value. Matching delimiter not found 'EOF'".to_owned()), "{lines:?}");
    // Entries before the bad one still count, as the runner applies them as it reads.
    assert!(step_lines(&events, 1).contains(&"good:1".to_owned()));
}

// Docs, "Stopping and starting workflow commands": nothing between the two is processed.
#[tokio::test]
async fn stop_commands_until_the_token() {
    let script = "echo '::stop-commands::pause-1234'\necho '::set-output name=a::1'\necho '::pause-1234::'\necho '::set-output name=b::2'";
    let (result, events) = run(vec![with_id("s", script)], &[]).await;
    assert_eq!(result, JobResult::Success, "{:#?}", log_lines(&events));
    let found = outputs(&events, 0);
    assert_eq!((found.get("a"), found.get("b").map(String::as_str)), (None, Some("2")));
    let lines = step_lines(&events, 0);
    // The token is longer than six characters, so the runner masks it.
    assert_eq!(lines[..3], ["::stop-commands::***", "::set-output name=a::1", "::***::"]);
}

// ActionCommandManager: set-env is refused (the step fails) unless
// ACTIONS_ALLOW_UNSECURE_COMMANDS is true in the env.
#[tokio::test]
async fn set_env_is_refused_unless_unsecure_commands_are_allowed() {
    let steps = || vec![StepCommand::run("set", "echo '::set-env name=FROM_CMD::yes'"), step_if("read", "echo \"env:${FROM_CMD:-unset}\"", "always()")];
    let (result, events) = run(steps(), &[]).await;
    assert_eq!(result, JobResult::Failure);
    assert!(step_lines(&events, 0).iter().any(|l| l.starts_with("##[error]The `set-env` command is disabled.")));
    assert!(step_lines(&events, 1).contains(&"env:unset".to_owned()));

    let (result, events) = run(steps(), &[("ACTIONS_ALLOW_UNSECURE_COMMANDS", "true")]).await;
    assert_eq!(result, JobResult::Success, "{:#?}", log_lines(&events));
    assert!(step_lines(&events, 1).contains(&"env:yes".to_owned()));
}

// Docs, "Setting a debug message": shown only when ACTIONS_STEP_DEBUG is set (here it
// may come from the job's env as well as from secrets or vars).
#[tokio::test]
async fn debug_messages_need_step_debug() {
    let step = || vec![StepCommand::run("dbg", "echo '::debug::look here'\necho after")];
    let (_, events) = run(step(), &[]).await;
    assert_eq!(step_lines(&events, 0)[0], "after");
    let (_, events) = run(step(), &[("ACTIONS_STEP_DEBUG", "true")]).await;
    assert_eq!(step_lines(&events, 0)[..2], ["##[debug]look here", "after"]);
}

// Docs, "Grouping log lines": the runner writes `##[group]title` and `##[endgroup]`.
#[tokio::test]
async fn groups_become_group_lines() {
    let (_, events) = run(vec![StepCommand::run("g", "echo '::group::Build'\necho inside\necho '::endgroup::'")], &[]).await;
    assert_eq!(step_lines(&events, 0)[..3], ["##[group]Build", "inside", "##[endgroup]"]);
}

// Docs, "Setting an error message": `file`, `line`, `col` make an annotation, shown in
// the log as `##[error]message`; commands work on stderr too (ScriptHandler hands both
// streams to OutputManager).
#[tokio::test]
async fn error_commands_become_annotations_before_their_line() {
    let script = "echo '::error file=src/app.rs,line=4,col=2,title=Broken::it broke' >&2\necho '::warning::careful'";
    let (result, events) = run(vec![StepCommand::run("lint", script)], &[]).await;
    assert_eq!(result, JobResult::Success, "annotations do not fail a step");
    let at = events.iter().position(|e| matches!(e.kind, JobEventKind::Annotation { .. })).expect("annotation");
    let JobEventKind::Annotation { step, annotation } = &events[at].kind else { unreachable!() };
    let expected = Annotation {
        title: Some("Broken".into()),
        file: Some("src/app.rs".into()),
        line: Some(4),
        col: Some(2),
        ..Annotation::new(AnnotationLevel::Error, "it broke")
    };
    assert_eq!((*step, annotation), (Some(0), &expected));
    assert!(matches!(&events[at + 1].kind, JobEventKind::Log { line, .. } if line == "##[error]it broke"));
    assert_eq!(step_lines(&events, 0)[..2], ["##[error]it broke", "##[warning]careful"]);
}

// Docs, "Adding a job summary": GitHub shows it on the run page; Solstice CI shows it in
// the step's log, as a group.
#[tokio::test]
async fn step_summaries_are_shown_in_the_log() {
    let (_, events) = run(vec![StepCommand::run("sum", "echo '### Done :rocket:' >> \"$GITHUB_STEP_SUMMARY\"")], &[]).await;
    let lines = step_lines(&events, 0);
    let at = lines.iter().position(|l| l == "##[group]Step summary ($GITHUB_STEP_SUMMARY)").expect("summary group");
    assert_eq!(lines[at + 1..at + 3], ["### Done :rocket:", "##[endgroup]"]);
}
