use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt as _;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::{
    CheckoutSource, CheckoutStep, CommandFiles, ExecError, LogSink, LogStream, Machine, MachineAccess, ScriptRun,
    StepExecutor, StepExit,
};
use crate::support::shell_command;

/// How long output is still read after a step's process exited, for background
/// processes that inherited its stdout (they are not waited for).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// A [`StepExecutor`] that runs steps as processes on this host.
///
/// Each step runs in its own process group, which is killed on cancellation or timeout.
/// The script is written to a temporary file next to the step's command files
/// ([`CommandFiles::FILES`]), all removed after the step. Works with
/// [`MachineAccess::Local`] machines, as [`crate::HostHypervisor`] makes.
#[derive(Debug, Clone, Default)]
pub struct HostExecutor {}

impl HostExecutor {
    /// A host executor.
    pub fn new() -> Self {
        Self {}
    }
}

fn setup_error(message: impl Into<String>, e: std::io::Error) -> ExecError {
    ExecError::Setup { message: message.into(), source: Some(Box::new(e)) }
}

fn check_local(machine: &Machine) -> Result<(), ExecError> {
    match machine.access {
        MachineAccess::Local => Ok(()),
        _ => Err(ExecError::UnsupportedMachine(machine.id.clone())),
    }
}

fn resolve_dir(workspace: &str, dir: Option<&str>) -> PathBuf {
    match dir {
        Some(d) if Path::new(d).is_absolute() => PathBuf::from(d),
        Some(d) => Path::new(workspace).join(d),
        None => PathBuf::from(workspace),
    }
}

#[async_trait]
impl StepExecutor for HostExecutor {
    async fn run_script(
        &self,
        machine: &Machine,
        step: &ScriptRun,
        output: &LogSink,
        cancel: &CancellationToken,
    ) -> Result<StepExit, ExecError> {
        check_local(machine)?;
        let files = tempfile::Builder::new()
            .prefix("solstice-step-")
            .tempdir()
            .map_err(|e| setup_error("could not create the step's temporary directory", e))?;
        let command = shell_command(&step.shell, step.index);
        let script_path = files.path().join(&command.script_name);
        let command_files: Vec<(&str, PathBuf)> =
            CommandFiles::FILES.iter().map(|(variable, name)| (*variable, files.path().join(name))).collect();
        let empty = command_files.iter().map(|(_, path)| (path, ""));
        for (path, content) in std::iter::once((&script_path, step.script.as_str())).chain(empty) {
            tokio::fs::write(path, content)
                .await
                .map_err(|e| setup_error(format!("could not write {}", path.display()), e))?;
        }
        let argv = command.argv(&script_path.to_string_lossy());
        let Some((program, args)) = argv.split_first() else {
            return Err(ExecError::Setup { message: "the step's shell is empty".into(), source: None });
        };
        let cwd = resolve_dir(&machine.workspace, step.working_directory.as_deref());
        let mut command = Command::new(program);
        command.args(args).current_dir(&cwd).envs(&step.env);
        if !step.path.is_empty() {
            // Steps on the host inherit its environment, so its PATH is the base here.
            let base = step.env.get("PATH").cloned().or_else(|| std::env::var("PATH").ok()).unwrap_or_default();
            let mut dirs = step.path.clone();
            dirs.reverse();
            dirs.push(base);
            command.env("PATH", dirs.join(":"));
        }
        for (variable, path) in &command_files {
            command.env(variable, path);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                setup_error(format!("could not start `{program}` in {}", cwd.display()), e)
            })?;
        let pid = child.id();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let readers = pump_both(stdout, stderr, output);
        tokio::pin!(readers);
        let mut readers_done = false;
        let status = tokio::select! {
            status = child.wait() => Some(status),
            _ = &mut readers, if !readers_done => {
                readers_done = true;
                tokio::select! {
                    status = child.wait() => Some(status),
                    _ = cancel.cancelled() => None,
                }
            }
            _ = cancel.cancelled() => None,
        };
        let exit_code = match status {
            Some(status) => status
                .map_err(|e| setup_error("could not wait for the step's process", e))?
                .code(),
            None => {
                kill_group(pid);
                let _ = child.wait().await;
                None
            }
        };
        if !readers_done {
            let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, &mut readers).await;
        }
        let mut read_back = CommandFiles::default();
        for (variable, path) in command_files {
            // A file the step deleted or made unreadable counts as empty.
            let text = tokio::fs::read(&path).await.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
            read_back.set(variable, text);
        }
        Ok(StepExit { exit_code, files: read_back })
    }

    async fn checkout(
        &self,
        machine: &Machine,
        source: &CheckoutSource,
        step: &CheckoutStep,
        output: &LogSink,
        cancel: &CancellationToken,
    ) -> Result<StepExit, ExecError> {
        check_local(machine)?;
        let dest = resolve_dir(&machine.workspace, Some(&step.path).filter(|p| !p.is_empty()).map(String::as_str));
        let script = match source {
            CheckoutSource::LocalDir { path } => {
                output.send(LogStream::System, format!("Copying {path} into {}", dest.display())).await;
                format!(
                    "mkdir -p {dest} && cd {src} && tar -cf - --exclude=./target --exclude=./.git/index.lock . | tar -xf - -C {dest}",
                    dest = shell_quote(&dest.to_string_lossy()),
                    src = shell_quote(path)
                )
            }
            CheckoutSource::Git { url, rev, token } => {
                output.send(LogStream::System, format!("Fetching {url} at {rev}")).await;
                let rev = step.git_ref.as_deref().unwrap_or(rev);
                let depth = if step.fetch_depth == 0 { String::new() } else { format!(" --depth {}", step.fetch_depth) };
                let auth = match token {
                    Some(token) => format!(
                        " -c http.extraheader=\"Authorization: basic $(printf 'x-access-token:%s' {} | base64 -w0)\"",
                        shell_quote(token.expose())
                    ),
                    None => String::new(),
                };
                format!(
                    "set -e; mkdir -p {dest}; cd {dest}; git init -q .; git remote add origin {url} 2>/dev/null || git remote set-url origin {url}; git{auth} fetch -q{depth} origin {rev}; git checkout -q FETCH_HEAD",
                    dest = shell_quote(&dest.to_string_lossy()),
                    url = shell_quote(url),
                    rev = shell_quote(rev),
                )
            }
        };
        let run = ScriptRun {
            index: usize::MAX,
            script,
            shell: "sh -e {0}".to_owned(),
            env: std::collections::BTreeMap::new(),
            working_directory: None,
            path: Vec::new(),
        };
        self.run_script(machine, &run, output, cancel).await
    }
}

