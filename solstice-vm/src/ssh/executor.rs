//! The SSH [`StepExecutor`].

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use solstice_core::{
    CheckoutSource, CheckoutStep, CommandFiles, ExecError, LogSink, LogStream, Machine, MachineAccess, ScriptRun, SshAccess,
    StepExecutor, StepExit,
};
use solstice_core::support::{GitFetch, check_git_version, checkout_dir, resolve_working_dir, shell_command};
use tokio_util::sync::CancellationToken;

use super::{SshError, SshSession};

/// Runs steps in machines over SSH.
///
/// For each step it uploads the script by SFTP (mode 0755) into a scratch directory,
/// runs it with the step's shell, environment and working directory, streams stdout and
/// stderr line by line while the step runs, and reads back the step's command files
/// ([`CommandFiles::FILES`]). On cancellation (or the engine's timeout) it
/// kills the step's remote process group. The connection is verified against the
/// machine's host key and kept open between steps of the same machine. The built-in
/// checkout fetches on the host (into a 0700 directory, the token only in git's
/// environment: [`GitFetch`]) and uploads the repository as a tar stream, so guests
/// without git work. A `working-directory` or checkout `path:` outside the job's
/// directories, written so or through a symbolic link in the guest, is refused
/// ([`ExecError::OutsideWorkspace`]) before anything is made.
/// The step's environment is [`ScriptRun::env`] as given (the engine puts the machine's
/// own variables in it); the workspace, `runner.temp` and `runner.tool_cache` are made
/// if missing.
/// Cloning is cheap and shares connections.
#[derive(Debug, Clone)]
pub struct SshExecutor {
    scratch: String,
    connect_timeout: Duration,
    sessions: Arc<Mutex<HashMap<String, SshSession>>>,
}

impl Default for SshExecutor {
    fn default() -> Self {
        Self::new()
    }
}

/// Quotes a string for a POSIX shell.
pub(crate) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn connection_error(machine: &Machine, e: SshError) -> ExecError {
    ExecError::Connection { machine: machine.id.clone(), source: Box::new(e) }
}

fn setup_error(message: impl Into<String>, e: SshError) -> ExecError {
    ExecError::Setup { message: message.into(), source: Some(Box::new(e)) }
}

impl SshExecutor {
    /// An executor that keeps its files in `/tmp/solstice` in the guest.
    pub fn new() -> Self {
        Self { scratch: "/tmp/solstice".into(), connect_timeout: Duration::from_secs(60), sessions: Arc::default() }
    }

    /// The directory in the guest for scripts and command files. Default: `/tmp/solstice`.
    #[must_use]
    pub fn scratch_dir(mut self, dir: impl Into<String>) -> Self {
        self.scratch = dir.into();
        self
    }

    fn access(machine: &Machine) -> Result<&SshAccess, ExecError> {
        match &machine.access {
            MachineAccess::Ssh(access) => Ok(access),
            _ => Err(ExecError::UnsupportedMachine(machine.id.clone())),
        }
    }

    async fn session(&self, machine: &Machine) -> Result<SshSession, ExecError> {
        let access = Self::access(machine)?;
        let key = format!("{}@{}", machine.id, access.addr);
        {
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            sessions.retain(|_, s| !s.is_closed());
            if let Some(session) = sessions.get(&key) {
                return Ok(session.clone());
            }
        }
        let cancel = CancellationToken::new();
        let session = SshSession::connect_with_retry(access, self.connect_timeout, Duration::from_millis(250), &cancel)
            .await
            .map_err(|e| connection_error(machine, e))?;
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(key, session.clone());
        Ok(session)
    }

    /// Forgets the connection to a machine (call after destroying it).
    pub fn forget(&self, machine: &Machine) {
        let prefix = format!("{}@", machine.id);
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).retain(|k, _| !k.starts_with(&prefix));
    }

}

