//! Each rule cites where actions/runner implements it (paths in that repository) or
//! where GitHub documents it ("Workflow commands for GitHub Actions",
//! https://docs.github.com/actions/reference/workflow-commands-for-github-actions).

use super::*;
use super::file::pairs;
use crate::CommandFiles;

fn registered(name: &str) -> bool {
    REGISTERED.contains(&name)
}

fn settings() -> CommandSettings {
    CommandSettings { workspace: "/work/ws".into(), ..CommandSettings::default() }
}

fn lines(shown: &[Shown]) -> Vec<String> {
    shown.iter().filter_map(|s| if let Shown::Line(_, l) = s { Some(l.clone()) } else { None }).collect()
}

fn annotations(shown: &[Shown]) -> Vec<Annotation> {
    shown.iter().filter_map(|s| if let Shown::Annotation(a) = s { Some(a.clone()) } else { None }).collect()
}

/// Runs `input` lines through one step and returns everything shown plus the changes.
fn run(settings: CommandSettings, input: &[&str]) -> (Vec<Shown>, StepChanges) {
    let mut job = JobCommands::default();
    let mut step = job.step(0, settings);
    let shown = input.iter().flat_map(|l| step.line(LogStream::Stdout, l)).collect();
    (shown, step.finish())
}

// `ActionCommand.TryParseV2`: leading whitespace is trimmed, properties are split on
// `,` and `=`, empty pieces dropped, data and properties unescaped with their tables
// (src/Runner.Common/ActionCommand.cs).
#[test]
fn commands_parse_with_properties_and_escapes() {
    let c = parse("  ::error file=src/a%2Cb.rs,line=3,title=Bad%3A thing,,empty=::it broke%0Asecond 100%25", registered).expect("command");
    assert_eq!(c.name, "error");
    assert_eq!(c.data, "it broke\nsecond 100%");
    assert_eq!(c.property("FILE"), Some("src/a,b.rs"), "property names ignore case");
    assert_eq!(c.property("title"), Some("Bad: thing"));
    assert_eq!(c.property("empty"), None);
    assert_eq!(parse("::set-output name=a::b", registered).map(|c| c.data), Some("b".to_owned()));
    for line in ["echo ::error::x", "::unknown::x", "::error no closing", "plain", ""] {
        assert_eq!(parse(line, registered), None, "{line}");
    }
}

// `ActionCommand.TryParse`: the legacy `##[name k=v;k2=v2]data` form is found anywhere in
// a line and also unescapes `%3B` and `%5D` (src/Runner.Common/ActionCommand.cs).
#[test]
fn the_legacy_form_is_a_command_too() {
    let c = parse_legacy("say ##[warning file=a%3Bb.rs;line=2]look %5Dhere", registered).expect("legacy");
    assert_eq!((c.name.as_str(), c.data.as_str()), ("warning", "look ]here"));
    assert_eq!(c.property("file"), Some("a;b.rs"));
    let (shown, _) = run(settings(), &["##[group]Build"]);
    assert_eq!(lines(&shown), ["##[group]Build"]);
}

// `SetOutputCommandExtension`: sets the step output, with the deprecation warning
// `Constants.Runner.UnsupportedCommandMessage`; echo is off unless debugging
// (`EchoOnActionCommand = Step_Debug`, src/Runner.Worker/ExecutionContext.cs), so the
// command line itself is not shown.
#[test]
fn set_output_sets_an_output_with_a_deprecation_warning() {
    let (shown, changes) = run(settings(), &["::set-output name=answer::4%0A2", "after"]);
    assert_eq!(changes.outputs.get("answer").map(String::as_str), Some("4\n2"));
    let warnings = annotations(&shown);
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].level, AnnotationLevel::Warning);
    assert!(warnings[0].message.starts_with("The `set-output` command is deprecated"), "{warnings:?}");
    let shown_lines = lines(&shown);
    assert_eq!(shown_lines.len(), 2, "{shown_lines:?}");
    assert!(shown_lines[0].starts_with("##[warning]The `set-output` command is deprecated"));
    assert_eq!(shown_lines[1], "after");
    assert!(!changes.failed);
}

