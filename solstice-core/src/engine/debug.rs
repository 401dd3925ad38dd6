//! Debug SSH into failed jobs: the [`DebugKeeper`] holds a failed job's machine for a
//! fixed time, behind a port forward on a public address, then destroys it.
//!
//! The engine decides *whether* a machine is kept (the job failed, opted in, and its
//! source found public keys of the user who started it); the keeper decides whether
//! there is room (one machine per repository), owns the forward and the timer, and
//! destroys the machine when the time is up or the keeper shuts down. The job's
//! `JobFinished` is sent as soon as the machine is handed over: the forge never waits
//! for the debug time.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::forward::PortForward;
use crate::support::error_chain;
use crate::{Hypervisor, JobId, Machine};

/// The debug time the design fixes: 30 minutes, not renewable.
pub const DEFAULT_DEBUG_TTL: Duration = Duration::from_secs(30 * 60);

/// Default ports for debug forwards (100 of them; at most one machine per repository
/// is kept, so this bounds the kept machines too).
pub const DEFAULT_DEBUG_PORTS: Range<u16> = 2200..2300;

/// Why a [`DebugKeeper`] could not be built or a machine could not be kept.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DebugSshError {
    /// The port range holds no port.
    #[error("the debug SSH port range {start}..{end} is empty")]
    EmptyPorts {
        /// First port.
        start: u16,
        /// One past the last port.
        end: u16,
    },
    /// A time limit of zero would destroy the machine before anyone could connect.
    #[error("the debug SSH time limit must be longer than zero")]
    ZeroTtl,
    /// The host name shown to users is empty.
    #[error("the debug SSH host name is empty")]
    EmptyHost,
    /// Every port of the range is taken, or the address cannot be listened on.
    #[error("no port free for debug SSH on {listen} in {start}..{end}")]
    NoPort {
        /// The address.
        listen: IpAddr,
        /// First port.
        start: u16,
        /// One past the last port.
        end: u16,
        /// The last bind error, if a bind failed for a reason other than the port being taken.
        #[source]
        source: Option<std::io::Error>,
    },
}

/// Holds failed jobs' machines for debug SSH, at most one per repository, each for a
/// fixed, non-renewable time behind its own port forward, then destroys them.
///
/// Give it to [`EngineBuilder::debug_keeper`](super::EngineBuilder::debug_keeper); call
/// [`shutdown`](DebugKeeper::shutdown) when the orchestrator stops, which destroys every
/// machine still held. Cheap to clone (an `Arc` inside).
#[derive(Debug, Clone)]
pub struct DebugKeeper {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    listen: IpAddr,
    host: String,
    ports: Range<u16>,
    ttl: Duration,
    state: Mutex<State>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

#[derive(Debug, Default)]
struct State {
    /// Repositories with a machine held (or being handed over), and for which job.
    repositories: HashMap<String, JobId>,
    /// Ports of live forwards.
    ports: HashSet<u16>,
    /// Where the next port search starts, so freed ports are not reused at once (a
    /// user's `known_hosts` entry for a port would otherwise meet another machine).
    next_port: u16,
}

/// Builds a [`DebugKeeper`].
#[derive(Debug, Clone)]
#[must_use]
pub struct DebugKeeperBuilder {
    listen: IpAddr,
    host: Option<String>,
    ports: Range<u16>,
    ttl: Duration,
}

impl Default for DebugKeeperBuilder {
    fn default() -> Self {
        Self { listen: IpAddr::V4(Ipv4Addr::LOCALHOST), host: None, ports: DEFAULT_DEBUG_PORTS, ttl: DEFAULT_DEBUG_TTL }
    }
}

impl DebugKeeperBuilder {
    /// Listens for debug connections on `addr`, which may be a public address: anyone
    /// who can reach it can try to log in to a kept machine. Its `authorized_keys` is
    /// replaced by the public keys the forge publishes for the user who started the run,
    /// but the job ran as root before and may have left other ways in: whoever wrote the
    /// job may control the machine too. The forward exists only while the machine is
    /// kept, and nothing else is ever forwarded there.
    /// Default: `127.0.0.1` (reachable from this host only).
    pub fn dangerous_listen(mut self, addr: IpAddr) -> Self {
        self.listen = addr;
        self
    }

