//! Workflow commands (`::set-output name=x::v`, `::error file=a.rs::m`, `::group::…`)
//! in a step's output, honoured as GitHub's runner honours them.
//!
//! The rules follow actions/runner: parsing in `src/Runner.Common/ActionCommand.cs`
//! (`TryParseV2` for `::command props::data`, `TryParse` for the legacy
//! `##[command props]data`), processing in `src/Runner.Worker/ActionCommandManager.cs`,
//! and how messages show in the log in `src/Runner.Worker/ExecutionContext.cs`. Lines are
//! processed on stdout and stderr alike, in the order they arrive (`ScriptHandler.cs`
//! hands both streams to the same `OutputManager.OnDataReceived`).
//!
//! Everything here is sans-I/O: a line goes in, the [`Shown`] items that the engine
//! sends (log lines, annotations, values to mask) come out.

use std::collections::BTreeMap;

use super::emit::Emitter;
use crate::{Annotation, AnnotationLevel, JobEventKind, LogStream};

/// Commands the runner knows; any other `::name::` line is ordinary output.
const REGISTERED: [&str; 15] = [
    "stop-commands",
    "set-env",
    "set-output",
    "save-state",
    "add-mask",
    "add-path",
    "add-matcher",
    "remove-matcher",
    "debug",
    "warning",
    "error",
    "notice",
    "group",
    "endgroup",
    "echo",
];

/// GitHub's message for `set-env`/`add-path` without `ACTIONS_ALLOW_UNSECURE_COMMANDS`
/// (`Constants.Runner.UnsupportedCommandMessageDisabled`).
fn disabled_message(command: &str) -> String {
    format!(
        "The `{command}` command is disabled. Please upgrade to using Environment Files or opt into unsecure command execution by setting the `ACTIONS_ALLOW_UNSECURE_COMMANDS` environment variable to `true`. For more information see: https://github.blog/changelog/2020-10-01-github-actions-deprecating-set-env-and-add-path-commands/"
    )
}

/// GitHub's warning for `set-output`/`save-state` (`Constants.Runner.UnsupportedCommandMessage`).
fn deprecated_message(command: &str) -> String {
    format!(
        "The `{command}` command is deprecated and will be disabled soon. Please upgrade to using Environment Files. For more information see: https://github.blog/changelog/2022-10-11-github-actions-deprecating-save-state-and-set-output-commands/"
    )
}

/// GitHub's error for a bad `stop-commands` token (`Constants.Runner.UnsupportedStopCommandTokenDisabled`).
const BAD_STOP_TOKEN: &str = "You cannot use a endToken that is an empty string, the string 'pause-logging', or another workflow command. For more information see: https://docs.github.com/actions/learn-github-actions/workflow-commands-for-github-actions#example-stopping-and-starting-workflow-commands or opt into insecure command execution by setting the `ACTIONS_ALLOW_UNSECURE_STOPCOMMAND_TOKENS` environment variable to `true`.";

/// The runner records at most this many annotations of each level per step
/// (`_maxCountPerIssueType`); later ones still show in the log.
const MAX_ANNOTATIONS_PER_LEVEL: usize = 10;

/// An annotation's message is cut to this many characters (`_maxIssueMessageLength`).
const MAX_ANNOTATION_MESSAGE: usize = 4096;

/// Something processing produced, for the engine to send in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Shown {
    /// A line of the step's log.
    Line(LogStream, String),
    /// An annotation; the lines showing it follow.
    Annotation(Annotation),
    /// A value to mask from now on.
    Mask(String),
}

/// Sends what processing produced, as lines and annotations of step `step`, masked.
pub(crate) async fn send(emitter: &mut Emitter, step: Option<usize>, shown: Vec<Shown>) {
    for item in shown {
        match item {
            Shown::Line(stream, line) => emitter.log(step, stream, &line).await,
            Shown::Mask(value) => emitter.add_mask(&value),
            Shown::Annotation(mut annotation) => {
                annotation.message = emitter.mask(&annotation.message).chars().take(MAX_ANNOTATION_MESSAGE).collect();
                annotation.title = annotation.title.map(|t| emitter.mask(&t));
                annotation.file = annotation.file.map(|f| emitter.mask(&f));
                emitter.emit(JobEventKind::Annotation { step, annotation }).await;
            }
        }
    }
}

