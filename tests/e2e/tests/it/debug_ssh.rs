//! Debug SSH into failed jobs, end to end: the engine keeps a failed, opted-in job's
//! machine behind a forward that only the triggering user's keys open, destroys it at
//! its (shortened) time, declines a second one for the same repository, and destroys
//! every other machine at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use solstice_core::{
    DebugKeeper, Engine, Hypervisor, HypervisorError, JobEvent, JobEventKind, JobRequest, JobResult, Machine,
    MachineAccess, MachineRequest, ProvisionContext, SshAccess, StepAction, StepCommand,
};
use solstice_e2e::{LABEL, hypervisor};
use solstice_vm::ssh::{SshError, SshKeyPair, SshSession};
use solstice_vm::{QemuHypervisor, SshExecutor};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The QEMU hypervisor, remembering the machines it made: the test needs each job's
/// ephemeral key to prove that it no longer opens a kept machine, and nothing else
/// hands it out (by design).
///
/// The trait is implemented by hand, in the shape `#[async_trait]` gives it, so this
/// test crate needs no dependency beyond the ones it has.
#[derive(Clone)]
struct Recording {
    inner: QemuHypervisor,
    machines: Arc<Mutex<Vec<Machine>>>,
}

impl Hypervisor for Recording {
    fn serves(&self, label: &str) -> bool {
        self.inner.serves(label)
    }

    fn provision<'life0, 'life1, 'life2, 'life3, 'async_trait>(
        &'life0 self,
        request: &'life1 MachineRequest,
        ctx: &'life2 ProvisionContext<'life3>,
    ) -> BoxFuture<'async_trait, Result<Machine, HypervisorError>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        'life3: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            let machine = self.inner.provision(request, ctx).await?;
            self.machines.lock().unwrap_or_else(|p| p.into_inner()).push(machine.clone());
            Ok(machine)
        })
    }

    fn destroy<'life0, 'life1, 'async_trait>(
        &'life0 self,
        machine: &'life1 Machine,
    ) -> BoxFuture<'async_trait, Result<(), HypervisorError>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        self.inner.destroy(machine)
    }
}

fn sh(name: &str, script: &str) -> StepCommand {
    let mut step = StepCommand::run(name, script);
    if let StepAction::Run { shell, .. } = &mut step.action {
        *shell = "sh -e {0}".into();
    }
    step
}

fn job(repository: &str, debug: bool, fail: bool, keys: &[String]) -> JobRequest {
    let script = if fail { "echo failing on purpose; exit 1" } else { "echo all good" };
    let mut job = JobRequest::new("debug-ssh", vec![LABEL.into()], vec![sh("work", script)]);
    job.origin.source = "e2e".into();
    job.origin.repository = Some(repository.into());
    job.debug_ssh = debug;
    job.debug_keys = keys.to_vec();
    job
}

fn keeper(ttl: Duration) -> DebugKeeper {
    // 127.0.0.1 in the test; an operator gives a public address (see docs/debug-ssh.md).
    DebugKeeper::builder()
        .dangerous_listen(std::net::Ipv4Addr::LOCALHOST.into())
        .host("127.0.0.1")
        .ports(47100..47300)
        .ttl(ttl)
        .build()
        .expect("keeper")
}

fn log_lines(events: &[JobEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            JobEventKind::Log { line, .. } => Some(line.clone()),
            _ => None,
        })
        .collect()
}

