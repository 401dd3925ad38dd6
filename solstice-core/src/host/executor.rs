use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::{
    CheckoutSource, CheckoutStep, CommandFiles, ExecError, LogSink, LogStream, Machine, MachineAccess, ScriptRun,
    StepExecutor, StepExit,
};
use crate::support::{GitFetch, check_git_version, checkout_dir, job_dirs, shell_command, working_dir};

/// How long output is still read after a step's process exited, for background
/// processes that inherited its stdout (they are not waited for).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// A [`StepExecutor`] that runs steps as processes on this host.
///
/// Each step runs in its own process group, which is killed on cancellation or timeout.
/// The script is written to a temporary file next to the step's command files
/// ([`CommandFiles::FILES`]), all removed after the step; the directory is made 0700 and
/// the files 0600 as they are created, since they hold interpolated secrets. A
/// `working-directory` or checkout `path:` outside the job's directories, written so or
/// through a symbolic link, is refused ([`ExecError::OutsideWorkspace`]). The checkout
/// writes its files 0600 (directories 0700) and passes the token to git in the
/// environment only ([`GitFetch`]). Works with [`MachineAccess::Local`] machines, as
/// [`crate::HostHypervisor`] makes.
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

/// The mode of the directories the executor makes: only their owner may enter them.
const PRIVATE_DIR: u32 = 0o700;
/// The mode of the files the executor writes: only their owner may read them.
const PRIVATE_FILE: u32 = 0o600;

/// `path` with symbolic links resolved as far as it exists; the part that does not exist
/// yet (a checkout `path:` the checkout will make) is appended as it is.
fn physical(path: &Path) -> PathBuf {
    let mut missing = Vec::new();
    let mut existing = path;
    loop {
        if let Ok(real) = existing.canonicalize() {
            return missing.iter().rev().fold(real, |dir, name| dir.join(name));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name);
                existing = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// Checks that `resolved` (already under one of `roots` lexically) stays under one of
/// them once symbolic links are followed, as a link in the workspace could lead out.
fn check_links(resolved: &str, roots: &[String], what: &'static str, workspace: &str) -> Result<PathBuf, ExecError> {
    let real = physical(Path::new(resolved));
    let inside = roots.iter().any(|root| real.starts_with(physical(Path::new(root))));
    if inside {
        Ok(PathBuf::from(resolved))
    } else {
        Err(ExecError::OutsideWorkspace { what, path: real.to_string_lossy().into_owned(), workspace: workspace.to_owned() })
    }
}

/// Writes `content` to a new file that is 0600 from its creation on.
async fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut file = tokio::fs::OpenOptions::new().write(true).create_new(true).mode(PRIVATE_FILE).open(path).await?;
    file.write_all(content.as_bytes()).await?;
    file.flush().await
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
        let cwd = working_dir(machine, step.working_directory.as_deref())?;
        let cwd = check_links(&cwd, &job_dirs(machine), "Working directory", &machine.workspace)?;
        let files = tempfile::Builder::new()
            .prefix("solstice-step-")
            .permissions(std::fs::Permissions::from_mode(PRIVATE_DIR))
            .tempdir()
            .map_err(|e| setup_error("could not create the step's temporary directory", e))?;
        let command = shell_command(&step.shell, step.index);
        let script_path = files.path().join(&command.script_name);
        let command_files: Vec<(&str, PathBuf)> =
            CommandFiles::FILES.iter().map(|(variable, name)| (*variable, files.path().join(name))).collect();
        let empty = command_files.iter().map(|(_, path)| (path, ""));
        for (path, content) in std::iter::once((&script_path, step.script.as_str())).chain(empty) {
            write_private(path, content)
                .await
                .map_err(|e| setup_error(format!("could not write {}", path.display()), e))?;
        }
        let argv = command.argv(&script_path.to_string_lossy());
        let Some((program, args)) = argv.split_first() else {
            return Err(ExecError::Setup { message: "the step's shell is empty".into(), source: None });
        };
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
        // stdout and stderr share one pipe, as `2>&1` would: with two pipes the order in
        // which the kernel hands us their data is not the order the step wrote it, and an
        // `::add-mask::` on one stream must take effect before the value printed next on
        // the other (issue 16, item 4). Both forges show the two streams as one log anyway.
        let (reader, writer) = std::io::pipe().map_err(|e| setup_error("could not create the step's output pipe", e))?;
        let writer_for_stderr =
            writer.try_clone().map_err(|e| setup_error("could not create the step's output pipe", e))?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(writer))
            .stderr(Stdio::from(writer_for_stderr))
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                setup_error(format!("could not start `{program}` in {}", cwd.display()), e)
            })?;
        // The command still holds our copies of the write end: without dropping it the
        // pipe would never reach end-of-file.
        drop(command);
        let pid = child.id();
        let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(std::os::fd::OwnedFd::from(reader))
            .map_err(|e| setup_error("could not read the step's output pipe", e))?;
        let readers = pump(reader, output);
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

    async fn write_file(&self, machine: &Machine, path: &str, text: &str, _cancel: &CancellationToken) -> Result<(), ExecError> {
        check_local(machine)?;
        // Private from creation on, like everything else of the job (issue 16, item 6): the
        // event payload can name private repositories and users.
        if let Some(dir) = Path::new(path).parent() {
            tokio::fs::DirBuilder::new()
                .recursive(true)
                .mode(PRIVATE_DIR)
                .create(dir)
                .await
                .map_err(|e| setup_error(format!("could not create {}", dir.display()), e))?;
        }
        let _ = tokio::fs::remove_file(path).await;
        write_private(Path::new(path), text).await.map_err(|e| setup_error(format!("could not write {path}"), e))
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
        let dest = checkout_dir(machine, &step.path)?;
        let dest = check_links(&dest, std::slice::from_ref(&machine.workspace), "Repository path", &machine.workspace)?;
        let dest = dest.to_string_lossy();
        let (script, env) = match source {
            CheckoutSource::LocalDir { path } => {
                output.send(LogStream::System, format!("Copying {path} into {dest}")).await;
                // `--no-same-permissions`: the umask applies to what tar makes, also as root.
                let script = format!(
                    "umask 077; mkdir -p {dest} && cd {src} && tar -cf - --exclude=./target --exclude=./.git/index.lock . | tar --no-same-permissions -xf - -C {dest}",
                    dest = shell_quote(&dest),
                    src = shell_quote(path)
                );
                (script, std::collections::BTreeMap::new())
            }
            CheckoutSource::Git { url, rev, token } => {
                output.send(LogStream::System, format!("Fetching {url} at {rev}")).await;
                check_git_version().await?;
                let fetch = GitFetch {
                    url,
                    rev: step.git_ref.as_deref().unwrap_or(rev),
                    depth: step.fetch_depth,
                    token: token.as_ref(),
                };
                (fetch.script(&dest), fetch.env())
            }
        };
        let run = ScriptRun {
            index: usize::MAX,
            script,
            shell: "sh -e {0}".to_owned(),
            env,
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

/// Forwards the step's output (stdout and stderr, one pipe) to the sink line by line.
async fn pump(reader: impl AsyncRead + Unpin, sink: &LogSink) {
    let mut reader = Some(reader);
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    while reader.is_some() {
        let n = read_some(&mut reader, &mut buf).await;
        sink.send_chunk(LogStream::Stdout, &mut pending, &buf[..n]).await;
    }
    sink.flush(LogStream::Stdout, &mut pending).await;
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
