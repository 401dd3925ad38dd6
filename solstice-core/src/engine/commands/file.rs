//! Command files (`$GITHUB_ENV`, `$GITHUB_OUTPUT`, …), applied after the step as the
//! runner's `FileCommandManager.ProcessFiles` does (actions/runner
//! `src/Runner.Worker/FileCommandManager.cs`).

use super::{Shown, StepCommands, add_path};
use crate::{CommandFiles, LogStream};

/// The runner refuses step summaries larger than this (`AttachmentSizeLimit`).
const STEP_SUMMARY_LIMIT: usize = 1024 * 1024;

/// Reads `name=value` lines and `name<<DELIMITER` blocks as the runner's
/// `EnvFileKeyValuePairs` does on Linux and macOS: lines end at `\n` (a `\r` stays part
/// of the line), empty lines are skipped, and the first malformed entry ends the file
/// with an error, the entries before it still counting.
pub(crate) fn pairs(text: &str) -> (Vec<(String, String)>, Option<String>) {
    let mut found = Vec::new();
    let mut lines = LineReader { text, at: 0 };
    while let Some((line, _)) = lines.next_line() {
        if line.is_empty() {
            continue;
        }
        let equals = line.find('=');
        let heredoc = line.find("<<");
        match (equals, heredoc) {
            (Some(e), h) if h.is_none_or(|h| e < h) => {
                let (name, value) = (&line[..e], &line[e + 1..]);
                // The runner means to refuse an empty name here but tests the whole line
                // (a bug); an empty variable name cannot be set in a shell either, so
                // Solstice CI refuses it with the runner's intended message.
                if name.is_empty() {
                    return (found, Some(format!("Invalid format '{line}'. Name must not be empty")));
                }
                found.push((name.to_owned(), value.to_owned()));
            }
            (_, Some(h)) => {
                let (name, delimiter) = (&line[..h], &line[h + 2..]);
                if name.is_empty() || delimiter.is_empty() {
                    return (
                        found,
                        Some(format!("Invalid format '{line}'. Name must not be empty and delimiter must not be empty")),
                    );
                }
                let start = lines.at;
                let mut end = start;
                loop {
                    match lines.next_line() {
                        Some((body, _)) if body == delimiter => break,
                        None => return (found, Some(format!("Invalid value. Matching delimiter not found '{delimiter}'"))),
                        Some((_, false)) => return (found, Some("Invalid value. EOF marker missing new line.".to_owned())),
                        Some((_, true)) => end = lines.at - 1,
                    }
                }
                found.push((name.to_owned(), text[start..end].to_owned()));
            }
            _ => return (found, Some(format!("Invalid format '{line}'"))),
        }
    }
    (found, None)
}

/// The runner's `ReadLine` on Linux: up to the next `\n`.
struct LineReader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> LineReader<'a> {
    /// The next line and whether a `\n` ended it; `None` at the end of the text.
    fn next_line(&mut self) -> Option<(&'a str, bool)> {
        let rest = self.text.get(self.at..).filter(|r| !r.is_empty())?;
        match rest.find('\n') {
            Some(n) => {
                self.at += n + 1;
                Some((&rest[..n], true))
            }
            None => {
                self.at = self.text.len();
                Some((rest, false))
            }
        }
    }
}

impl StepCommands<'_> {
    /// Applies the step's command files, in the runner's order (path, env, step
    /// summary, state, output), after the step has ended, and returns what they showed.
    /// A malformed file fails the step; what it set before the bad entry still counts.
    pub fn files(&mut self, files: &CommandFiles) -> Vec<Shown> {
        let mut shown = Vec::new();
        // `File.ReadAllLines` ends lines at `\n`, `\r\n` or `\r`.
        for dir in files.path.split(['\r', '\n']).filter(|d| !d.is_empty()) {
            add_path(&mut self.changes.path, dir);
        }

        let (env, error) = pairs(&files.env);
        for (name, value) in env {
            if name.eq_ignore_ascii_case("NODE_OPTIONS") {
                self.error(&mut shown, "Can't store NODE_OPTIONS output parameter using '$GITHUB_ENV' command.");
                continue;
            }
            self.debug(&mut shown, LogStream::System, &format!("{name}='{value}'"));
            self.changes.env.insert(name, value);
        }
        self.file_error(&mut shown, "env", error);

        self.step_summary(&mut shown, &files.step_summary);

        let (state, error) = pairs(&files.state);
        for (name, value) in state {
            self.debug(&mut shown, LogStream::System, &format!("Save intra-action state {name} = {value}"));
            self.job.states.entry(self.index).or_default().insert(name, value);
        }
        self.file_error(&mut shown, "state", error);

        let (outputs, error) = pairs(&files.output);
        for (name, value) in outputs {
            self.debug(&mut shown, LogStream::System, &format!("Set output {name} = {value}"));
            self.changes.outputs.insert(name, value);
        }
        self.file_error(&mut shown, "output", error);
        shown
    }

    fn file_error(&mut self, shown: &mut Vec<Shown>, file: &str, error: Option<String>) {
        if let Some(message) = error {
            self.error(shown, &format!("Unable to process file command '{file}' successfully."));
            self.error(shown, &message);
            self.failed = true;
        }
    }

    /// GitHub shows a step summary on the run's page. Solstice CI has no such page, so
    /// the summary goes into the step's log after the step, as a collapsed group.
    fn step_summary(&mut self, shown: &mut Vec<Shown>, summary: &str) {
        if summary.is_empty() {
            return;
        }
        if summary.len() > STEP_SUMMARY_LIMIT {
            let message = format!(
                "$GITHUB_STEP_SUMMARY upload aborted, supports content up to a size of {}k, got {}k. For more information see: https://docs.github.com/actions/using-workflows/workflow-commands-for-github-actions#adding-a-markdown-summary",
                STEP_SUMMARY_LIMIT / 1024,
                summary.len() / 1024
            );
            self.error(shown, &message);
            return;
        }
        shown.push(Shown::Line(LogStream::System, "##[group]Step summary ($GITHUB_STEP_SUMMARY)".to_owned()));
        shown.extend(summary.lines().map(|l| Shown::Line(LogStream::System, l.to_owned())));
        shown.push(Shown::Line(LogStream::System, "##[endgroup]".to_owned()));
    }
}