    /// The host name (or address) printed in the connection command. Default: the
    /// listen address.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// The ports forwards may listen on. Default: [`DEFAULT_DEBUG_PORTS`] (2200–2299).
    pub fn ports(mut self, ports: Range<u16>) -> Self {
        self.ports = ports;
        self
    }

    /// How long a failed job's machine is kept, not renewable. Default:
    /// [`DEFAULT_DEBUG_TTL`] (30 minutes); tests shorten it.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Builds the keeper.
    ///
    /// # Errors
    /// [`DebugSshError::EmptyPorts`], [`DebugSshError::ZeroTtl`] or
    /// [`DebugSshError::EmptyHost`].
    pub fn build(self) -> Result<DebugKeeper, DebugSshError> {
        if self.ports.is_empty() {
            return Err(DebugSshError::EmptyPorts { start: self.ports.start, end: self.ports.end });
        }
        if self.ttl.is_zero() {
            return Err(DebugSshError::ZeroTtl);
        }
        let host = self.host.unwrap_or_else(|| self.listen.to_string());
        if host.trim().is_empty() {
            return Err(DebugSshError::EmptyHost);
        }
        let state = State { next_port: self.ports.start, ..State::default() };
        Ok(DebugKeeper {
            inner: Arc::new(Inner {
                listen: self.listen,
                host,
                ports: self.ports,
                ttl: self.ttl,
                state: Mutex::new(state),
                tracker: TaskTracker::new(),
                shutdown: CancellationToken::new(),
            }),
        })
    }
}

/// Why a machine was not kept although its job asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Declined {
    /// Another job of the repository holds the repository's debug machine.
    Busy(JobId),
    /// The keeper is shutting down.
    ShuttingDown,
}

/// A future run once the kept machine is destroyed (forgetting its store record).
pub(crate) type OnDestroyed = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What the job log tells the user about a kept machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Kept {
    pub(crate) port: u16,
    pub(crate) host: String,
    pub(crate) expires_at: OffsetDateTime,
    pub(crate) ttl: Duration,
}

impl DebugKeeper {
    /// Starts building a keeper.
    pub fn builder() -> DebugKeeperBuilder {
        DebugKeeperBuilder::default()
    }

    /// How long machines are kept.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// How many machines are held right now (including one being handed over).
    pub fn held(&self) -> usize {
        self.lock().repositories.len()
    }

    /// Destroys every machine still held, closes their forwards and takes no more.
    /// Returns once all of them are gone.
    ///
    /// # Cancel safety
    /// Cancel-safe: the machines are destroyed by the keeper's own tasks, which carry on
    /// if this future is dropped.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims the repository's one debug machine for `job`.
    pub(crate) fn reserve(&self, repository: &str, job: JobId) -> Result<Reservation, Declined> {
        if self.inner.shutdown.is_cancelled() {
            return Err(Declined::ShuttingDown);
        }
        let mut state = self.lock();
        if let Some(holder) = state.repositories.get(repository) {
            return Err(Declined::Busy(*holder));
        }
        state.repositories.insert(repository.to_owned(), job);
        Ok(Reservation { keeper: self.clone(), repository: repository.to_owned(), port: None, kept: false })
    }
}

/// A repository's debug slot, claimed for one job. Dropping it without
/// [`Reservation::keep`] gives the slot (and any port) back.
#[derive(Debug)]
pub(crate) struct Reservation {
    keeper: DebugKeeper,
    repository: String,
    port: Option<(u16, TcpListener)>,
    kept: bool,
}

