//! The [`StepExecutor`] seam: running one step in a machine.

use std::collections::BTreeMap;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::{CheckoutSource, CheckoutStep, LogSink, Machine};

/// A script step, resolved and ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptRun {
    /// The step's position in the job, from 0 (executors use it to name files).
    pub index: usize,
    /// The script text.
    pub script: String,
    /// The shell command line with `{0}` for the script path (GitHub's convention).
    pub shell: String,
    /// The complete environment for the step, the machine's included
    /// ([`Machine::step_env`]; the executor adds `GITHUB_OUTPUT`, `GITHUB_ENV`,
    /// `GITHUB_PATH`, `GITHUB_STATE` and `GITHUB_STEP_SUMMARY`, pointing at empty files
    /// it reads back into [`StepExit::files`]).
    pub env: BTreeMap<String, String>,
    /// Working directory: relative to the workspace, or absolute.
    pub working_directory: Option<String>,
    /// Directories to put in front of `PATH` (what earlier steps wrote to `$GITHUB_PATH`).
    pub path: Vec<String>,
}

/// How a step's process ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StepExit {
    /// The exit code; `None` when the process was killed (timeout or cancellation) or
    /// died of a signal.
    pub exit_code: Option<i32>,
    /// What the step left in its command files. The engine applies them with GitHub's
    /// rules, so executors only read them back.
    pub files: CommandFiles,
}

/// The text a step left in its command files, as read back after it ended (empty for a
/// file it did not write or that could not be read).
///
/// The engine parses and applies them as GitHub's runner does
/// (`src/Runner.Worker/FileCommandManager.cs` in actions/runner): `output`, `env` and
/// `state` hold `name=value` lines and `name<<DELIMITER` blocks, and a malformed file
/// fails the step; `path` holds one directory per line; `step_summary` is Markdown.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandFiles {
    /// `$GITHUB_OUTPUT`: the step's outputs.
    pub output: String,
    /// `$GITHUB_ENV`: variables for the following steps.
    pub env: String,
    /// `$GITHUB_PATH`: directories for the following steps' `PATH`.
    pub path: String,
    /// `$GITHUB_STATE`: state for the action's post step (`STATE_<name>`).
    pub state: String,
    /// `$GITHUB_STEP_SUMMARY`: the step's Markdown summary.
    pub step_summary: String,
}

impl CommandFiles {
    /// The environment variable of each file and the name executors give it in their
    /// scratch directory, in the order the engine applies them (the runner's order,
    /// `ExtensionManager.cs`).
    pub const FILES: [(&'static str, &'static str); 5] = [
        ("GITHUB_PATH", "path"),
        ("GITHUB_ENV", "env"),
        ("GITHUB_STEP_SUMMARY", "step_summary"),
        ("GITHUB_STATE", "state"),
        ("GITHUB_OUTPUT", "output"),
    ];

    /// Stores the text read back from the file of environment variable `variable` (one
    /// of [`Self::FILES`]); other names are ignored.
    pub fn set(&mut self, variable: &str, text: String) {
        match variable {
            "GITHUB_OUTPUT" => self.output = text,
            "GITHUB_ENV" => self.env = text,
            "GITHUB_PATH" => self.path = text,
            "GITHUB_STATE" => self.state = text,
            "GITHUB_STEP_SUMMARY" => self.step_summary = text,
            _ => {}
        }
    }
}

impl StepExit {
    /// An exit with just a code.
    pub fn code(code: i32) -> Self {
        Self { exit_code: Some(code), ..Self::default() }
    }

