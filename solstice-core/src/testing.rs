//! Scripted fakes of the seams, for tests of the engine and of code built on it.
//!
//! Enabled by the `testing` feature. These are fakes of *machines and processes*, so
//! that engine behaviour (ordering, conditions, timeouts, panics, clean-up) can be
//! tested deterministically; the real host and VM implementations have tests of their
//! own.

pub mod secret_corpus;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::{
    CheckoutSource, CheckoutStep, CommandFiles, ExecError, Hypervisor, HypervisorError, LogSink, LogStream,
    Machine, MachineAccess, MachineRequest, ProvisionContext, ScriptRun, StepExecutor, StepExit,
};

/// A hypervisor that hands out imaginary machines and counts them.
#[derive(Debug, Clone, Default)]
pub struct CountingHypervisor {
    provisioned: Arc<AtomicUsize>,
    destroyed: Arc<AtomicUsize>,
    fail_provision: bool,
    provision_delay: Duration,
}

impl CountingHypervisor {
    /// A hypervisor whose machines always come up at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// A hypervisor whose provisioning always fails.
    pub fn failing() -> Self {
        Self { fail_provision: true, ..Self::default() }
    }

    /// Provisioning takes `delay` (and honours cancellation meanwhile).
    #[must_use]
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.provision_delay = delay;
        self
    }

    /// Machines handed out so far.
    pub fn provisioned(&self) -> usize {
        self.provisioned.load(Ordering::SeqCst)
    }

    /// Machines destroyed so far.
    pub fn destroyed(&self) -> usize {
        self.destroyed.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Hypervisor for CountingHypervisor {
    fn serves(&self, _label: &str) -> bool {
        true
    }

    async fn provision(&self, request: &MachineRequest, ctx: &ProvisionContext<'_>) -> Result<Machine, HypervisorError> {
        ctx.console.send(LogStream::System, "fake machine booting").await;
        tokio::select! {
            _ = tokio::time::sleep(self.provision_delay) => {}
            _ = ctx.cancel.cancelled() => return Err(HypervisorError::Cancelled),
        }
        if self.fail_provision {
            return Err(HypervisorError::Backend {
                message: "the fake hypervisor was told to fail".into(),
                transient: false,
                source: None,
            });
        }
        let n = self.provisioned.fetch_add(1, Ordering::SeqCst);
        Ok(Machine {
            id: format!("fake-{n}"),
            label: request.label.clone(),
            workspace: "/work".into(),
            access: MachineAccess::Local,
            runner: crate::RunnerInfo { os: "Linux".into(), arch: "X64".into(), name: format!("fake-{n}"), temp: "/tmp".into(), tool_cache: "/tmp".into() },
            env: Default::default(),
        })
    }

    async fn destroy(&self, _machine: &Machine) -> Result<(), HypervisorError> {
        self.destroyed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// An executor that interprets each script as a list of fake commands, one per line:
///
/// - `echo TEXT` prints TEXT on stdout, `warn TEXT` on stderr;
/// - `env NAME` prints the value of the step's variable NAME;
/// - `output NAME=VALUE` sets a step output, `export NAME=VALUE` an env var for later steps;
/// - `sleep MS` waits (cancellable: a cancelled step ends with no exit code);
/// - `exit N` ends with code N; `panic` panics.
///
/// A script that reaches its end exits with 0.
#[derive(Debug, Clone, Default)]
pub struct ScriptedExecutor {
    steps_run: Arc<AtomicUsize>,
}

impl ScriptedExecutor {
    /// A scripted executor.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many script steps started.
    pub fn steps_run(&self) -> usize {
        self.steps_run.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl StepExecutor for ScriptedExecutor {
    async fn run_script(
        &self,
        _machine: &Machine,
        step: &ScriptRun,
        output: &LogSink,
        cancel: &CancellationToken,
    ) -> Result<StepExit, ExecError> {
        self.steps_run.fetch_add(1, Ordering::SeqCst);
        // `output`/`export` write `name=value` lines to the command files, as a script would.
        let mut files = CommandFiles::default();
        for line in step.script.lines() {
            let (command, arg) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
            match command {
                "echo" => output.send(LogStream::Stdout, arg).await,
                "warn" => output.send(LogStream::Stderr, arg).await,
                "env" => output.send(LogStream::Stdout, step.env.get(arg).cloned().unwrap_or_default()).await,
                "output" | "export" => {
                    if arg.contains('=') {
                        let target = if command == "output" { &mut files.output } else { &mut files.env };
                        target.push_str(arg);
                        target.push('\n');
                    }
                }
                "sleep" => {
                    let ms = arg.parse().unwrap_or(0);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
                        _ = cancel.cancelled() => return Ok(StepExit::default()),
                    }
                }
                "exit" => {
                    return Ok(StepExit { exit_code: Some(arg.parse().unwrap_or(1)), files });
                }
                #[allow(clippy::panic)]
                "panic" => panic!("scripted executor panic"),
                "" => {}
                other => {
                    return Err(ExecError::Setup { message: format!("unknown fake command `{other}`"), source: None });
                }
            }
        }
        Ok(StepExit { exit_code: Some(0), files })
    }

    async fn checkout(
        &self,
        _machine: &Machine,
        _source: &CheckoutSource,
        step: &CheckoutStep,
        output: &LogSink,
        _cancel: &CancellationToken,
    ) -> Result<StepExit, ExecError> {
        output.send(LogStream::System, format!("checked out into `{}`", step.path)).await;
        Ok(StepExit::code(0))
    }
}