// A command that throws logs "Unable to process command '…' successfully." plus the
// reason and fails the step (`context.CommandResult = TaskResult.Failed` in
// ActionCommandManager.TryProcessCommand).
#[test]
fn set_output_without_a_name_fails_the_step() {
    let (shown, changes) = run(settings(), &["::set-output::v"]);
    assert!(changes.failed);
    let errors: Vec<String> =
        annotations(&shown).into_iter().filter(|a| a.level == AnnotationLevel::Error).map(|a| a.message).collect();
    assert_eq!(
        errors,
        ["Unable to process command '::set-output::v' successfully.", "Required field 'name' is missing in ##[set-output] command."]
    );
}

// `SetEnvCommandExtension`/`AddPathCommandExtension` refuse unless
// ACTIONS_ALLOW_UNSECURE_COMMANDS is `true` (`Constants.Runner.UnsupportedCommandMessageDisabled`).
#[test]
fn set_env_and_add_path_are_refused_unless_allowed() {
    let (shown, changes) = run(settings(), &["::set-env name=A::1", "::add-path::/opt/bin"]);
    assert!(changes.failed);
    assert!(changes.env.is_empty() && changes.path.is_empty());
    let text = lines(&shown).join("\n");
    assert!(text.contains("##[error]The `set-env` command is disabled."), "{text}");
    assert!(text.contains("##[error]The `add-path` command is disabled."), "{text}");

    let allowed = CommandSettings { allow_unsecure: true, ..settings() };
    let (shown, changes) = run(allowed, &["::set-env name=A::1", "::add-path::/opt/bin", "::set-env name=node_options::x"]);
    assert_eq!(changes.env.get("A").map(String::as_str), Some("1"));
    assert_eq!(changes.path, ["/opt/bin"]);
    // NODE_OPTIONS is on the runner's block list: an error, but not a failure.
    assert!(!changes.env.contains_key("node_options") && !changes.failed);
    assert!(lines(&shown).iter().any(|l| l == "##[error]Can't update NODE_OPTIONS environment variable using ::set-env:: command."));
}

// `ActionCommandManager`: after `::stop-commands::TOKEN` nothing is a command until
// `::TOKEN::`; both lines are shown, and a token longer than 6 characters is masked.
// The manager is one per job, so a stop outlasts its step.
#[test]
fn stop_commands_pause_processing_until_the_token() {
    let mut job = JobCommands::default();
    let mut step = job.step(0, settings());
    let mut shown = step.line(LogStream::Stdout, "::stop-commands::pause-token-1");
    shown.extend(step.line(LogStream::Stdout, "::set-output name=a::1"));
    drop(step);
    let mut next = job.step(1, settings());
    shown.extend(next.line(LogStream::Stderr, "::warning::still paused"));
    shown.extend(next.line(LogStream::Stdout, "::PAUSE-TOKEN-1::"));
    shown.extend(next.line(LogStream::Stdout, "::group::back"));
    let changes = next.finish();
    assert_eq!(shown[0], Shown::Mask("pause-token-1".into()));
    assert_eq!(
        lines(&shown),
        ["::stop-commands::pause-token-1", "::set-output name=a::1", "::warning::still paused", "::PAUSE-TOKEN-1::", "##[group]back"]
    );
    assert!(annotations(&shown).is_empty() && changes.outputs.is_empty());
}

// `ValidateStopToken`: an empty token, `pause-logging` or a command name is refused
// unless ACTIONS_ALLOW_UNSECURE_STOPCOMMAND_TOKENS is set.
#[test]
fn stop_tokens_that_are_commands_are_refused() {
    let (shown, changes) = run(settings(), &["::stop-commands::set-output", "::group::x"]);
    assert!(changes.failed);
    assert!(lines(&shown)[0].starts_with("##[error]You cannot use a endToken"), "{shown:?}");
    assert_eq!(lines(&shown)[1], "##[group]x", "processing did not stop");
    let lenient = CommandSettings { allow_any_stop_token: true, ..settings() };
    let (_, changes) = run(lenient, &["::stop-commands::pause-logging"]);
    assert!(!changes.failed);
}

// `DebugCommandExtension` writes through `context.Debug`, shown only with
// ACTIONS_STEP_DEBUG; debug mode also echoes commands (`EchoOnActionCommand`), except
// those with `OmitEcho` (debug, error, warning, notice, add-mask).
#[test]
fn debug_lines_and_echo_follow_step_debug() {
    let (shown, _) = run(settings(), &["::debug::hidden", "::group::g", "::endgroup::"]);
    assert_eq!(lines(&shown), ["##[group]g", "##[endgroup]"]);
    let debug = CommandSettings { debug: true, ..settings() };
    let (shown, _) = run(debug, &["::debug::a%0Ab", "::group::g", "::echo::off", "::endgroup::"]);
    assert_eq!(
        lines(&shown),
        ["##[debug]a", "##[debug]b", "::group::g", "##[group]g", "::echo::off", "##[debug]Setting echo command value to 'off'", "##[endgroup]"]
    );
}