/// A parsed workflow command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkflowCommand {
    /// The name as written (matched without regard to case).
    pub name: String,
    /// Properties, unescaped, in order; names are matched without regard to case.
    pub properties: Vec<(String, String)>,
    /// The data after the command, unescaped.
    pub data: String,
}

impl WorkflowCommand {
    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// The last value given for property `key` (case-insensitive, as the runner's
    /// dictionary is).
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties.iter().rev().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }

    fn remove_property(&mut self, key: &str) {
        self.properties.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
    }

    fn set_property(&mut self, key: &str, value: String) {
        self.remove_property(key);
        self.properties.push((key.to_owned(), value));
    }
}

/// Replaces escapes in the given order (the runner's `EscapeMapping` tables, `%25` last).
fn unescape(text: &str, mappings: &[(&str, &str)]) -> String {
    mappings.iter().fold(text.to_owned(), |text, (escaped, plain)| text.replace(escaped, plain))
}

/// Unescapes a command's data (`::x::data`): `%0D`, `%0A`, `%25`.
pub(crate) fn unescape_data(text: &str) -> String {
    unescape(text, &[("%0D", "\r"), ("%0A", "\n"), ("%25", "%")])
}

/// Unescapes a property value: also `%3A` (`:`) and `%2C` (`,`).
pub(crate) fn unescape_property(text: &str) -> String {
    unescape(text, &[("%0D", "\r"), ("%0A", "\n"), ("%3A", ":"), ("%2C", ","), ("%25", "%")])
}

/// Unescapes the legacy `##[…]` form: also `%3B` (`;`) and `%5D` (`]`).
fn unescape_legacy(text: &str) -> String {
    unescape(text, &[("%3B", ";"), ("%0D", "\r"), ("%0A", "\n"), ("%5D", "]"), ("%25", "%")])
}

/// Parses `::name k=v,k2=v2::data` (leading whitespace allowed) when `name` is
/// registered.
pub(crate) fn parse(line: &str, registered: impl Fn(&str) -> bool) -> Option<WorkflowCommand> {
    let rest = line.trim_start().strip_prefix("::")?;
    let (info, data) = rest.split_once("::")?;
    let (name, properties) = match info.split_once(' ') {
        Some((name, properties)) => (name, properties.trim()),
        None => (info, ""),
    };
    if !registered(name) {
        return None;
    }
    let properties = parse_properties(properties, ',', unescape_property);
    Some(WorkflowCommand { name: name.to_owned(), properties, data: unescape_data(data) })
}

/// Parses the legacy `##[name k=v;k2=v2]data`, which the runner finds anywhere in a line.
fn parse_legacy(line: &str, registered: impl Fn(&str) -> bool) -> Option<WorkflowCommand> {
    let start = line.find("##[")? + 3;
    let (info, data) = line[start..].split_once(']')?;
    let (name, properties) = info.split_once(' ').unwrap_or((info, ""));
    if !registered(name) {
        return None;
    }
    let properties = parse_properties(properties, ';', unescape_legacy);
    Some(WorkflowCommand { name: name.to_owned(), properties, data: unescape_legacy(data) })
}

/// The `key=value` properties of a command, split at `separator` (`,` in the `::` form,
/// `;` in the legacy one); pairs with an empty key or value are dropped, as the runner does.
fn parse_properties<P: FromIterator<(String, String)>>(properties: &str, separator: char, unescape: fn(&str) -> String) -> P {
    properties
        .split(separator)
        .filter(|p| !p.is_empty())
        .filter_map(|pair| pair.split_once('='))
        .filter(|(key, value)| !key.is_empty() && !value.is_empty())
        .map(|(key, value)| (key.to_owned(), unescape(value)))
        .collect()
}