impl Reservation {
    /// Binds a port of the range on the listen address, for the forward.
    pub(crate) async fn bind(&mut self) -> Result<u16, DebugSshError> {
        let inner = &self.keeper.inner;
        let (start, end) = (inner.ports.start, inner.ports.end);
        // u32: `first - start + offset` can exceed u16 for a range near the top.
        let count = u32::from(end - start);
        let first = u32::from(self.keeper.lock().next_port - start);
        let mut last_error = None;
        for offset in 0..count {
            let Ok(port) = u16::try_from(u32::from(start) + (first + offset) % count) else { continue };
            {
                let mut state = self.keeper.lock();
                if !state.ports.insert(port) {
                    continue;
                }
            }
            match TcpListener::bind(SocketAddr::new(inner.listen, port)).await {
                Ok(listener) => {
                    let mut state = self.keeper.lock();
                    state.next_port = port.checked_add(1).filter(|p| *p < end).unwrap_or(start);
                    self.port = Some((port, listener));
                    return Ok(port);
                }
                Err(e) => {
                    self.keeper.lock().ports.remove(&port);
                    if e.kind() != std::io::ErrorKind::AddrInUse {
                        last_error = Some(e);
                    }
                }
            }
        }
        Err(DebugSshError::NoPort { listen: inner.listen, start, end, source: last_error })
    }

    /// Hands the machine over: starts the forward to its SSH address `target` on the
    /// bound port, and destroys the machine (then runs `on_destroyed`) when the time is
    /// up or the keeper shuts down. Without a bound port, if the forward cannot start or
    /// the keeper is shutting down, the machine is given back for the caller to destroy.
    pub(crate) fn keep(
        mut self,
        machine: Machine,
        target: SocketAddr,
        hypervisor: Arc<dyn Hypervisor>,
        on_destroyed: Option<OnDestroyed>,
    ) -> Result<Kept, Box<(Machine, Option<OnDestroyed>)>> {
        // Shut down meanwhile (the keys took a while): the keeper's tasks may be gone.
        if self.keeper.inner.shutdown.is_cancelled() {
            return Err(Box::new((machine, on_destroyed)));
        }
        let Some((port, listener)) = self.port.take() else { return Err(Box::new((machine, on_destroyed))) };
        let forward = match PortForward::start(listener, target) {
            Ok(forward) => forward,
            Err(e) => {
                tracing::error!(machine = %machine.id, error = %e, "could not start the debug SSH forward");
                self.keeper.lock().ports.remove(&port);
                return Err(Box::new((machine, on_destroyed)));
            }
        };
        self.kept = true;
        let inner = &self.keeper.inner;
        let ttl = inner.ttl;
        let kept = Kept {
            port,
            host: inner.host.clone(),
            expires_at: OffsetDateTime::now_utc() + ttl,
            ttl,
        };
        let keeper = self.keeper.clone();
        let repository = std::mem::take(&mut self.repository);
        let shutdown = inner.shutdown.clone();
        tracing::info!(machine = %machine.id, %repository, port, ttl_seconds = ttl.as_secs(), "keeping a failed job's machine for debug SSH");
        inner.tracker.spawn(async move {
            let why = tokio::select! {
                _ = tokio::time::sleep(ttl) => "its debug time is over",
                _ = shutdown.cancelled() => "the orchestrator is stopping",
            };
            // The forward goes first: nobody may reach the machine while it is torn down.
            forward.close().await;
            match hypervisor.destroy(&machine).await {
                Ok(()) => {
                    if let Some(forget) = on_destroyed {
                        forget.await;
                    }
                    tracing::info!(machine = %machine.id, %repository, "destroyed a debug machine: {why}");
                }
                Err(e) => {
                    // Its store record stays, so a restarted orchestrator reaps it.
                    tracing::error!(machine = %machine.id, error = %error_chain(&e), "could not destroy a debug machine");
                }
            }
            let mut state = keeper.lock();
            state.ports.remove(&port);
            state.repositories.remove(&repository);
        });
        Ok(kept)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let mut state = self.keeper.lock();
        if let Some((port, _)) = &self.port {
            state.ports.remove(port);
        }
        state.repositories.remove(&self.repository);
    }
}

/// Key types a forge publishes (`/USER.keys`) and OpenSSH accepts.
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// The keys as `authorized_keys` lines: type and base64 body only. Anything else in a
/// line (comments, and above all options such as `command=`) is dropped, and lines that
/// are not a plain public key are skipped, so what reaches the guest is exactly public
/// keys and no shell text.
pub(crate) fn authorized_keys(keys: &[String]) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for key in keys {
        let mut words = key.split_whitespace();
        let (Some(kind), Some(body)) = (words.next(), words.next()) else { continue };
        let body_ok = body.len() >= 16
            && body.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
        if KEY_TYPES.contains(&kind) && body_ok {
            let line = format!("{kind} {body}");
            if !lines.contains(&line) {
                lines.push(line);
            }
        }
    }
    lines
}