/// Quotes a string for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn kill_group(pid: Option<u32>) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) else { return };
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    if let Err(e) = killpg(Pid::from_raw(pid), Signal::SIGKILL) {
        tracing::debug!(pid, error = %e, "process group already gone");
    }
}

/// Reads the step's stdout and stderr in one place: whenever one has data, what the
/// other holds at that moment is read too and both go to the sink together
/// ([`LogSink::send_read_together`]), so an `::add-mask::` on one stream takes effect
/// before a line the step printed after it on the other.
async fn pump_both(stdout: Option<impl AsyncRead + Unpin>, stderr: Option<impl AsyncRead + Unpin>, sink: &LogSink) {
    let (mut stdout, mut stderr) = (stdout, stderr);
    let (mut out_pending, mut err_pending) = (Vec::new(), Vec::new());
    let (mut out_buf, mut err_buf) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    while stdout.is_some() || stderr.is_some() {
        let (mut out_read, mut err_read) = (0, 0);
        tokio::select! {
            n = read_some(&mut stdout, &mut out_buf), if stdout.is_some() => out_read = n,
            n = read_some(&mut stderr, &mut err_buf), if stderr.is_some() => err_read = n,
        }
        // What the other stream holds now was written before what was just read from
        // this one was read: take it too (a read that would wait is dropped unstarted).
        if out_read == 0 && stdout.is_some() {
            out_read = read_some(&mut stdout, &mut out_buf).now_or_never().unwrap_or(0);
        }
        if err_read == 0 && stderr.is_some() {
            err_read = read_some(&mut stderr, &mut err_buf).now_or_never().unwrap_or(0);
        }
        sink.send_read_together((&mut out_pending, &out_buf[..out_read]), (&mut err_pending, &err_buf[..err_read])).await;
    }
    sink.flush(LogStream::Stdout, &mut out_pending).await;
    sink.flush(LogStream::Stderr, &mut err_pending).await;
}

/// Reads once from `reader`; at the end of the stream (or on an error) sets it to `None`
/// and returns 0.
async fn read_some(reader: &mut Option<impl AsyncRead + Unpin>, buf: &mut [u8]) -> usize {
    let Some(r) = reader.as_mut() else { return 0 };
    match r.read(buf).await {
        Ok(0) | Err(_) => {
            *reader = None;
            0
        }
        Ok(n) => n,
    }
}
