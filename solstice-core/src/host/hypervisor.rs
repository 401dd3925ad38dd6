use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use crate::{Hypervisor, HypervisorError, Machine, MachineAccess, MachineRequest, ProvisionContext, RunnerInfo};

/// A [`Hypervisor`] whose "machines" are fresh temporary directories on this host.
///
/// It serves the `host` label (and any labels given to [`HostHypervisor::with_labels`]).
/// Each machine is a new directory under the system's temporary directory (or the one
/// given to [`HostHypervisor::in_dir`]) holding the workspace and the job's
/// `runner.temp` and `runner.tool_cache` (all mode 0700), removed by `destroy`. Its machines report this
/// host's OS and architecture ([`RunnerInfo::host_os`], [`RunnerInfo::host_arch`]). Pair it with
/// [`crate::HostExecutor`]. Steps run with the host user's rights: use it for trusted
/// jobs and for tests. Cloning is cheap.
#[derive(Debug, Clone)]
pub struct HostHypervisor {
    labels: Arc<Vec<String>>,
    parent: Option<PathBuf>,
    live: Arc<Mutex<HashMap<String, tempfile::TempDir>>>,
}

impl HostHypervisor {
    /// A host hypervisor serving the `host` label.
    pub fn new() -> Self {
        Self::with_labels(vec!["host".to_owned()])
    }

    /// A host hypervisor serving the given labels.
    pub fn with_labels(labels: Vec<String>) -> Self {
        Self { labels: Arc::new(labels), parent: None, live: Arc::default() }
    }

    /// Makes workspaces under `dir` instead of the system temporary directory.
    #[must_use]
    pub fn in_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.parent = Some(dir.into());
        self
    }

    /// How many machines exist right now.
    pub fn live_machines(&self) -> usize {
        self.live.lock().map(|live| live.len()).unwrap_or(0)
    }
}

impl Default for HostHypervisor {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Hypervisor for HostHypervisor {
    fn serves(&self, label: &str) -> bool {
        self.labels.iter().any(|l| l == label)
    }

    /// Host workspaces are temporary directories that go with the process, so nothing is
    /// journaled.
    async fn provision(&self, request: &MachineRequest, ctx: &ProvisionContext<'_>) -> Result<Machine, HypervisorError> {
        if !self.serves(&request.label) {
            return Err(HypervisorError::UnknownLabel(request.label.clone()));
        }
        if ctx.cancel.is_cancelled() {
            return Err(HypervisorError::Cancelled);
        }
        let prefix = format!("solstice-{}-", request.job_id);
        // Only the job's user may enter its directories: scripts, command files and the
        // checkout hold secrets. Made with that mode, so there is no moment they are open.
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).permissions(std::fs::Permissions::from_mode(0o700));
        let dir = match &self.parent {
            Some(parent) => builder.tempdir_in(parent),
            None => builder.tempdir(),
        }
        .map_err(|e| HypervisorError::Backend {
            message: "could not create the job's workspace directory".into(),
            transient: true,
            source: Some(Box::new(e)),
        })?;
        // The workspace, runner.temp and runner.tool_cache are siblings in the machine's
        // directory, so a checkout never sees the other two.
        let [workspace, temp, tool_cache] = ["work", "temp", "tool"].map(|name| dir.path().join(name));
        for path in [&workspace, &temp, &tool_cache] {
            std::fs::DirBuilder::new().mode(0o700).create(path).map_err(|e| HypervisorError::Backend {
                message: format!("could not create {}", path.display()),
                transient: true,
                source: Some(Box::new(e)),
            })?;
        }
        let text = |path: std::path::PathBuf| path.to_string_lossy().into_owned();
        let id = format!("host-{}", request.job_id);
        let runner = RunnerInfo {
            os: RunnerInfo::host_os(),
            arch: RunnerInfo::host_arch(),
            name: id.clone(),
            temp: text(temp),
            tool_cache: text(tool_cache),
        };
        let machine = Machine {
            id: id.clone(),
            label: request.label.clone(),
            workspace: text(workspace),
            access: MachineAccess::Local,
            runner,
            env: Default::default(),
        };
        self.live
            .lock()
            .map_err(|_| HypervisorError::Backend {
                message: "host machine registry poisoned".into(),
                transient: false,
                source: None,
            })?
            .insert(id, dir);
        Ok(machine)
    }

    async fn destroy(&self, machine: &Machine) -> Result<(), HypervisorError> {
        let dir = self.live.lock().ok().and_then(|mut live| live.remove(&machine.id));
        if let Some(dir) = dir {
            let path = dir.path().to_path_buf();
            tokio::task::spawn_blocking(move || dir.close())
                .await
                .map_err(|e| HypervisorError::Backend {
                    message: format!("removing {} panicked", path.display()),
                    transient: false,
                    source: Some(Box::new(e)),
                })?
                .map_err(|e| HypervisorError::Backend {
                    message: format!("could not remove {}", path.display()),
                    transient: false,
                    source: Some(Box::new(e)),
                })?;
        }
        Ok(())
    }
}