/// SSH to the kept machine through the forward, as root, with `key`.
async fn login(port: u16, host_key: &str, key: &SshKeyPair) -> Result<SshSession, SshError> {
    let private = key.private_openssh().expect("encode");
    let access = SshAccess {
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        user: "root".into(),
        host_key: host_key.to_owned(),
        client_key: private,
    };
    // dropbear forks per connection and TCG guests are slow: a generous timeout.
    SshSession::connect(&access, Duration::from_secs(30)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_opted_in_job_is_kept_for_the_users_key_only_until_its_time() {
    let run_dir = tempfile::tempdir().expect("tempdir");
    let qemu = hypervisor(run_dir.path());
    let recording = Recording { inner: qemu.clone(), machines: Arc::default() };
    let ttl = Duration::from_secs(40);
    let keeper = keeper(ttl);
    let engine = Engine::builder()
        .hypervisor(recording.clone())
        .executor(SshExecutor::new())
        .debug_keeper(keeper.clone())
        .build()
        .expect("engine");
    let user = SshKeyPair::generate("alice@laptop").expect("key");
    let stranger = SshKeyPair::generate("mallory").expect("key");
    // Keys as a forge publishes them, with one line that must not reach the guest.
    let published = vec![user.public_openssh(), "not a key".to_owned()];

    let (result, events) = engine.run_job_collect(job("org/app", true, true, &published)).await;
    let finished_at = Instant::now();
    let lines = log_lines(&events);
    let dump = lines.join("\n");
    assert_eq!(result, JobResult::Failure, "{dump}");
    // JobFinished went out while the machine lives: the forge does not wait for the TTL.
    assert!(matches!(events.last().map(|e| &e.kind), Some(JobEventKind::JobFinished { result: JobResult::Failure })));
    assert_eq!((qemu.live_machines(), keeper.held()), (1, 1), "the machine is kept\n{dump}");
    assert!(!lines.iter().any(|l| l.contains("destroyed")), "{dump}");
    assert!(dump.contains("1 key(s) authorised for root"), "{dump}");

    // The log ends with the connection command, after the host key and the expiry.
    let command = lines.last().expect("log lines").clone();
    let port: u16 = command
        .strip_prefix("ssh -p ")
        .and_then(|rest| rest.strip_suffix(" root@127.0.0.1"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the last line is not the ssh command: {command}\n{dump}"));
    assert!((47100..47300).contains(&port));
    let host_key = lines
        .iter()
        .find_map(|l| l.strip_prefix("Debug SSH: the machine's host key is "))
        .unwrap_or_else(|| panic!("no host key line\n{dump}"))
        .to_owned();
    assert!(dump.contains("kept for 40.0 s (until "), "{dump}");

    // No private key in the log: not the job's, not the user's, not any.
    let machine = recording.machines.lock().unwrap_or_else(|p| p.into_inner())[0].clone();
    let MachineAccess::Ssh(access) = &machine.access else { panic!("a VM has SSH access") };
    let job_key = access.client_key.expose().to_owned();
    for event in &events {
        let text = format!("{event:?}");
        assert!(!text.contains("PRIVATE KEY"), "a private key in the log: {text}");
        for secret in [&job_key, user.private_openssh().expect("pem").expose()] {
            let body: String = secret.lines().nth(1).unwrap_or_default().to_owned();
            assert!(!text.contains(&body), "private key material in the log: {text}");
        }
    }

    // The user's key opens the machine through the forward...
    let session = login(port, &host_key, &user).await.expect("the user's key logs in");
    let out = session.exec("cat ~/.ssh/authorized_keys; echo in-the-vm").await.expect("exec");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("in-the-vm"), "{stdout}");
    let user_key_body = user.public_openssh().split_whitespace().nth(1).unwrap_or_default().to_owned();
    assert_eq!(stdout.lines().filter(|l| l.starts_with("ssh-")).count(), 1, "only the user's key: {stdout}");
    assert!(stdout.contains(&user_key_body), "{stdout}");
    drop(session);
    // ...the job's own ephemeral key no longer does, nor anybody else's.
    let job_access = SshAccess { addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)), ..access.clone() };
    let refused = SshSession::connect(&job_access, Duration::from_secs(30)).await;
    assert!(matches!(refused, Err(SshError::Auth { .. })), "the job's key still logs in: {refused:?}");
    let refused = login(port, &host_key, &stranger).await;
    assert!(matches!(refused, Err(SshError::Auth { .. })), "a stranger's key logs in: {refused:?}");
    assert!(finished_at.elapsed() < ttl, "the checks took longer than the TTL; lengthen it");

    // At its time the machine, its files and the forward are gone, and not much before.
    let gone = solstice_e2e::wait_until(ttl + Duration::from_secs(90), || qemu.live_machines() == 0).await;
    assert!(gone, "the kept machine outlived its TTL");
    let kept_for = finished_at.elapsed();
    assert!(kept_for + Duration::from_secs(2) >= ttl, "destroyed after {kept_for:?}, before its TTL of {ttl:?}");
    assert!(solstice_e2e::wait_until(Duration::from_secs(10), || keeper.held() == 0).await);
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(), "the forward outlived the machine");
    let left: Vec<_> = std::fs::read_dir(run_dir.path()).expect("run dir").filter_map(Result::ok).map(|e| e.path()).collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_debug_machine_for_the_same_repository_is_declined() {
    let run_dir = tempfile::tempdir().expect("tempdir");
    let qemu = hypervisor(run_dir.path());
    // Long enough to still hold the first machine while the second job boots and runs.
    let keeper = keeper(Duration::from_secs(600));
    let engine = Engine::builder()
        .hypervisor(qemu.clone())
        .executor(SshExecutor::new())
        .debug_keeper(keeper.clone())
        .build()
        .expect("engine");
    let keys = vec![SshKeyPair::generate("alice").expect("key").public_openssh()];

    let (first, events) = engine.run_job_collect(job("org/app", true, true, &keys)).await;
    let dump = log_lines(&events).join("\n");
    assert_eq!(first, JobResult::Failure);
    assert!(log_lines(&events).last().is_some_and(|l| l.starts_with("ssh -p ")), "{dump}");
    assert_eq!((qemu.live_machines(), keeper.held()), (1, 1), "{dump}");

    let (second, events) = engine.run_job_collect(job("org/app", true, true, &keys)).await;
    let lines = log_lines(&events);
    let dump = lines.join("\n");
    assert_eq!(second, JobResult::Failure);
    let declined = lines.iter().position(|l| l.contains("Debug SSH declined: the repository org/app already has a machine kept"));
    let destroyed = lines.iter().position(|l| l.starts_with("Machine ") && l.ends_with(" destroyed"));
    assert!(matches!((declined, destroyed), (Some(d), Some(x)) if d < x), "declined, then destroyed at once:\n{dump}");
    assert!(!lines.iter().any(|l| l.starts_with("ssh -p ")), "{dump}");
    assert_eq!((qemu.live_machines(), keeper.held()), (1, 1), "only the first machine is kept\n{dump}");

    // Shutting the keeper down destroys what it holds, before its time.
    tokio::time::timeout(Duration::from_secs(120), keeper.shutdown()).await.expect("shutdown is prompt");
    assert_eq!((qemu.live_machines(), keeper.held()), (0, 0));
    let left: Vec<_> = std::fs::read_dir(run_dir.path()).expect("run dir").filter_map(Result::ok).map(|e| e.path()).collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passing_and_not_opted_in_jobs_lose_their_machine_at_once() {
    let run_dir = tempfile::tempdir().expect("tempdir");
    let qemu = hypervisor(run_dir.path());
    let keeper = keeper(Duration::from_secs(600));
    let engine = Engine::builder()
        .hypervisor(qemu.clone())
        .executor(SshExecutor::new())
        .debug_keeper(keeper.clone())
        .build()
        .expect("engine");
    let keys = vec![SshKeyPair::generate("alice").expect("key").public_openssh()];

    for (name, debug, fail, expected) in
        [("opted in, passing", true, false, JobResult::Success), ("not opted in, failing", false, true, JobResult::Failure)]
    {
        let (result, events) = engine.run_job_collect(job("org/app", debug, fail, &keys)).await;
        let lines = log_lines(&events);
        let dump = lines.join("\n");
        assert_eq!(result, expected, "{name}\n{dump}");
        assert!(lines.iter().any(|l| l.starts_with("Machine ") && l.ends_with(" destroyed")), "{name}\n{dump}");
        assert!(!lines.iter().any(|l| l.contains("Debug SSH")), "{name}: no debug SSH\n{dump}");
        assert_eq!((qemu.live_machines(), keeper.held()), (0, 0), "{name}\n{dump}");
    }
}