    /// Whether the process exited with status 0.
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// Why an executor could not run a step at all (a step that ran and failed is an
/// `Ok(StepExit)` with a non-zero code, not an error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// The executor cannot reach machines of this kind.
    #[error("this executor cannot run steps on machine {0}")]
    UnsupportedMachine(String),
    /// The connection to the machine failed or broke.
    #[error("lost the connection to machine {machine}")]
    Connection {
        /// The machine.
        machine: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Setting the step up failed (script upload, workspace, checkout).
    #[error("{message}")]
    Setup {
        /// What failed, in this layer's words.
        message: String,
        /// The cause.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A path the step names (checkout `path:`, `working-directory`) lies outside the
    /// workspace, lexically or through a symbolic link. The message is
    /// `actions/checkout`'s ("Repository path '…' is not under '…'").
    #[error("{what} '{path}' is not under '{workspace}'")]
    OutsideWorkspace {
        /// Which path: `Repository path` or `Working directory`.
        what: &'static str,
        /// The path as resolved (through links where the executor could follow them).
        path: String,
        /// The workspace.
        workspace: String,
    },
}

/// Runs steps in a machine and streams their output.
///
/// # Contract
/// - Output goes to `output` line by line *while* the step runs, stdout and stderr
///   apart, in the order each stream produced them.
/// - When `cancel` fires, the executor kills the step's whole process group and returns
///   promptly with `exit_code: None`. The engine uses this for timeouts too.
/// - A step that cannot be started is an `Err`; a step that ran is an `Ok`, whatever its
///   exit code.
///
/// # Example
/// ```
/// use solstice_core::{HostExecutor, HostHypervisor, Hypervisor, StepExecutor, ScriptRun,
///                     MachineRequest, LogSink, JobId, ProvisionContext};
/// use tokio_util::sync::CancellationToken;
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let hypervisor = HostHypervisor::new();
/// let (sink, mut lines) = LogSink::channel(64);
/// let request = MachineRequest { job_id: JobId::new(), label: "host".into(), debug_ssh: false };
/// let cancel = CancellationToken::new();
/// let machine = hypervisor.provision(&request, &ProvisionContext::new(&sink, &cancel)).await?;
/// let step = ScriptRun {
///     index: 0,
///     script: "echo hello".into(),
///     shell: "sh -e {0}".into(),
///     env: Default::default(),
///     working_directory: None,
///     path: Vec::new(),
/// };
/// let exit = HostExecutor::new().run_script(&machine, &step, &sink, &cancel).await?;
/// assert!(exit.succeeded());
/// assert_eq!(lines.recv().await.map(|l| l.line).as_deref(), Some("hello"));
/// hypervisor.destroy(&machine).await?;
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(run()).unwrap();
/// ```
#[async_trait]
pub trait StepExecutor: Send + Sync + 'static {
    /// Runs a script step.
    ///
    /// # Errors
    /// [`ExecError`] when the step could not be started or the machine was lost.
    async fn run_script(
        &self,
        machine: &Machine,
        step: &ScriptRun,
        output: &LogSink,
        cancel: &CancellationToken,
    ) -> Result<StepExit, ExecError>;

    /// Puts the repository into the workspace (the built-in `actions/checkout`).
    ///
    /// # Errors
    /// [`ExecError`] when the source could not be fetched or uploaded.
    async fn checkout(
        &self,
        machine: &Machine,
        source: &CheckoutSource,
        step: &CheckoutStep,
        output: &LogSink,
        cancel: &CancellationToken,
    ) -> Result<StepExit, ExecError>;

    /// Writes `text` to the file at the absolute `path` in the machine, creating its
    /// directory, before the job's first step (the event payload that `GITHUB_EVENT_PATH`
    /// names). Replaces the file if it exists.
    ///
    /// The provided implementation runs a POSIX `sh` script through
    /// [`StepExecutor::run_script`] (a here-document, so `text` must be text); executors
    /// with a direct way to write files use it instead.
    ///
    /// # Errors
    /// [`ExecError`] when the file could not be written.
    async fn write_file(&self, machine: &Machine, path: &str, text: &str, cancel: &CancellationToken) -> Result<(), ExecError> {
        let script = write_file_script(path, text);
        // Nothing reads the script's output: a closed channel drops it instead of blocking.
        let (sink, _) = LogSink::channel(1);
        let run = ScriptRun {
            index: usize::MAX - 1,
            script,
            shell: "sh -e {0}".to_owned(),
            env: machine.step_env(),
            working_directory: None,
            path: Vec::new(),
        };
        let exit = self.run_script(machine, &run, &sink, cancel).await?;
        if exit.succeeded() {
            Ok(())
        } else {
            Err(ExecError::Setup { message: format!("could not write {path} in the machine (exit code {:?})", exit.exit_code), source: None })
        }
    }
}

/// A `sh` script that writes `text` to `path` with a here-document whose delimiter
/// appears in no line of `text`.
fn write_file_script(path: &str, text: &str) -> String {
    let mut delimiter = "SOLSTICE_FILE_END".to_owned();
    while text.lines().any(|line| line == delimiter) {
        delimiter.push('_');
    }
    let quoted = format!("'{}'", path.replace('\'', "'\\''"));
    let dir = match path.rsplit_once('/') {
        Some((dir, _)) if !dir.is_empty() => format!("mkdir -p '{}'\n", dir.replace('\'', "'\\''")),
        _ => String::new(),
    };
    let newline = if text.ends_with('\n') || text.is_empty() { "" } else { "\n" };
    format!("{dir}cat > {quoted} <<'{delimiter}'\n{text}{newline}{delimiter}\n")
}

/// A shell command line split into words, with the script's file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellCommand {
    words: Vec<String>,
    /// The file name the script should get (GitHub picks the extension by shell:
    /// `.sh`, `.py`, `.ps1`), e.g. `step-3.sh`.
    pub script_name: String,
}

