//! Combining implementations: several hypervisors behind one, executors by access kind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::{
    CheckoutSource, CheckoutStep, ExecError, Hypervisor, HypervisorError, LogSink, Machine, MachineAccess,
    MachineFootprint, MachineRequest, ProvisionContext, ScriptRun, StepExecutor, StepExit,
};

/// Several hypervisors behind one: a machine comes from the first that serves its
/// label, and goes back to the one that made it. For example the host for `host` and
/// QEMU for the image labels. Cloning is cheap.
#[derive(Clone, Default)]
pub struct HypervisorSet {
    members: Vec<Arc<dyn Hypervisor>>,
    owners: Arc<Mutex<HashMap<String, usize>>>,
}

impl std::fmt::Debug for HypervisorSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HypervisorSet").field("members", &self.members.len()).finish()
    }
}

impl HypervisorSet {
    /// An empty set (serves nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a hypervisor; earlier ones win for a label both serve.
    #[must_use]
    pub fn with(mut self, hypervisor: Arc<dyn Hypervisor>) -> Self {
        self.members.push(hypervisor);
        self
    }
}

#[async_trait]
impl Hypervisor for HypervisorSet {
    fn serves(&self, label: &str) -> bool {
        self.members.iter().any(|m| m.serves(label))
    }

    async fn provision(&self, request: &MachineRequest, ctx: &ProvisionContext<'_>) -> Result<Machine, HypervisorError> {
        let Some((index, member)) = self.members.iter().enumerate().find(|(_, m)| m.serves(&request.label)) else {
            return Err(HypervisorError::UnknownLabel(request.label.clone()));
        };
        let machine = member.provision(request, ctx).await?;
        if let Ok(mut owners) = self.owners.lock() {
            owners.insert(machine.id.clone(), index);
        }
        Ok(machine)
    }

    /// A footprint does not say which member made it, so every member tries; reaping
    /// is idempotent, and the first error is returned after all have tried.
    async fn reap(&self, footprint: &MachineFootprint) -> Result<(), HypervisorError> {
        let mut first_error = None;
        for member in &self.members {
            if let Err(e) = member.reap(footprint).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn destroy(&self, machine: &Machine) -> Result<(), HypervisorError> {
        let index = self.owners.lock().ok().and_then(|mut owners| owners.remove(&machine.id));
        match index.and_then(|i| self.members.get(i)) {
            Some(member) => member.destroy(machine).await,
            // Not one of ours (or destroyed already): destroy is idempotent.
            None => Ok(()),
        }
    }
}

/// Runs each step with the executor for its machine's [`MachineAccess`]: local
/// machines with one executor, SSH machines with another.
#[derive(Clone)]
pub struct ExecutorByAccess {
    local: Option<Arc<dyn StepExecutor>>,
    ssh: Option<Arc<dyn StepExecutor>>,
}

impl std::fmt::Debug for ExecutorByAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutorByAccess")
            .field("local", &self.local.is_some())
            .field("ssh", &self.ssh.is_some())
            .finish()
    }
}

impl ExecutorByAccess {
    /// `local` for [`MachineAccess::Local`], `ssh` for [`MachineAccess::Ssh`]; either may
    /// be absent, and a machine of that kind then gets [`ExecError::UnsupportedMachine`].
    pub fn new(local: Option<Arc<dyn StepExecutor>>, ssh: Option<Arc<dyn StepExecutor>>) -> Self {
        Self { local, ssh }
    }

    fn pick(&self, machine: &Machine) -> Result<&Arc<dyn StepExecutor>, ExecError> {
        let chosen = match machine.access {
            MachineAccess::Local => self.local.as_ref(),
            MachineAccess::Ssh(_) => self.ssh.as_ref(),
        };
        chosen.ok_or_else(|| ExecError::UnsupportedMachine(machine.id.clone()))
    }
}

#[async_trait]
impl StepExecutor for ExecutorByAccess {
    async fn run_script(
        &self,
        machine: &Machine,
        step: &ScriptRun,
        output: &LogSink,
        cancel: &CancellationToken,
    ) -> Result<StepExit, ExecError> {
        self.pick(machine)?.run_script(machine, step, output, cancel).await
    }

    async fn checkout(
        &self,
        machine: &Machine,
        source: &CheckoutSource,
        step: &CheckoutStep,
        output: &LogSink,
        cancel: &CancellationToken,
    ) -> Result<StepExit, ExecError> {
        self.pick(machine)?.checkout(machine, source, step, output, cancel).await
    }

    async fn write_file(&self, machine: &Machine, path: &str, text: &str, cancel: &CancellationToken) -> Result<(), ExecError> {
        self.pick(machine)?.write_file(machine, path, text, cancel).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HostExecutor, HostHypervisor, JobId};

    #[tokio::test]
    async fn machines_come_from_and_go_back_to_the_member_serving_the_label() {
        let a = HostHypervisor::with_labels(vec!["a".into()]);
        let b = HostHypervisor::with_labels(vec!["b".into(), "a".into()]);
        let set = HypervisorSet::new().with(Arc::new(a.clone())).with(Arc::new(b.clone()));
        assert!(set.serves("b") && set.serves("a") && !set.serves("c"));
        let (console, _rx) = LogSink::channel(4);
        let request = |label: &str| MachineRequest { job_id: JobId::new(), label: label.into(), debug_ssh: false };
        let cancel = CancellationToken::new();
        let ctx = ProvisionContext::new(&console, &cancel);
        let on_b = set.provision(&request("b"), &ctx).await.expect("b");
        let on_a = set.provision(&request("a"), &ctx).await.expect("a");
        assert_eq!((a.live_machines(), b.live_machines()), (1, 1));
        set.destroy(&on_a).await.expect("destroy a");
        set.destroy(&on_b).await.expect("destroy b");
        set.destroy(&on_b).await.expect("destroy is idempotent");
        assert_eq!((a.live_machines(), b.live_machines()), (0, 0));
        let err = set.provision(&request("c"), &ctx).await.expect_err("unknown label");
        assert!(matches!(err, HypervisorError::UnknownLabel(l) if l == "c"));
    }

    #[tokio::test]
    async fn steps_go_to_the_executor_for_the_access_kind() {
        let exec = ExecutorByAccess::new(Some(Arc::new(HostExecutor::new())), None);
        let local = Machine {
            id: "m".into(),
            label: "l".into(),
            workspace: "/".into(),
            access: MachineAccess::Local,
            runner: crate::RunnerInfo { os: "Linux".into(), arch: "X64".into(), name: "m".into(), temp: "/tmp".into(), tool_cache: "/tmp".into() }, env: Default::default(),
        };
        let ssh = Machine {
            access: MachineAccess::Ssh(crate::SshAccess {
                addr: "127.0.0.1:1".parse().expect("addr"),
                user: "root".into(),
                host_key: String::new(),
                client_key: crate::Secret::new("k"),
            }),
            ..local.clone()
        };
        let run = ScriptRun {
            index: 0,
            script: "true".into(),
            shell: "sh -e {0}".into(),
            env: Default::default(),
            working_directory: None,
            path: vec![],
        };
        let (sink, _rx) = LogSink::channel(4);
        let exit = exec.run_script(&local, &run, &sink, &CancellationToken::new()).await.expect("local");
        assert!(exit.succeeded());
        let err = exec.run_script(&ssh, &run, &sink, &CancellationToken::new()).await.expect_err("no ssh executor");
        assert!(matches!(err, ExecError::UnsupportedMachine(_)));
    }
}