/// Checks in the guest that `resolved` (already under one of `roots` lexically) stays
/// under one of them once symbolic links are followed: each path's longest existing
/// ancestor is resolved with `pwd -P` (POSIX), the rest appended as written.
async fn check_links(
    session: &SshSession,
    machine: &Machine,
    resolved: &str,
    roots: &[String],
    what: &'static str,
) -> Result<(), ExecError> {
    let paths: Vec<&str> = std::iter::once(resolved).chain(roots.iter().map(String::as_str)).collect();
    let outside = |path: String| ExecError::OutsideWorkspace { what, path, workspace: machine.workspace.clone() };
    if paths.iter().any(|p| p.contains('\n')) {
        return Err(outside(resolved.to_owned()));
    }
    let quoted: Vec<String> = paths.iter().map(|p| shell_quote(p)).collect();
    let command = format!(
        "for p in {}; do q=$p; while [ ! -d \"$q\" ]; do q=$(dirname \"$q\"); done; echo \"$q\"; (cd \"$q\" && pwd -P); done",
        quoted.join(" ")
    );
    let out = session.exec(&command).await.map_err(|e| connection_error(machine, e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    if out.exit_code != Some(0) || lines.len() != 2 * paths.len() {
        return Err(ExecError::Setup { message: format!("could not resolve {resolved} in the machine"), source: None });
    }
    let physical: Vec<String> = paths
        .iter()
        .zip(lines.chunks(2))
        .map(|(path, pair)| {
            let rest = path.strip_prefix(pair[0]).unwrap_or("");
            format!("{}/{}", pair[1].trim_end_matches('/'), rest.trim_start_matches('/'))
        })
        .map(|p| solstice_core::support::resolve_path("/", &p))
        .collect();
    let (real, real_roots) = physical.split_at(1);
    if real_roots.iter().any(|root| solstice_core::support::is_within(&real[0], root)) {
        Ok(())
    } else {
        Err(outside(real[0].clone()))
    }
}

#[async_trait]
impl StepExecutor for SshExecutor {
    async fn run_script(
        &self,
        machine: &Machine,
        step: &ScriptRun,
        output: &LogSink,
        cancel: &CancellationToken,
    ) -> Result<StepExit, ExecError> {
        // A `working-directory` outside the workspace is allowed here, as on GitHub's
        // runners (`/tmp`, `/opt/build`): the machine and everything in it go with the
        // job. Only the host executor refuses it (issue 16, item 8: there an escaped
        // directory outlives the job).
        let cwd = resolve_working_dir(machine, step.working_directory.as_deref());
        let session = self.session(machine).await?;
        let command = shell_command(&step.shell, step.index);
        let dir = &self.scratch;
        let n = if step.index == usize::MAX { "checkout".to_owned() } else { step.index.to_string() };
        let script = format!("{dir}/{}", command.script_name);
        let pid_file = format!("{dir}/pid-{n}");
        let command_files: Vec<(&str, String)> =
            CommandFiles::FILES.iter().map(|(variable, name)| (*variable, format!("{dir}/{name}-{n}"))).collect();
        session.create_dir_all(dir).await.map_err(|e| setup_error(format!("could not create {dir} in the machine"), e))?;
        session
            .upload(&script, step.script.as_bytes(), 0o755)
            .await
            .map_err(|e| setup_error("could not upload the step's script", e))?;
        let mut env: Vec<String> = step
            .env
            .iter()
            .filter(|(k, _)| k.as_str() != "PATH")
            .map(|(k, v)| shell_quote(&format!("{k}={v}")))
            .collect();
        for (name, file) in &command_files {
            env.push(shell_quote(&format!("{name}={file}")));
        }
        let base_path = step.env.get("PATH").map(|p| shell_quote(p)).unwrap_or_else(|| "\"$PATH\"".into());
        let mut dirs = step.path.clone();
        dirs.reverse();
        let prefix: String = dirs.iter().map(|d| format!("{d}:")).collect();
        env.push(format!("{}{base_path}", shell_quote(&format!("PATH={prefix}"))));
        let argv: Vec<String> = command.argv(&script).iter().map(|a| shell_quote(a)).collect();
        // The step's stderr joins its stdout in the guest (`2>&1`): the guest's SSH server
        // reads the two pipes separately and may forward them out of order, so an
        // `::add-mask::` printed on one stream could arrive after the value printed next on
        // the other and leave it unmasked (issue 16, item 4). One pipe keeps the order the
        // step wrote. Nothing is lost: both forges show the two streams as one log, as
        // GitHub's and Forgejo's runners do.
        let remote = format!(
            "mkdir -p {dirs} && {empty} && cd {cwd} && echo $$ > {pid} && exec env {env} {argv} 2>&1",
            dirs = [&machine.workspace, &machine.runner.temp, &machine.runner.tool_cache]
                .into_iter()
                .filter(|d| !d.is_empty())
                .map(|d| shell_quote(d))
                .collect::<Vec<_>>()
                .join(" "),
            empty = command_files.iter().map(|(_, file)| format!(": > {}", shell_quote(file))).collect::<Vec<_>>().join(" && "),
            cwd = shell_quote(&cwd),
            pid = shell_quote(&pid_file),
            env = env.join(" "),
            argv = argv.join(" "),
        );
        let code = session
            .exec_streaming(&remote, output, cancel)
            .await
            .map_err(|e| connection_error(machine, e))?;
        if cancel.is_cancelled() {
            // Kill the step's process group and every descendant of its shell: SSH
            // servers do not always give a non-pty command its own process group.
            let kill = kill_tree_command(&pid_file);
            if let Err(e) = tokio::time::timeout(Duration::from_secs(10), session.exec(&kill)).await.unwrap_or(Ok(Default::default())) {
                tracing::warn!(machine = %machine.id, error = %e, "could not kill a cancelled step");
            }
            return Ok(StepExit { exit_code: None, ..StepExit::default() });
        }
        let read = |path: String| {
            let session = session.clone();
            async move { session.read_file(&path).await.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default() }
        };
        let mut files = CommandFiles::default();
        for (variable, file) in command_files {
            files.set(variable, read(file).await);
        }
        Ok(StepExit { exit_code: code, files })
    }

    async fn write_file(&self, machine: &Machine, path: &str, text: &str, _cancel: &CancellationToken) -> Result<(), ExecError> {
        let session = self.session(machine).await?;
        if let Some((dir, _)) = path.rsplit_once('/').filter(|(dir, _)| !dir.is_empty()) {
            session.create_dir_all(dir).await.map_err(|e| setup_error(format!("could not create {dir} in the machine"), e))?;
        }
        session.upload(path, text.as_bytes(), 0o644).await.map_err(|e| setup_error(format!("could not write {path} in the machine"), e))
    }

    async fn checkout(
        &self,
        machine: &Machine,
        source: &CheckoutSource,
        step: &CheckoutStep,
        output: &LogSink,
        cancel: &CancellationToken,
    ) -> Result<StepExit, ExecError> {
        let dest = checkout_dir(machine, &step.path)?;
        let check_dest = async {
            if step.path.is_empty() {
                return Ok(());
            }
            let session = self.session(machine).await?;
            check_links(&session, machine, &dest, std::slice::from_ref(&machine.workspace), "Repository path").await
        };
        match source {
            CheckoutSource::LocalDir { path } => {
                check_dest.await?;
                output.send(LogStream::System, format!("Uploading {path} into {dest}")).await;
                let session = self.session(machine).await?;
                upload_tree(&session, std::path::Path::new(path), None, &dest, cancel).await
            }
            CheckoutSource::Git { url, rev, token } => {
                check_dest.await?;
                check_git_version().await?;
                let rev = step.git_ref.as_deref().unwrap_or(rev);
                output.send(LogStream::System, format!("Fetching {url} at {rev} on the host")).await;
                // The clone is private on the host (0700, files 0600 through the script's
                // umask); the upload gives group and others read access again, as a
                // checkout in the guest would have.
                let clone = tempfile::Builder::new()
                    .prefix("solstice-checkout-")
                    .permissions(std::fs::Permissions::from_mode(0o700))
                    .tempdir()
                    .map_err(|e| ExecError::Setup { message: "could not create a temporary directory".into(), source: Some(Box::new(e)) })?;
                let fetch = GitFetch { url, rev, depth: step.fetch_depth.max(1), token: token.as_ref() };
                let status = tokio::process::Command::new("sh")
                    .args(["-c", &fetch.script(&clone.path().to_string_lossy())])
                    .envs(fetch.env())
                    .stdin(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .status()
                    .await
                    .map_err(|e| ExecError::Setup { message: "could not run git on the host".into(), source: Some(Box::new(e)) })?;
                if !status.success() {
                    output.send(LogStream::Stderr, format!("git fetch of {url} failed ({status})")).await;
                    return Ok(StepExit { exit_code: status.code().or(Some(1)), ..StepExit::default() });
                }
                let session = self.session(machine).await?;
                output.send(LogStream::System, format!("Uploading the checkout into {dest}")).await;
                upload_tree(&session, clone.path(), Some("go=u-w"), &dest, cancel).await
            }
        }
    }
}

/// A POSIX shell command that kills the process whose pid is in `pid_file`, its process
/// group, and all its descendants (collected with `ps -o pid,ppid`, which busybox,
/// procps and illumos all support), children before they can be reparented.
fn kill_tree_command(pid_file: &str) -> String {
    format!(
        "p=$(cat {pid} 2>/dev/null); [ -n \"$p\" ] || exit 0; kill -STOP $p 2>/dev/null; all=$p; new=$p; \
         while [ -n \"$new\" ]; do next=; for q in $new; do \
         next=\"$next $(ps -o pid,ppid | awk -v q=$q 'NR>1 && $2==q {{print $1}}')\"; done; \
         new=$(echo $next); all=\"$all $new\"; done; \
         kill -KILL -- -$p 2>/dev/null; kill -KILL $all 2>/dev/null; true",
        pid = shell_quote(pid_file)
    )
}

/// Streams `local` as a tar archive into `dest` in the guest (`tar -xf -` there),
/// with the modes in the archive changed by `mode` (GNU tar's `--mode`) if given.
async fn upload_tree(
    session: &SshSession,
    local: &std::path::Path,
    mode: Option<&str>,
    dest: &str,
    cancel: &CancellationToken,
) -> Result<StepExit, ExecError> {
    let mut tar = tokio::process::Command::new("tar");
    tar.arg("-C").arg(local).args(["-cf", "-", "--exclude=./target", "--exclude=./.git/index.lock"]);
    if let Some(mode) = mode {
        tar.arg(format!("--mode={mode}"));
    }
    let mut tar = tar
        .arg(".")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ExecError::Setup { message: "could not run tar on the host".into(), source: Some(Box::new(e)) })?;
    let Some(stdout) = tar.stdout.take() else {
        return Err(ExecError::Setup { message: "tar gave no output".into(), source: None });
    };
    let remote = format!("mkdir -p {d} && tar -xf - -C {d}", d = shell_quote(dest));
    let upload = session.exec_with_input(&remote, stdout);
    let out = tokio::select! {
        out = upload => out.map_err(|e| ExecError::Setup { message: "could not upload the repository".into(), source: Some(Box::new(e)) })?,
        _ = cancel.cancelled() => return Ok(StepExit::default()),
    };
    let _ = tar.wait().await;
    if out.exit_code != Some(0) {
        tracing::warn!(stderr = %String::from_utf8_lossy(&out.stderr), "tar in the guest failed");
    }
    Ok(StepExit { exit_code: out.exit_code, ..StepExit::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