/// `StringUtil.ConvertToBoolean`: `1`, `true`, `$true` in any case.
pub(crate) fn is_true(value: Option<&str>) -> bool {
    matches!(value.map(str::to_ascii_lowercase).as_deref(), Some("1" | "true" | "$true"))
}

/// .NET `bool.TryParse`: `true` in any case, surrounding whitespace allowed.
fn parses_true(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// What a step may do with commands, from its environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CommandSettings {
    /// `ACTIONS_STEP_DEBUG`: `::debug::` lines are shown and commands echoed.
    pub debug: bool,
    /// `ACTIONS_ALLOW_UNSECURE_COMMANDS=true`: `set-env` and `add-path` work.
    pub allow_unsecure: bool,
    /// `ACTIONS_ALLOW_UNSECURE_STOPCOMMAND_TOKENS`: any `stop-commands` token is taken.
    pub allow_any_stop_token: bool,
    /// The workspace, so that an annotation's `file` inside it becomes relative.
    pub workspace: String,
}

impl CommandSettings {
    /// Reads the settings from the step's environment (which holds the job's) and,
    /// for `ACTIONS_STEP_DEBUG`, also the `secrets` and `vars` contexts, where GitHub
    /// users set it.
    pub fn new(env: &BTreeMap<String, String>, contexts: &serde_json::Map<String, serde_json::Value>, workspace: &str) -> Self {
        let from_context = |context: &str| {
            contexts.get(context).and_then(|c| c.get("ACTIONS_STEP_DEBUG")).and_then(|v| v.as_str()).map(str::to_owned)
        };
        let debug = is_true(env.get("ACTIONS_STEP_DEBUG").map(String::as_str))
            || is_true(from_context("secrets").as_deref())
            || is_true(from_context("vars").as_deref());
        Self {
            debug,
            allow_unsecure: parses_true(env.get("ACTIONS_ALLOW_UNSECURE_COMMANDS").map(String::as_str)),
            allow_any_stop_token: is_true(env.get("ACTIONS_ALLOW_UNSECURE_STOPCOMMAND_TOKENS").map(String::as_str)),
            workspace: workspace.to_owned(),
        }
    }
}

/// Command state that lasts the whole job.
#[derive(Debug, Default)]
pub(crate) struct JobCommands {
    /// While `Some`, commands are not processed until `::TOKEN::`. The runner keeps this
    /// in its one `ActionCommandManager` per job, so it outlasts the step that stopped.
    stop_token: Option<String>,
    /// State each step saved (`$GITHUB_STATE`, `::save-state`), by step index.
    ///
    /// On GitHub a `uses:` action's post step gets it as `STATE_<name>`; with only
    /// `run:` steps there is no post step, so nothing reads it yet (issue 17 will, via
    /// [`JobCommands::state_env`]).
    states: BTreeMap<usize, BTreeMap<String, String>>,
}

impl JobCommands {
    /// The `STATE_<name>` variables for the post step of the action run as step `index`.
    #[allow(dead_code, reason = "read by post steps once actions run (issue 17)")]
    pub fn state_env(&self, index: usize) -> BTreeMap<String, String> {
        self.states.get(&index).map(|s| s.iter().map(|(k, v)| (format!("STATE_{k}"), v.clone())).collect()).unwrap_or_default()
    }

    /// Starts processing the commands of step `index`.
    pub fn step(&mut self, index: usize, settings: CommandSettings) -> StepCommands<'_> {
        StepCommands {
            // The runner starts each step with echo on only in debug mode
            // (`EchoOnActionCommand = Step_Debug`).
            echo: settings.debug,
            settings,
            index,
            job: self,
            failed: false,
            annotations: [0; 3],
            changes: StepChanges::default(),
        }
    }
}