impl ShellCommand {
    /// The argument vector with `{0}` replaced by `script_path`. A shell line without
    /// `{0}` gets the path appended, as GitHub does.
    pub fn argv(&self, script_path: &str) -> Vec<String> {
        let mut replaced = false;
        let mut argv: Vec<String> = self
            .words
            .iter()
            .map(|w| {
                if w.contains("{0}") {
                    replaced = true;
                    w.replace("{0}", script_path)
                } else {
                    w.clone()
                }
            })
            .collect();
        if !replaced {
            argv.push(script_path.to_owned());
        }
        argv
    }
}

/// Splits a step's shell line (`bash --noprofile --norc -eo pipefail {0}`) and picks the
/// script file name for step `index`. Executors of every kind share this so that a
/// shell means the same on the host and in a VM.
pub fn shell_command(shell: &str, index: usize) -> ShellCommand {
    let words: Vec<String> = shell.split_whitespace().map(str::to_owned).collect();
    let program = words.first().map(|w| w.rsplit('/').next().unwrap_or(w)).unwrap_or("");
    let extension = match program {
        p if p.starts_with("python") => "py",
        "pwsh" | "powershell" => "ps1",
        "cmd" => "cmd",
        _ => "sh",
    };
    let name = if index == usize::MAX { "checkout".to_owned() } else { format!("step-{index}") };
    ShellCommand { words, script_name: format!("{name}.{extension}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_provided_write_file_writes_through_a_shell_script() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/event.json").to_string_lossy().into_owned();
        let machine = Machine {
            id: "m".into(),
            label: "host".into(),
            workspace: dir.path().to_string_lossy().into_owned(),
            access: crate::MachineAccess::Local,
            runner: crate::RunnerInfo {
                os: "Linux".into(),
                arch: "X64".into(),
                name: "m".into(),
                temp: String::new(),
                tool_cache: String::new(),
            },
            env: BTreeMap::new(),
        };
        /// Only the provided `write_file`, over the host's `run_script`.
        struct ScriptsOnly(crate::HostExecutor);
        #[async_trait]
        impl StepExecutor for ScriptsOnly {
            async fn run_script(&self, m: &Machine, s: &ScriptRun, o: &LogSink, c: &CancellationToken) -> Result<StepExit, ExecError> {
                self.0.run_script(m, s, o, c).await
            }
            async fn checkout(&self, m: &Machine, s: &CheckoutSource, st: &CheckoutStep, o: &LogSink, c: &CancellationToken) -> Result<StepExit, ExecError> {
                self.0.checkout(m, s, st, o, c).await
            }
        }
        let text = "{\"a\":\"it's $HOME\"}\nSOLSTICE_FILE_END\nlast";
        ScriptsOnly(crate::HostExecutor::new()).write_file(&machine, &path, text, &CancellationToken::new()).await.expect("writes");
        assert_eq!(std::fs::read_to_string(&path).expect("reads"), format!("{text}\n"));
    }

    #[test]
    fn shells_substitute_the_script_path() {
        let bash = shell_command("bash --noprofile --norc -eo pipefail {0}", 2);
        assert_eq!(bash.script_name, "step-2.sh");
        assert_eq!(bash.argv("/t/s.sh"), ["bash", "--noprofile", "--norc", "-eo", "pipefail", "/t/s.sh"]);
        let py = shell_command("python {0}", 0);
        assert_eq!(py.script_name, "step-0.py");
        assert_eq!(shell_command("perl", 1).argv("/x"), ["perl", "/x"]);
    }
}