/// A POSIX shell script that makes `lines` the login user's only authorized keys. The
/// file is replaced, not appended to: the job's own ephemeral key stops working, so
/// only the user's keys open the machine.
pub(crate) fn install_script(lines: &[String]) -> String {
    // The lines hold only [A-Za-z0-9+/=@.-] and spaces (see `authorized_keys`), so a
    // quoted here-document carries them verbatim.
    format!(
        "umask 077\nmkdir -p \"$HOME/.ssh\"\ncat > \"$HOME/.ssh/authorized_keys.solstice\" <<'SOLSTICE_KEYS'\n{}\nSOLSTICE_KEYS\nmv -f \"$HOME/.ssh/authorized_keys.solstice\" \"$HOME/.ssh/authorized_keys\"\necho \"$(wc -l < \"$HOME/.ssh/authorized_keys\") key(s) authorised for $(id -un)\"\n",
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::CountingHypervisor;

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHhHZfB0Z5mQmZrUu6cQkP6hV6WfJ0yX2xq0PZ9fQ7uN";

    fn keeper(ttl: Duration, ports: Range<u16>) -> DebugKeeper {
        DebugKeeper::builder().ttl(ttl).ports(ports).host("ci.example.org").build().expect("keeper")
    }

    fn machine(id: &str) -> Machine {
        Machine {
            id: id.into(),
            label: "fake".into(),
            workspace: "/w".into(),
            access: crate::MachineAccess::Local,
            runner: crate::RunnerInfo { os: "Linux".into(), arch: "X64".into(), name: id.into(), temp: "/tmp".into(), tool_cache: "/tmp".into() }, env: Default::default(),
        }
    }

    async fn free_port_range(n: u16) -> Range<u16> {
        // Ports of the ephemeral range are taken by other tests at random; pick a
        // window whose first port is free now and let `bind` skip taken ones.
        let probe = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = probe.local_addr().expect("addr").port();
        drop(probe);
        port..port.saturating_add(n)
    }

    #[test]
    fn the_builder_refuses_nonsense() {
        assert!(matches!(DebugKeeper::builder().ports(3000..3000).build(), Err(DebugSshError::EmptyPorts { .. })));
        assert!(matches!(DebugKeeper::builder().ttl(Duration::ZERO).build(), Err(DebugSshError::ZeroTtl)));
        assert!(matches!(DebugKeeper::builder().host(" ").build(), Err(DebugSshError::EmptyHost)));
        let keeper = DebugKeeper::builder().build().expect("defaults");
        assert_eq!((keeper.ttl(), keeper.inner.host.as_str()), (DEFAULT_DEBUG_TTL, "127.0.0.1"));
    }

    #[test]
    fn only_plain_public_keys_reach_the_guest() {
        let keys = vec![
            format!("{ED} alice@laptop"),
            format!("command=\"rm -rf /\" {ED}"),
            "ssh-rsa AAAA$(reboot)AAAAAAAAAAAAAAAAA".to_owned(),
            "-----BEGIN OPENSSH PRIVATE KEY-----".to_owned(),
            "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY=".to_owned(),
            format!("{ED}"),
            String::new(),
        ];
        let lines = authorized_keys(&keys);
        assert_eq!(lines, [ED.to_owned(), "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY=".to_owned()]);
        let script = install_script(&lines);
        assert!(script.contains(&format!("\n{ED}\necdsa")), "{script}");
        assert!(script.contains("mv -f"), "the file is replaced, not appended to: {script}");
    }

    #[tokio::test]
    async fn one_machine_per_repository_and_the_slot_comes_back() {
        let keeper = keeper(Duration::from_secs(60), 2200..2300);
        let (a, b) = (JobId::new(), JobId::new());
        let first = keeper.reserve("org/app", a).expect("free");
        assert_eq!(keeper.reserve("org/app", b).map(|_| ()), Err(Declined::Busy(a)));
        let other = keeper.reserve("org/lib", b).expect("another repository is independent");
        assert_eq!(keeper.held(), 2);
        drop(first);
        drop(other);
        assert_eq!(keeper.held(), 0, "an unused reservation gives its slot back");
        keeper.reserve("org/app", b).expect("free again");
    }

    #[tokio::test]
    async fn a_kept_machine_is_destroyed_at_its_time_and_forgotten() {
        let ports = free_port_range(20).await;
        let keeper = keeper(Duration::from_millis(600), ports.clone());
        let hv = CountingHypervisor::new();
        let target = TcpListener::bind("127.0.0.1:0").await.expect("target");
        let target_addr = target.local_addr().expect("addr");
        let mut reservation = keeper.reserve("org/app", JobId::new()).expect("free");
        let port = reservation.bind().await.expect("a port");
        assert!(ports.contains(&port));
        let forgotten = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = forgotten.clone();
        let forget: OnDestroyed = Box::pin(async move { flag.store(true, std::sync::atomic::Ordering::SeqCst) });
        let kept = reservation
            .keep(machine("m-1"), target_addr, Arc::new(hv.clone()), Some(forget))
            .map_err(|_| "not kept")
            .expect("kept");
        assert_eq!((kept.port, kept.host.as_str()), (port, "ci.example.org"));
        assert!(kept.expires_at > OffsetDateTime::now_utc());
        // The forward reaches the machine while it is held...
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("forward listens");
        assert_eq!(keeper.reserve("org/app", JobId::new()).map(|_| ()).ok(), None, "held");
        assert_eq!(hv.destroyed(), 0);
        // ...and nothing is left once the time is up.
        let gone = async {
            while keeper.held() > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), gone).await.expect("released after the TTL");
        assert_eq!(hv.destroyed(), 1);
        assert!(forgotten.load(std::sync::atomic::Ordering::SeqCst), "the store record is forgotten");
        assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(), "the forward is gone");
        keeper.reserve("org/app", JobId::new()).expect("the repository may have a debug machine again");
    }

    #[tokio::test]
    async fn shutdown_destroys_what_is_held_and_takes_no_more() {
        let ports = free_port_range(20).await;
        let keeper = keeper(DEFAULT_DEBUG_TTL, ports);
        let hv = CountingHypervisor::new();
        for (repo, id) in [("org/a", "m-a"), ("org/b", "m-b")] {
            let mut reservation = keeper.reserve(repo, JobId::new()).expect("free");
            reservation.bind().await.expect("port");
            let target: SocketAddr = "127.0.0.1:9".parse().expect("addr");
            assert!(reservation.keep(machine(id), target, Arc::new(hv.clone()), None).is_ok());
        }
        assert_eq!(keeper.held(), 2);
        tokio::time::timeout(Duration::from_secs(10), keeper.shutdown()).await.expect("prompt");
        assert_eq!((hv.destroyed(), keeper.held()), (2, 0));
        assert_eq!(keeper.reserve("org/c", JobId::new()).map(|_| ()), Err(Declined::ShuttingDown));
    }

    #[tokio::test]
    async fn a_hand_over_that_meets_a_shutdown_gives_the_machine_back() {
        let ports = free_port_range(20).await;
        let keeper = keeper(DEFAULT_DEBUG_TTL, ports);
        let mut reservation = keeper.reserve("org/a", JobId::new()).expect("free");
        reservation.bind().await.expect("port");
        keeper.shutdown().await;
        let target: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let back = reservation.keep(machine("m"), target, Arc::new(CountingHypervisor::new()), None);
        assert!(matches!(back, Err(b) if b.0.id == "m"), "the caller destroys it");
        assert_eq!(keeper.held(), 0);
    }

    #[tokio::test]
    async fn ports_in_use_are_skipped_and_a_full_range_is_an_error() {
        let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = taken.local_addr().expect("addr").port();
        let keeper = keeper(DEFAULT_DEBUG_TTL, port..port + 1);
        let mut reservation = keeper.reserve("org/app", JobId::new()).expect("free");
        let err = reservation.bind().await.expect_err("the only port is taken");
        assert!(err.to_string().starts_with(&format!("no port free for debug SSH on 127.0.0.1 in {port}..")), "{err}");
    }
}