/// What a step's commands and command files change for the steps after it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct StepChanges {
    /// The step's outputs.
    pub outputs: BTreeMap<String, String>,
    /// Variables for the following steps.
    pub env: BTreeMap<String, String>,
    /// Directories for the following steps' `PATH`, in the order added (the last goes
    /// first in `PATH`).
    pub path: Vec<String>,
    /// Whether a command failed, which fails the step (`CommandResult = Failed`).
    pub failed: bool,
}

/// Adds `dir` to a prepend list as the runner does: an earlier equal entry moves to the end.
pub(crate) fn add_path(path: &mut Vec<String>, dir: &str) {
    path.retain(|d| d != dir);
    path.push(dir.to_owned());
}

/// One step's command processing.
#[derive(Debug)]
pub(crate) struct StepCommands<'a> {
    job: &'a mut JobCommands,
    index: usize,
    settings: CommandSettings,
    echo: bool,
    failed: bool,
    /// Annotations recorded so far, per level.
    annotations: [usize; 3],
    changes: StepChanges,
}

impl StepCommands<'_> {
    /// Processes one output line of the step.
    pub fn line(&mut self, stream: LogStream, line: &str) -> Vec<Shown> {
        let mut shown = Vec::new();
        if stream == LogStream::System {
            // Solstice's own lines are not the step's output.
            shown.push(Shown::Line(stream, line.to_owned()));
            return shown;
        }
        let stop_token = self.job.stop_token.clone();
        let registered = |name: &str| {
            REGISTERED.iter().any(|r| r.eq_ignore_ascii_case(name))
                || stop_token.as_deref().is_some_and(|t| t.eq_ignore_ascii_case(name))
        };
        let Some(command) = parse(line, registered).or_else(|| parse_legacy(line, registered)) else {
            shown.push(Shown::Line(stream, line.to_owned()));
            return shown;
        };
        if let Some(token) = &stop_token {
            if command.name.eq_ignore_ascii_case(token) {
                self.job.stop_token = None;
                shown.push(Shown::Line(stream, line.to_owned()));
                self.debug(&mut shown, stream, "Resume processing commands");
            } else {
                shown.push(Shown::Line(stream, line.to_owned()));
            }
            return shown;
        }
        if command.is("stop-commands") {
            self.stop(&mut shown, stream, line, command.data);
            return shown;
        }
        // Commands whose echo would repeat what they show anyway are never echoed.
        let omit_echo = ["debug", "error", "warning", "notice", "add-mask"].iter().any(|c| command.is(c));
        if self.echo && !omit_echo {
            shown.push(Shown::Line(stream, line.to_owned()));
        }
        if let Err(message) = self.run(&mut shown, stream, command.clone()) {
            let what = if omit_echo { command.name.to_ascii_lowercase() } else { line.to_owned() };
            self.error(&mut shown, &format!("Unable to process command '{what}' successfully."));
            self.error(&mut shown, &message);
            self.failed = true;
        }
        shown
    }

    fn stop(&mut self, shown: &mut Vec<Shown>, stream: LogStream, line: &str, token: String) {
        let invalid = token.is_empty()
            || token.eq_ignore_ascii_case("pause-logging")
            || REGISTERED.iter().any(|r| r.eq_ignore_ascii_case(&token));
        if invalid && !self.settings.allow_any_stop_token {
            // The runner throws out of the step here: the step fails with this message.
            self.error(shown, BAD_STOP_TOKEN);
            self.failed = true;
            return;
        }
        // A long token is masked so nothing printed later can guess it.
        if token.chars().count() > 6 {
            shown.push(Shown::Mask(token.clone()));
        }
        self.job.stop_token = Some(token);
        shown.push(Shown::Line(stream, line.to_owned()));
        self.debug(shown, stream, "Paused processing commands until the token you called ::stopCommands:: with is received");
    }

    /// Runs one command; `Err` is the message of the runner's exception.
    fn run(&mut self, shown: &mut Vec<Shown>, stream: LogStream, mut command: WorkflowCommand) -> Result<(), String> {
        let name = command.name.to_ascii_lowercase();
        match name.as_str() {
            "set-output" | "save-state" => {
                self.warning(shown, &deprecated_message(&name));
                let key = command.property("name").filter(|n| !n.is_empty()).map(str::to_owned);
                let Some(key) = key else {
                    return Err(format!("Required field 'name' is missing in ##[{name}] command."));
                };
                if name == "set-output" {
                    self.debug(shown, stream, &format!("Set output {key} = {}", command.data));
                    self.changes.outputs.insert(key, command.data);
                } else {
                    self.debug(shown, stream, &format!("Save intra-action state {key} = {}", command.data));
                    self.job.states.entry(self.index).or_default().insert(key, command.data);
                }
            }
            "set-env" => {
                if !self.settings.allow_unsecure {
                    return Err(disabled_message(&name));
                }
                let Some(key) = command.property("name").filter(|n| !n.is_empty()).map(str::to_owned) else {
                    return Err("Required field 'name' is missing in ##[set-env] command.".to_owned());
                };
                if key.eq_ignore_ascii_case("NODE_OPTIONS") {
                    self.error(shown, "Can't update NODE_OPTIONS environment variable using ::set-env:: command.");
                    return Ok(());
                }
                self.debug(shown, stream, &format!("{key}='{}'", command.data));
                self.changes.env.insert(key, command.data);
            }
            "add-path" => {
                if !self.settings.allow_unsecure {
                    return Err(disabled_message(&name));
                }
                if command.data.is_empty() {
                    return Err("Parameter 'path' cannot be null or empty.".to_owned());
                }
                add_path(&mut self.changes.path, &command.data);
            }
            // `AddMaskCommandExtension`: the value (already unescaped, `%0A` and all) is
            // trimmed; the command line itself is never shown, only `***` in its echo.
            "add-mask" => {
                let value = command.data.trim();
                if value.is_empty() {
                    self.warning(shown, "Can't add secret mask for empty string in ##[add-mask] command.");
                } else {
                    shown.push(Shown::Mask(value.to_owned()));
                    if self.echo {
                        shown.push(Shown::Line(stream, "::add-mask::***".to_owned()));
                    }
                }
            }
            "add-matcher" | "remove-matcher" => {
                self.warning(shown, &format!("Solstice CI does not support problem matchers; the `{name}` command is ignored."));
            }
            "debug" => self.debug(shown, stream, &command.data),
            "error" | "warning" | "notice" => {
                let level = match name.as_str() {
                    "error" => AnnotationLevel::Error,
                    "warning" => AnnotationLevel::Warning,
                    _ => AnnotationLevel::Notice,
                };
                validate_lines_and_columns(&mut command);
                let annotation = self.annotation_from(level, command);
                self.annotate(shown, stream, annotation);
            }
            "group" => shown.push(Shown::Line(stream, format!("##[group]{}", command.data))),
            "endgroup" => shown.push(Shown::Line(stream, "##[endgroup]".to_owned())),
            "echo" => match command.data.trim().to_ascii_uppercase().as_str() {
                "ON" => {
                    self.echo = true;
                    self.debug(shown, stream, "Setting echo command value to 'on'");
                }
                "OFF" => {
                    self.echo = false;
                    self.debug(shown, stream, "Setting echo command value to 'off'");
                }
                _ => {
                    return Err(format!(
                        "Invalid echo command value. Possible values can be: 'on', 'off'. Current value is: '{}'.",
                        command.data
                    ));
                }
            },
            _ => {}
        }
        Ok(())
    }

    fn annotation_from(&self, level: AnnotationLevel, command: WorkflowCommand) -> Annotation {
        let number = |key: &str| command.property(key).and_then(|v| v.parse().ok());
        let file = command.property("file").map(|file| {
            // A path inside the workspace becomes relative to it, with `/` (the runner
            // does this so the annotation points into the repository).
            let workspace = self.settings.workspace.trim_end_matches('/');
            match file.strip_prefix(workspace).and_then(|f| f.strip_prefix('/')) {
                Some(relative) if !workspace.is_empty() && !relative.is_empty() => relative.to_owned(),
                _ => file.to_owned(),
            }
        });
        Annotation {
            level,
            title: command.property("title").map(str::to_owned),
            file,
            line: number("line"),
            end_line: number("endLine"),
            col: number("col"),
            end_col: number("endColumn"),
            message: command.data,
        }
    }

    /// Records an annotation (up to the runner's cap per level) and shows it as
    /// `##[level]message`.
    pub fn annotate(&mut self, shown: &mut Vec<Shown>, stream: LogStream, annotation: Annotation) {
        let slot = match annotation.level {
            AnnotationLevel::Error => 0,
            AnnotationLevel::Warning => 1,
            AnnotationLevel::Notice => 2,
        };
        let tag = format!("##[{}]", annotation.level.as_str());
        let message = annotation.message.clone();
        if self.annotations[slot] < MAX_ANNOTATIONS_PER_LEVEL {
            self.annotations[slot] += 1;
            shown.push(Shown::Annotation(annotation));
        }
        if !message.is_empty() {
            let mut lines = message.split('\n');
            let first = lines.next().unwrap_or_default();
            shown.push(Shown::Line(stream, format!("{tag}{first}")));
            shown.extend(lines.map(|l| Shown::Line(stream, l.to_owned())));
        }
    }

    /// An error of the runner's own (`context.Error`): an annotation and a log line.
    pub fn error(&mut self, shown: &mut Vec<Shown>, message: &str) {
        self.annotate(shown, LogStream::System, Annotation::new(AnnotationLevel::Error, message));
    }

    /// A warning of the runner's own (`context.Warning`).
    pub fn warning(&mut self, shown: &mut Vec<Shown>, message: &str) {
        self.annotate(shown, LogStream::System, Annotation::new(AnnotationLevel::Warning, message));
    }

    /// `context.Debug`: `##[debug]` lines, only in debug mode.
    pub fn debug(&self, shown: &mut Vec<Shown>, stream: LogStream, message: &str) {
        if self.settings.debug {
            shown.extend(message.replace("\r\n", "\n").split('\n').map(|l| Shown::Line(stream, format!("##[debug]{l}"))));
        }
    }

    /// What the step's commands and files changed.
    pub fn finish(self) -> StepChanges {
        StepChanges { failed: self.failed, ..self.changes }
    }
}