// `EchoCommandExtension`: `::echo::on` turns echo on; other values throw.
#[test]
fn echo_on_shows_commands() {
    let (shown, changes) = run(settings(), &["::echo::on", "::set-output name=x::1", "::echo::maybe"]);
    let shown_lines = lines(&shown);
    assert_eq!(shown_lines[0], "::set-output name=x::1");
    assert!(shown_lines.contains(&"::echo::maybe".to_owned()));
    assert!(changes.failed, "an invalid echo value fails the step");
}

// `IssueCommandExtension`: an annotation with its properties, shown as `##[error]` with
// one log line per message line; a file inside the workspace becomes relative to it;
// `ValidateLinesAndColumns` drops columns without a line.
#[test]
fn annotations_carry_their_position() {
    let (shown, changes) = run(
        settings(),
        &["::error file=/work/ws/src/app.rs,line=3,col=5,endColumn=9,title=T::it broke%0Asecond", "::notice col=4::no line"],
    );
    assert!(!changes.failed, "annotations do not fail a step");
    let found = annotations(&shown);
    assert_eq!(found[0].file.as_deref(), Some("src/app.rs"));
    assert_eq!((found[0].line, found[0].col, found[0].end_col, found[0].title.as_deref()), (Some(3), Some(5), Some(9), Some("T")));
    assert_eq!(found[0].message, "it broke\nsecond");
    assert_eq!((found[1].level, found[1].col), (AnnotationLevel::Notice, None));
    assert_eq!(lines(&shown), ["##[error]it broke", "second", "##[notice]no line"]);
    // The annotation comes right before its line, which is how forges find its place.
    assert!(matches!(shown[0], Shown::Annotation(_)) && matches!(shown[1], Shown::Line(..)));
}

// `ExecutionContext.AddIssue`: at most 10 issues of a type are recorded per step; the
// log still shows every one.
#[test]
fn annotations_are_capped_per_level_but_all_logged() {
    let input: Vec<String> = (0..12).map(|i| format!("::warning::w{i}")).collect();
    let input: Vec<&str> = input.iter().map(String::as_str).collect();
    let (shown, _) = run(settings(), &input);
    assert_eq!(annotations(&shown).len(), 10);
    assert_eq!(lines(&shown).len(), 12);
}

// System lines are Solstice's own, never commands.
#[test]
fn system_lines_are_not_commands() {
    let mut job = JobCommands::default();
    let mut step = job.step(0, settings());
    let shown = step.line(LogStream::System, "::set-output name=a::1");
    assert_eq!(lines(&shown), ["::set-output name=a::1"]);
    assert!(step.finish().outputs.is_empty());
}

// `EnvFileKeyValuePairs` (src/Runner.Worker/FileCommandManager.cs): `name=value`,
// `name<<DELIM` blocks, the first `=` or `<<` decides, empty lines skipped, `\r` kept on
// Linux, later values win when applied.
#[test]
fn command_files_hold_single_and_multi_line_values() {
    let (found, error) = pairs("a=1\nb<<EOF\nline 1\nline=2\nEOF\n\nc=x<<y\nd<<x=y\nv\nx=y\ne<<E\nE\nwin=a\r\n");
    assert_eq!(error, None);
    let expected = [("a", "1"), ("b", "line 1\nline=2"), ("c", "x<<y"), ("d", "v"), ("e", ""), ("win", "a\r")];
    let expected: Vec<(String, String)> = expected.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    assert_eq!(found, expected);
    assert_eq!(pairs("last=no newline").0, [("last".to_owned(), "no newline".to_owned())]);
}

// The runner's errors for malformed files; entries before the error still count.
#[test]
fn malformed_command_files_are_errors() {
    let cases = [
        ("ok=1\njunk\n", "Invalid format 'junk'"),
        ("ok=1\nv<<EOF\nbody\n", "Invalid value. Matching delimiter not found 'EOF'"),
        ("ok=1\nv<<EOF\nbody", "Invalid value. EOF marker missing new line."),
        ("ok=1\n<<EOF\nEOF\n", "Invalid format '<<EOF'. Name must not be empty and delimiter must not be empty"),
        ("ok=1\nv<<\n", "Invalid format 'v<<'. Name must not be empty and delimiter must not be empty"),
        ("ok=1\n=v\n", "Invalid format '=v'. Name must not be empty"),
        ("ok=1\n \n", "Invalid format ' '"),
    ];
    for (text, message) in cases {
        let (found, error) = pairs(text);
        assert_eq!(error.as_deref(), Some(message), "{text:?}");
        assert_eq!(found, [("ok".to_owned(), "1".to_owned())], "{text:?}");
    }
}