/// The runner's `IssueCommandExtension.ValidateLinesAndColumns`: fills in a missing
/// start from its end and drops positions that contradict each other.
fn validate_lines_and_columns(command: &mut WorkflowCommand) {
    let get = |c: &WorkflowCommand, key: &str| c.property(key).map(str::to_owned);
    let int = |v: &Option<String>| v.as_deref().and_then(|v| v.parse::<i32>().ok());
    let (mut line, end_line) = (get(command, "line"), get(command, "endLine"));
    let (mut col, end_col) = (get(command, "col"), get(command, "endColumn"));
    let (mut has_line, has_end_line) = (int(&line).is_some(), int(&end_line).is_some());
    let (mut has_col, has_end_col) = (int(&col).is_some(), int(&end_col).is_some());
    let has_column = has_col || has_end_col;
    if has_end_line && !has_line {
        command.set_property("line", end_line.clone().unwrap_or_default());
        has_line = true;
        line = end_line.clone();
    }
    if has_end_col && !has_col {
        command.set_property("col", end_col.clone().unwrap_or_default());
        has_col = true;
        col = end_col.clone();
    }
    if !has_line && has_column {
        command.remove_property("col");
        command.remove_property("endColumn");
    }
    if has_end_line && line != end_line && has_column {
        command.remove_property("col");
        command.remove_property("endColumn");
    }
    if has_line && has_end_line && int(&end_line) < int(&line) {
        command.remove_property("line");
        command.remove_property("endLine");
    }
    if has_col && has_end_col && int(&end_col) < int(&col) {
        command.remove_property("col");
        command.remove_property("endColumn");
    }
}

mod file;
#[cfg(test)]
mod tests;