// `FileCommandManager.ProcessFiles`: a file that cannot be processed logs "Unable to
// process file command 'env' successfully." and the reason and fails the step; path
// lines are prepended with earlier equal entries moved (`AddPathFileCommand`); GITHUB_ENV
// may not set NODE_OPTIONS (`SetEnvFileCommand`).
#[test]
fn files_apply_after_commands_and_report_errors() {
    let mut job = JobCommands::default();
    let mut step = job.step(2, settings());
    let mut shown = step.line(LogStream::Stdout, "::set-output name=o::from-command");
    let files = CommandFiles {
        output: "o=from-file\n".into(),
        env: "A=1\nNODE_OPTIONS=--x\nbroken\n".into(),
        path: "/a\n\n/b\r\n/a\n".into(),
        state: "s=1\n".into(),
        step_summary: "# Done\n\n- ok\n".into(),
    };
    shown.extend(step.files(&files));
    let changes = step.finish();
    assert_eq!(changes.outputs.get("o").map(String::as_str), Some("from-file"), "the file is read after the command");
    assert_eq!(changes.env.get("A").map(String::as_str), Some("1"));
    assert!(!changes.env.contains_key("NODE_OPTIONS"));
    assert_eq!(changes.path, ["/b", "/a"]);
    assert!(changes.failed);
    let shown_lines = lines(&shown);
    for expected in [
        "##[error]Can't store NODE_OPTIONS output parameter using '$GITHUB_ENV' command.",
        "##[error]Unable to process file command 'env' successfully.",
        "##[error]Invalid format 'broken'",
    ] {
        assert!(shown_lines.iter().any(|l| l == expected), "{expected} in {shown_lines:?}");
    }
    assert_eq!(job.state_env(2).get("STATE_s").map(String::as_str), Some("1"));
}

// GitHub shows $GITHUB_STEP_SUMMARY on the run page; Solstice CI puts it in the log as
// a group. Over 1 MiB it is refused with the runner's error
// (`CreateStepSummaryCommand`, `Constants.Runner.UnsupportedSummarySize`), not failing the step.
#[test]
fn step_summaries_go_to_the_log() {
    let mut job = JobCommands::default();
    let mut step = job.step(0, settings());
    let shown = step.files(&CommandFiles { step_summary: "# Title\nbody\n".into(), ..CommandFiles::default() });
    assert_eq!(lines(&shown), ["##[group]Step summary ($GITHUB_STEP_SUMMARY)", "# Title", "body", "##[endgroup]"]);
    let huge = "x".repeat(STEP_SUMMARY_LIMIT_FOR_TESTS + 1);
    let shown = step.files(&CommandFiles { step_summary: huge, ..CommandFiles::default() });
    assert!(lines(&shown)[0].starts_with("##[error]$GITHUB_STEP_SUMMARY upload aborted, supports content up to a size of 1024k"));
    assert!(!step.finish().failed);
}

const STEP_SUMMARY_LIMIT_FOR_TESTS: usize = 1024 * 1024;

// `AddMaskCommandExtension`: the data is unescaped like any command's (`%0A`, `%0D`,
// `%25`) and trimmed; an empty value only warns; the command line is never shown, its
// echo shows `***` (issue 16: a leading space and `%0A` escapes leaked).
#[test]
fn add_mask_registers_the_unescaped_trimmed_value() {
    let (shown, _) = run(settings(), &["::add-mask::  first%0Asecond%25 ", "::add-mask::   "]);
    assert_eq!(shown[0], Shown::Mask("first\nsecond%".into()));
    assert!(lines(&shown).iter().all(|l| !l.contains("first")), "{shown:?}");
    assert!(lines(&shown)[0].contains("Can't add secret mask for empty string"), "{shown:?}");
    let echo = CommandSettings { debug: true, ..settings() };
    let (shown, _) = run(echo, &["::add-mask::value"]);
    assert_eq!(shown, [Shown::Mask("value".into()), Shown::Line(LogStream::Stdout, "::add-mask::***".into())]);
}
