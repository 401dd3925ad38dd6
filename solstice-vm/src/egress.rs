//! [`EgressProxy`]: the HTTP proxy on the host that gives guests controlled outbound
//! network.
//!
//! Guests run with `restrict=on`, so they can send nothing out by themselves. A guest
//! forward joins `10.0.2.100:3128` in the guest to this proxy on the host's loopback (see
//! [`crate::EgressConfig`]). The proxy serves `CONNECT host:port` (HTTPS tunnels) and
//! plain-HTTP requests in absolute form (`GET http://host/path HTTP/1.1`), and refuses
//! with `403` every destination on the host itself or outside the public internet: every
//! address of the host's own interfaces (read at connect time), and every range of IANA's
//! IPv4 and IPv6 special-purpose registries — loopback, RFC 1918, link-local, CGNAT,
//! documentation and benchmarking nets, multicast and broadcast, ULA, site-local, and the
//! translation prefixes (NAT64, 6to4, Teredo) that could lead back to any of them. The
//! check is made on the resolved address, so a name that resolves to `127.0.0.1` is
//! refused as well. Only [`EgressProxyBuilder::dangerous_allow_destination`] opens one.
//!
//! Each machine gets a listener of its own ([`EgressProxy::open_for`]) with its own tunnel
//! limit (64 by default) inside the proxy's (512), so one guest cannot take the tunnels
//! every other job needs. QEMU runs the connector program once per guest connection
//! (`guestfwd=…-cmd:`, the only way SLIRP gives a guest connection to the host); past its
//! machine's limit the proxy answers `503` and closes at once, so the connector exits and
//! at most that many connector processes per machine stay alive.
//!
//! You need this module to start a proxy of your own ([`EgressProxy::builder`]) and hand
//! it to [`crate::QemuHypervisorBuilder::egress_proxy`], or to run steps that need the
//! address guests see ([`EGRESS_PROXY_ADDR`], [`EGRESS_PROXY_URL`]). [`MachineSetup`]
//! starts one for you.
//!
//! [`MachineSetup`]: crate::MachineSetup

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::net::{EGRESS_PROXY_ADDR, EGRESS_PROXY_URL, EgressConfig};

/// Why the proxy could not start, or why it refused or failed one request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EgressError {
    /// The listening socket could not be made.
    #[error("could not listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The request could not be understood.
    #[error("bad proxy request: {0}")]
    BadRequest(String),
    /// The request head was larger than the limit.
    #[error("request head larger than {0} bytes")]
    HeadTooLarge(usize),
    /// The destination is not allowed.
    #[error("destination {addr} ({host}) is refused: {reason}")]
    Forbidden {
        /// The host as the client gave it.
        host: String,
        /// The resolved address.
        addr: SocketAddr,
        /// Which rule refused it.
        reason: &'static str,
    },
    /// The host name did not resolve.
    #[error("could not resolve {host}")]
    Resolve {
        /// The host.
        host: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Connecting to the destination failed.
    #[error("could not connect to {addr}")]
    Connect {
        /// The destination.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Connecting (or resolving) took longer than the connect timeout.
    #[error("connecting to {0} timed out")]
    Timeout(String),
    /// Too many tunnels are open.
    #[error("too many open tunnels (limit {0})")]
    Busy(usize),
    /// Reading or writing the client connection failed.
    #[error("proxy connection failed")]
    Io(#[from] std::io::Error),
}

impl EgressError {
    /// The HTTP status the client gets for this error.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            Self::BadRequest(_) => (400, "Bad Request"),
            Self::HeadTooLarge(_) => (431, "Request Header Fields Too Large"),
            Self::Forbidden { .. } => (403, "Forbidden"),
            Self::Busy(_) => (503, "Service Unavailable"),
            Self::Timeout(_) => (504, "Gateway Timeout"),
            Self::Bind { .. } | Self::Resolve { .. } | Self::Connect { .. } | Self::Io(_) => (502, "Bad Gateway"),
        }
    }
}

/// What a client asked the proxy for, from its request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProxyRequest {
    /// `CONNECT host:port`: a tunnel.
    Connect {
        /// Host name or address (IPv6 without brackets).
        host: String,
        /// Port.
        port: u16,
    },
    /// A plain-HTTP request in absolute form, to be sent on in origin form.
    Forward {
        /// The method (`GET`, `POST`, ...).
        method: String,
        /// Host name or address (IPv6 without brackets).
        host: String,
        /// Port (80 unless given).
        port: u16,
        /// Path and query, starting with `/`.
        path: String,
        /// `HTTP/1.0` or `HTTP/1.1`.
        version: String,
    },
}

impl ProxyRequest {
    /// The destination host and port.
    pub(crate) fn target(&self) -> (&str, u16) {
        match self {
            Self::Connect { host, port } | Self::Forward { host, port, .. } => (host, *port),
        }
    }
}

fn bad(message: impl Into<String>) -> EgressError {
    EgressError::BadRequest(message.into())
}

/// Parses a proxy request line (without its line ending).
///
/// # Errors
/// [`EgressError::BadRequest`] for anything but `CONNECT host:port HTTP/1.x` and
/// `METHOD http://authority[/path] HTTP/1.x`.
pub(crate) fn parse_request_line(line: &str) -> Result<ProxyRequest, EgressError> {
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(bad("the request line is not `METHOD TARGET VERSION`"));
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(bad(format!("unsupported HTTP version `{version}`")));
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(bad(format!("bad method `{method}`")));
    }
    if method == "CONNECT" {
        let (host, port) = parse_authority(target, None)?;
        return Ok(ProxyRequest::Connect { host, port });
    }
    let Some(rest) = target.strip_prefix("http://") else {
        return Err(bad("only `CONNECT` and absolute `http://` URIs are served"));
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_owned()),
    };
    if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(bad("control characters in the path"));
    }
    let (host, port) = parse_authority(authority, Some(80))?;
    Ok(ProxyRequest::Forward { method: method.to_owned(), host, port, path, version: version.to_owned() })
}

/// Splits `host:port` or `[v6]:port` (the port may be left out when `default_port` is
/// given). Host names may hold only letters, digits, `-`, `_` and `.`.
///
/// # Errors
/// [`EgressError::BadRequest`] for a malformed authority, user information, or a
/// missing port without a default.
pub(crate) fn parse_authority(authority: &str, default_port: Option<u16>) -> Result<(String, u16), EgressError> {
    if authority.contains('@') {
        return Err(bad("user information in the authority is not allowed"));
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return Err(bad("unterminated `[` in the authority"));
        };
        v6.parse::<Ipv6Addr>().map_err(|_| bad(format!("bad IPv6 address `{v6}`")))?;
        match after {
            "" => (v6, None),
            p => (v6, Some(p.strip_prefix(':').ok_or_else(|| bad("junk after `]`"))?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    if !authority.starts_with('[') && !host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')) {
        return Err(bad(format!("bad host `{host}`")));
    }
    let port = match (port, default_port) {
        (Some(p), _) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| bad(format!("bad port `{p}`")))?,
        (None, Some(d)) => d,
        (None, None) => return Err(bad("the authority has no port")),
    };
    Ok((host.to_owned(), port))
}

/// IPv4 ranges refused: IANA's IPv4 Special-Purpose Address Registry (RFC 6890 and its
/// updates) plus multicast (RFC 5771). Entries the registry marks globally reachable
/// (192.0.0.9/32, 192.0.0.10/32) are inside 192.0.0.0/24 and refused with it: a guest
/// has no business with either.
const SPECIAL_V4: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8, "\"this network\" (0.0.0.0/8)"),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private address (RFC 1918)"),
    (Ipv4Addr::new(100, 64, 0, 0), 10, "shared address space (100.64/10, CGNAT)"),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback address"),
    (Ipv4Addr::new(169, 254, 0, 0), 16, "link-local address (169.254/16)"),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private address (RFC 1918)"),
    (Ipv4Addr::new(192, 0, 0, 0), 24, "IETF protocol assignments (192.0.0/24)"),
    (Ipv4Addr::new(192, 0, 2, 0), 24, "documentation address (TEST-NET-1)"),
    (Ipv4Addr::new(192, 88, 99, 0), 24, "6to4 relay anycast (192.88.99/24)"),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private address (RFC 1918)"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking address (198.18/15)"),
    (Ipv4Addr::new(198, 51, 100, 0), 24, "documentation address (TEST-NET-2)"),
    (Ipv4Addr::new(203, 0, 113, 0), 24, "documentation address (TEST-NET-3)"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast address"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved or broadcast address (240/4)"),
];

/// IPv6 ranges refused: IANA's IPv6 Special-Purpose Address Registry, site-local
/// (RFC 3879, deprecated but still routed by some stacks) and multicast. Translation
/// prefixes (NAT64, 6to4, Teredo) are refused whole: each embeds an IPv4 address a
/// translator would reach on the guest's behalf, possibly one of the host's.
/// `::ffff:0:0/96` is not here: a mapped address is judged by the IPv4 address it holds.
const SPECIAL_V6: &[(Ipv6Addr, u8, &str)] = &[
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 128, "unspecified address"),
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1), 128, "loopback address"),
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 96, "IPv4-compatible IPv6 address (::/96)"),
    (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96, "NAT64 address (64:ff9b::/96)"),
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48, "local NAT64 address (64:ff9b:1::/48)"),
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64, "discard-only address (100::/64)"),
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32, "Teredo address (2001::/32)"),
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23, "IETF protocol assignment (2001::/23)"),
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32, "documentation address (2001:db8::/32)"),
    (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16, "6to4 address (2002::/16)"),
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20, "documentation address (3fff::/20)"),
    (Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0), 16, "segment routing SID (5f00::/16)"),
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7, "unique local address (fc00::/7)"),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, "link-local address (fe80::/10)"),
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10, "site-local address (fec0::/10)"),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, "multicast address"),
];

/// Whether `ip` is inside `net/len`.
fn in_prefix(ip: u128, net: u128, len: u8, bits: u8) -> bool {
    let shift = u32::from(bits - len);
    len == 0 || (ip >> shift) == (net >> shift)
}

/// Why the default policy refuses `ip`, or `None` if it is a public address. The host's
/// own addresses are refused apart, at connect time ([`host_addresses`]).
pub(crate) fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            let bits = u128::from(v6);
            SPECIAL_V6.iter().find(|(net, len, _)| in_prefix(bits, u128::from(*net), *len, 128)).map(|(_, _, why)| *why)
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let bits = u128::from(u32::from(ip));
    SPECIAL_V4
        .iter()
        .find(|(net, len, _)| in_prefix(bits, u128::from(u32::from(*net)), *len, 32))
        .map(|(_, _, why)| *why)
}

/// The addresses of the host's own interfaces, read each time a destination is checked
/// (they change with DHCP, VPNs and hot-plugged links); `None` if they cannot be read.
/// Without this a guest could reach a service listening on `0.0.0.0` through the host's
/// public address (issue 16, item 10).
fn host_addresses() -> Option<Vec<IpAddr>> {
    match nix::ifaddrs::getifaddrs() {
        Ok(interfaces) => Some(
            interfaces
                .filter_map(|i| i.address)
                .filter_map(|a| {
                    a.as_sockaddr_in()
                        .map(|v4| IpAddr::V4(v4.ip()))
                        .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
                })
                .collect(),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the host's interface addresses");
            None
        }
    }
}

/// A destination the policy would refuse that is let through anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Allowed {
    Ip(IpAddr),
    Socket(SocketAddr),
}

/// The proxy's destination rule: the default refusal table and the host's own
/// addresses, minus explicit exceptions.
#[derive(Debug, Clone)]
struct Policy {
    allowed: Vec<Allowed>,
    /// Where the host's addresses come from ([`host_addresses`]; tests pass their own).
    host_addresses: fn() -> Option<Vec<IpAddr>>,
}

impl Default for Policy {
    fn default() -> Self {
        Self { allowed: Vec::new(), host_addresses }
    }
}

impl Policy {
    /// Refuses what [`forbidden_reason`] refuses and the host's own addresses, unless
    /// explicitly allowed.
    fn check(&self, addr: SocketAddr) -> Result<(), &'static str> {
        let ip = match addr.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        let canonical = SocketAddr::new(ip, addr.port());
        if self.allowed.iter().any(|a| *a == Allowed::Ip(ip) || *a == Allowed::Socket(canonical)) {
            return Ok(());
        }
        if let Some(reason) = forbidden_reason(ip) {
            return Err(reason);
        }
        // Fails closed: if the interfaces cannot be read, nothing is let through.
        match (self.host_addresses)() {
            Some(host) if !host.contains(&ip) => Ok(()),
            Some(_) => Err("an address of the host itself"),
            None => Err("the host's own addresses could not be listed"),
        }
    }
}

/// Something [`EgressProxyBuilder::dangerous_allow_destination`] accepts: an address
/// (every port) or a socket address (that port only).
#[derive(Debug, Clone, Copy)]
pub struct Destination(Allowed);

impl From<IpAddr> for Destination {
    fn from(ip: IpAddr) -> Self {
        Self(Allowed::Ip(ip))
    }
}

impl From<SocketAddr> for Destination {
    fn from(addr: SocketAddr) -> Self {
        Self(Allowed::Socket(addr))
    }
}

/// Builds an [`EgressProxy`].
#[derive(Debug, Clone)]
#[must_use]
pub struct EgressProxyBuilder {
    listen: SocketAddr,
    policy: Policy,
    max_head: usize,
    head_timeout: Duration,
    connect_timeout: Duration,
    max_tunnels: usize,
    max_tunnels_per_vm: usize,
}

impl Default for EgressProxyBuilder {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            policy: Policy::default(),
            max_head: 16 * 1024,
            head_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_tunnels: 512,
            max_tunnels_per_vm: 64,
        }
    }
}

impl EgressProxyBuilder {
    /// DANGEROUS: lets the proxy connect to `destination` even though the policy refuses
    /// it (an [`IpAddr`] for every port, a [`SocketAddr`] for one). Meant for tests that
    /// have no internet and stand a server up on the host's loopback.
    pub fn dangerous_allow_destination(mut self, destination: impl Into<Destination>) -> Self {
        self.policy.allowed.push(destination.into().0);
        self
    }

    /// The largest request head (request line and headers) read. Default: 16 KiB.
    pub fn max_head_bytes(mut self, n: usize) -> Self {
        self.max_head = n.max(64);
        self
    }

    /// How long a client may take to send its request head. Default: 30 s.
    pub fn head_timeout(mut self, timeout: Duration) -> Self {
        self.head_timeout = timeout;
        self
    }

    /// How long resolving and connecting to a destination may take. Default: 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How many client connections are served at once, all machines together; more get
    /// `503`. Each open tunnel holds two file descriptors. Default: 512.
    pub fn max_tunnels(mut self, n: usize) -> Self {
        self.max_tunnels = n.max(1);
        self
    }

    /// How many client connections one listener serves at once: one machine's (see
    /// [`EgressProxy::open_for`]) or the shared one's. More get `503` at once, so one
    /// guest cannot take the tunnels every other job needs. Default: 64.
    pub fn max_tunnels_per_vm(mut self, n: usize) -> Self {
        self.max_tunnels_per_vm = n.max(1);
        self
    }

    /// Listens on `127.0.0.1` (an ephemeral port) and starts serving.
    ///
    /// # Errors
    /// [`EgressError::Bind`] when the socket cannot be made.
    pub async fn start(self) -> Result<EgressProxy, EgressError> {
        let listener = TcpListener::bind(self.listen).await.map_err(|source| EgressError::Bind { addr: self.listen, source })?;
        let addr = listener.local_addr().map_err(|source| EgressError::Bind { addr: self.listen, source })?;
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let settings = Arc::new(Settings {
            policy: self.policy,
            max_head: self.max_head,
            head_timeout: self.head_timeout,
            connect_timeout: self.connect_timeout,
            max_tunnels: self.max_tunnels,
            max_tunnels_per_vm: self.max_tunnels_per_vm,
        });
        let slots = Arc::new(Semaphore::new(self.max_tunnels));
        let listener_slots = Arc::new(Semaphore::new(self.max_tunnels_per_vm));
        let shared = Listener { name: "shared".into(), slots: listener_slots, cancel: cancel.clone() };
        tracker.spawn(accept_loop(listener, shared, settings.clone(), slots.clone(), tracker.clone()));
        tracing::info!(%addr, "egress proxy listening");
        Ok(EgressProxy { inner: Arc::new(ProxyInner { addr, cancel, tracker, settings, slots }) })
    }
}

#[derive(Debug)]
struct Settings {
    policy: Policy,
    max_head: usize,
    head_timeout: Duration,
    connect_timeout: Duration,
    max_tunnels: usize,
    max_tunnels_per_vm: usize,
}

/// An HTTP proxy on the host's loopback that lets guests reach public addresses only.
///
/// Start one with [`EgressProxy::builder`], then hand it to
/// [`crate::QemuHypervisorBuilder::egress_proxy`] (or let the hypervisor start its own
/// with [`crate::QemuHypervisorBuilder::start_egress_proxy`]). Clones share the proxy;
/// it stops when [`EgressProxy::shutdown`] is called or the last clone is dropped, and
/// every connection it serves is stopped with it.
#[derive(Debug, Clone)]
pub struct EgressProxy {
    inner: Arc<ProxyInner>,
}

#[derive(Debug)]
struct ProxyInner {
    addr: SocketAddr,
    cancel: CancellationToken,
    tracker: TaskTracker,
    settings: Arc<Settings>,
    /// Tunnels of all listeners together.
    slots: Arc<Semaphore>,
}

impl Drop for ProxyInner {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.tracker.close();
    }
}

impl EgressProxy {
    /// A builder with the defaults listed on its methods.
    pub fn builder() -> EgressProxyBuilder {
        EgressProxyBuilder::default()
    }

    /// Where the proxy listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The guest forward's settings for this proxy, with the default connector.
    pub fn egress_config(&self) -> EgressConfig {
        EgressConfig::new(self.inner.addr.port())
    }

    /// A listener of this proxy for one machine, on its own ephemeral port of `127.0.0.1`,
    /// with its own tunnel limit ([`EgressProxyBuilder::max_tunnels_per_vm`]) inside the
    /// proxy's. Guests cannot be told apart on the shared port (every connection comes
    /// from the connector on the host's loopback), so each machine gets a port of its own;
    /// dropping the lease closes it and every tunnel opened through it.
    ///
    /// # Errors
    /// [`EgressError::Bind`] when the socket cannot be made.
    pub async fn open_for(&self, vm: &str) -> Result<EgressLease, EgressError> {
        let listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let listener = TcpListener::bind(listen).await.map_err(|source| EgressError::Bind { addr: listen, source })?;
        let addr = listener.local_addr().map_err(|source| EgressError::Bind { addr: listen, source })?;
        let inner = &self.inner;
        let cancel = inner.cancel.child_token();
        let own = Listener { name: vm.to_owned(), slots: Arc::new(Semaphore::new(inner.settings.max_tunnels_per_vm)), cancel: cancel.clone() };
        inner.tracker.spawn(accept_loop(listener, own, inner.settings.clone(), inner.slots.clone(), inner.tracker.clone()));
        tracing::debug!(vm, %addr, "egress listener opened");
        Ok(EgressLease { addr, cancel })
    }

    /// Stops accepting, closes every open connection, and waits for all of its tasks.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }
}

/// One machine's listener on an [`EgressProxy`] (see [`EgressProxy::open_for`]). Dropping
/// it stops the listener and closes its tunnels.
#[derive(Debug)]
pub struct EgressLease {
    addr: SocketAddr,
    cancel: CancellationToken,
}

impl EgressLease {
    /// Where this machine's listener is.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The guest forward's settings for this listener, with the default connector.
    pub fn egress_config(&self) -> EgressConfig {
        EgressConfig::new(self.addr.port())
    }
}

impl Drop for EgressLease {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A listening port of the proxy: whose it is, its own tunnel limit and its stop signal.
#[derive(Debug)]
struct Listener {
    name: String,
    slots: Arc<Semaphore>,
    cancel: CancellationToken,
}

async fn accept_loop(listener: TcpListener, own: Listener, settings: Arc<Settings>, slots: Arc<Semaphore>, tracker: TaskTracker) {
    let cancel = own.cancel.clone();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = cancel.cancelled() => return,
        };
        let (mut stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "egress proxy accept failed");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                    () = cancel.cancelled() => return,
                }
            }
        };
        let settings = settings.clone();
        let cancel = cancel.clone();
        // This listener's limit first: a guest at its own limit is told so without
        // touching the slots every other machine shares.
        let permits = match own.slots.clone().try_acquire_owned() {
            Ok(mine) => slots.clone().try_acquire_owned().map(|all| (mine, all)).map_err(|_| settings.max_tunnels),
            Err(_) => Err(settings.max_tunnels_per_vm),
        };
        let permits = match permits {
            Ok(permits) => permits,
            Err(limit) => {
                tracing::debug!(listener = own.name, limit, "egress tunnel refused: at the limit");
                tracker.spawn(async move {
                    let error = EgressError::Busy(limit);
                    let _ = tokio::time::timeout(Duration::from_secs(5), respond_error(&mut stream, &error)).await;
                });
                continue;
            }
        };
        tracker.spawn(async move {
            let _permits = permits;
            tokio::select! {
                result = serve(&mut stream, &settings) => {
                    if let Err(e) = result {
                        tracing::info!(%peer, error = %e, "egress proxy request failed");
                    }
                }
                () = cancel.cancelled() => {}
            }
        });
    }
}

/// Reads until the end of the request head; returns the head (without the blank line)
/// and whatever came after it.
async fn read_head<R: AsyncRead + Unpin>(stream: &mut R, limit: usize) -> Result<(String, Vec<u8>), EgressError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if end > limit {
                return Err(EgressError::HeadTooLarge(limit));
            }
            let rest = buf.split_off(end + 4);
            buf.truncate(end);
            let head = String::from_utf8(buf).map_err(|_| bad("the request head is not UTF-8"))?;
            return Ok((head, rest));
        }
        if buf.len() > limit {
            return Err(EgressError::HeadTooLarge(limit));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(bad("the connection closed before the request head ended"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn respond_error<W: AsyncWrite + Unpin>(stream: &mut W, error: &EgressError) -> std::io::Result<()> {
    let (code, text) = error.status();
    let body = format!("{}\n", error.to_string().replace(['\r', '\n'], " "));
    let response = format!(
        "HTTP/1.1 {code} {text}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

async fn serve(client: &mut TcpStream, settings: &Settings) -> Result<(), EgressError> {
    let prepared = async {
        let (head, rest) = tokio::time::timeout(settings.head_timeout, read_head(client, settings.max_head))
            .await
            .map_err(|_| bad("the request head did not arrive in time"))??;
        let (line, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
        let request = parse_request_line(line)?;
        let (host, port) = request.target();
        let upstream = connect(host, port, settings).await?;
        Ok::<_, EgressError>((request, headers.to_owned(), rest, upstream))
    }
    .await;
    let (request, headers, rest, mut upstream) = match prepared {
        Ok(p) => p,
        Err(e) => {
            let _ = respond_error(client, &e).await;
            return Err(e);
        }
    };
    match request {
        ProxyRequest::Connect { .. } => {
            client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await?;
            upstream.write_all(&rest).await?;
        }
        ProxyRequest::Forward { method, path, version, .. } => {
            let mut head = format!("{method} {path} {version}\r\n");
            for header in headers.split("\r\n").filter(|h| !h.is_empty()) {
                let name = header.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
                if !matches!(name.as_str(), "proxy-connection" | "proxy-authorization" | "connection" | "keep-alive") {
                    head.push_str(header);
                    head.push_str("\r\n");
                }
            }
            head.push_str("Connection: close\r\n\r\n");
            upstream.write_all(head.as_bytes()).await?;
            upstream.write_all(&rest).await?;
        }
    }
    tokio::io::copy_bidirectional(client, &mut upstream).await?;
    Ok(())
}

/// Resolves `host` and connects to the first address the policy allows.
async fn connect(host: &str, port: u16, settings: &Settings) -> Result<TcpStream, EgressError> {
    let timeout = |_| EgressError::Timeout(format!("{host}:{port}"));
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::time::timeout(settings.connect_timeout, tokio::net::lookup_host((host, port)))
            .await
            .map_err(timeout)?
            .map_err(|source| EgressError::Resolve { host: host.to_owned(), source })?
            .collect(),
    };
    let mut refused = None;
    for addr in addrs {
        match settings.policy.check(addr) {
            Ok(()) => {
                return tokio::time::timeout(settings.connect_timeout, TcpStream::connect(addr))
                    .await
                    .map_err(timeout)?
                    .map_err(|source| EgressError::Connect { addr, source });
            }
            Err(reason) => {
                refused.get_or_insert(EgressError::Forbidden { host: host.to_owned(), addr, reason });
            }
        }
    }
    Err(refused.unwrap_or_else(|| EgressError::Resolve {
        host: host.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn connect_lines_parse() {
        assert_eq!(
            parse_request_line("CONNECT deb.debian.org:443 HTTP/1.1").expect("parse"),
            ProxyRequest::Connect { host: "deb.debian.org".into(), port: 443 }
        );
        assert_eq!(
            parse_request_line("CONNECT [2001:db8::1]:8443 HTTP/1.0").expect("parse"),
            ProxyRequest::Connect { host: "2001:db8::1".into(), port: 8443 }
        );
    }

    #[test]
    fn absolute_uris_become_origin_form() {
        assert_eq!(
            parse_request_line("GET http://deb.debian.org/debian/dists/stable/Release HTTP/1.1").expect("parse"),
            ProxyRequest::Forward {
                method: "GET".into(),
                host: "deb.debian.org".into(),
                port: 80,
                path: "/debian/dists/stable/Release".into(),
                version: "HTTP/1.1".into(),
            }
        );
        let ProxyRequest::Forward { host, port, path, .. } =
            parse_request_line("HEAD http://127.0.0.1:8080?x=1 HTTP/1.0").expect("parse")
        else {
            panic!("not a forward");
        };
        assert_eq!((host.as_str(), port, path.as_str()), ("127.0.0.1", 8080, "/?x=1"));
        let ProxyRequest::Forward { path, .. } = parse_request_line("GET http://example.org HTTP/1.1").expect("parse") else {
            panic!("not a forward");
        };
        assert_eq!(path, "/");
    }

    #[test]
    fn malformed_requests_are_rejected() {
        for line in [
            "",
            "GET / HTTP/1.1",
            "GET https://example.org/ HTTP/1.1",
            "CONNECT example.org HTTP/1.1",
            "CONNECT example.org:0 HTTP/1.1",
            "CONNECT example.org:99999 HTTP/1.1",
            "CONNECT user@example.org:443 HTTP/1.1",
            "CONNECT [::1:443 HTTP/1.1",
            "CONNECT ex ample.org:443 HTTP/1.1",
            "CONNECT example.org:443 HTTP/2",
            "get http://example.org/ HTTP/1.1",
            "GET http://exa\"mple.org/ HTTP/1.1",
            "GET http://:80/ HTTP/1.1",
            "GET http://example.org/ HTTP/1.1 extra",
        ] {
            assert!(matches!(parse_request_line(line), Err(EgressError::BadRequest(_))), "{line:?} was accepted");
        }
    }

    #[test]
    fn the_policy_table_refuses_host_and_private_ranges() {
        for (addr, refused) in [
            ("127.0.0.1", true),
            ("127.255.0.9", true),
            ("10.0.2.2", true),
            ("172.16.0.1", true),
            ("172.31.255.255", true),
            ("172.32.0.1", false),
            ("192.168.1.1", true),
            ("169.254.169.254", true),
            ("100.64.0.1", true),
            ("100.127.255.255", true),
            ("100.128.0.1", false),
            ("0.0.0.0", true),
            ("224.0.0.1", true),
            ("255.255.255.255", true),
            ("8.8.8.8", false),
            ("151.101.2.132", false),
            ("::1", true),
            ("::", true),
            ("fd00::1", true),
            ("fc12::1", true),
            ("fe80::1", true),
            ("ff02::1", true),
            ("::ffff:127.0.0.1", true),
            ("::ffff:10.1.2.3", true),
            ("::ffff:8.8.8.8", false),
            ("2a04:4e42::644", false),
        ] {
            assert_eq!(forbidden_reason(ip(addr)).is_some(), refused, "{addr}: {:?}", forbidden_reason(ip(addr)));
        }
    }

    /// Issue 16, item 10: every IANA special-purpose range (IPv4 and IPv6 Special-Purpose
    /// Address Registries at iana.org, RFC 6890) is refused, at its first and last
    /// address, while the public addresses just outside it pass.
    #[test]
    fn issue_16_every_special_purpose_range_is_refused() {
        for (addr, refused) in [
            ("0.255.255.255", true),
            ("1.0.0.0", false),
            ("192.0.0.0", true),
            ("192.0.0.255", true),
            ("192.0.1.0", false),
            ("192.0.2.0", true),
            ("192.0.2.255", true),
            ("192.88.99.1", true),
            ("192.88.100.1", false),
            ("198.17.255.255", false),
            ("198.18.0.0", true),
            ("198.19.255.255", true),
            ("198.20.0.0", false),
            ("198.51.100.7", true),
            ("203.0.113.9", true),
            ("203.0.114.1", false),
            ("239.255.255.255", true),
            ("240.0.0.1", true),
            ("::ffff:192.0.2.1", true),
            ("::ffff:198.18.0.1", true),
            ("::ffff:0:0", true),
            ("::1.2.3.4", true),
            ("64:ff9b::8.8.8.8", true),
            ("64:ff9b::7f00:1", true),
            ("64:ff9b:1::1", true),
            ("64:ff9b:2::1", false),
            ("100::1", true),
            ("100::ffff:ffff:ffff:ffff", true),
            ("100:0:0:1::1", false),
            ("2001::1", true),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", true),
            ("2001:1ff:ffff::1", true),
            ("2001:200::1", false),
            ("2001:db8::1", true),
            ("2001:db8:ffff::1", true),
            ("2001:db9::1", false),
            ("2002::1", true),
            ("2002:7f00:1::1", true),
            ("2003::1", false),
            ("3fff::1", true),
            ("5f00::1", true),
            ("fbff::1", false),
            ("fc00::1", true),
            ("fdff:ffff::1", true),
            ("febf::1", true),
            ("fec0::1", true),
            ("feff::1", true),
            ("ff00::1", true),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("2606:4700::1111", false),
        ] {
            assert_eq!(forbidden_reason(ip(addr)).is_some(), refused, "{addr}: {:?}", forbidden_reason(ip(addr)));
        }
    }

    /// Issue 16, item 10: the host's own addresses are refused even when public, in
    /// either spelling, and the proxy fails closed when it cannot list them.
    #[test]
    fn issue_16_the_hosts_own_addresses_are_refused() {
        let public_host = Policy { host_addresses: || Some(vec![ip("151.101.2.132"), ip("2a04:4e42::644")]), ..Policy::default() };
        for host in ["151.101.2.132", "::ffff:151.101.2.132", "2a04:4e42::644"] {
            assert_eq!(public_host.check(SocketAddr::new(ip(host), 443)), Err("an address of the host itself"), "{host}");
        }
        assert_eq!(public_host.check(SocketAddr::new(ip("8.8.8.8"), 443)), Ok(()));
        let unknown = Policy { host_addresses: || None, ..Policy::default() };
        assert!(unknown.check(SocketAddr::new(ip("8.8.8.8"), 443)).is_err());
        // The real listing sees the loopback interface, and every address of this host is
        // refused by the default policy, whatever range it is in.
        let real = host_addresses().expect("getifaddrs");
        assert!(real.contains(&ip("127.0.0.1")), "{real:?}");
        for addr in real {
            assert!(Policy::default().check(SocketAddr::new(addr, 22)).is_err(), "{addr} is open");
        }
    }

    #[test]
    fn the_allowlist_opens_exactly_what_it_names() {
        let loopback_port = SocketAddr::from(([127, 0, 0, 1], 8080));
        let policy = Policy { allowed: vec![Allowed::Socket(loopback_port), Allowed::Ip(ip("10.1.2.3"))], ..Policy::default() };
        assert_eq!(policy.check(loopback_port), Ok(()));
        assert!(policy.check(SocketAddr::from(([127, 0, 0, 1], 8081))).is_err());
        assert_eq!(policy.check(SocketAddr::new(ip("::ffff:127.0.0.1"), 8080)), Ok(()));
        assert_eq!(policy.check(SocketAddr::new(ip("10.1.2.3"), 1)), Ok(()));
        assert!(policy.check(SocketAddr::new(ip("10.1.2.4"), 1)).is_err());
        assert_eq!(policy.check(SocketAddr::new(ip("8.8.8.8"), 53)), Ok(()));
    }

    /// A server that answers every connection with what it read first, then closes.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let _ = s.write_all(b"echo:").await;
                    let _ = s.write_all(&buf[..n]).await;
                });
            }
        });
        addr
    }

    async fn ask(proxy: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(proxy).await.expect("connect to proxy");
        s.write_all(request.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await.expect("proxy answered").expect("read");
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn tunnels_reach_allowed_servers_and_others_get_403() {
        let allowed = echo_server().await;
        let other = echo_server().await;
        let proxy = EgressProxy::builder().dangerous_allow_destination(allowed).start().await.expect("start");
        let addr = proxy.local_addr();
        assert!(addr.ip().is_loopback());

        let reply = ask(addr, &format!("CONNECT {allowed} HTTP/1.1\r\nHost: x\r\n\r\nping")).await;
        assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
        assert!(reply.ends_with("echo:ping"), "{reply}");

        let reply = ask(addr, &format!("GET http://{allowed}/a?b HTTP/1.1\r\nHost: h\r\nProxy-Connection: keep-alive\r\n\r\n")).await;
        assert!(reply.starts_with("echo:GET /a?b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"), "{reply}");

        let reply = ask(addr, &format!("CONNECT {other} HTTP/1.1\r\n\r\n")).await;
        assert!(reply.starts_with("HTTP/1.1 403 Forbidden"), "{reply}");
        assert!(reply.contains("loopback address"), "{reply}");
        let reply = ask(addr, "CONNECT localhost:22 HTTP/1.1\r\n\r\n").await;
        assert!(reply.starts_with("HTTP/1.1 403 "), "{reply}");
        let reply = ask(addr, "GET http://169.254.169.254/latest/meta-data HTTP/1.1\r\n\r\n").await;
        assert!(reply.starts_with("HTTP/1.1 403 "), "{reply}");
        let reply = ask(addr, "nonsense\r\n\r\n").await;
        assert!(reply.starts_with("HTTP/1.1 400 "), "{reply}");
        proxy.shutdown().await;
        assert!(TcpStream::connect(addr).await.is_err(), "the proxy still listens after shutdown");
    }

    /// Issue 16, item 11: one guest opening 300 connections gets 64 and `503` for the
    /// rest, while another machine's listener still serves; and item 10's destinations
    /// are refused through it.
    #[tokio::test]
    async fn issue_16_one_guest_cannot_take_every_tunnel() {
        let allowed = echo_server().await;
        let proxy = EgressProxy::builder().dangerous_allow_destination(allowed).start().await.expect("start");
        let greedy = proxy.open_for("vm-greedy").await.expect("lease");
        let polite = proxy.open_for("vm-polite").await.expect("lease");
        assert_ne!(greedy.local_addr(), polite.local_addr());
        assert_eq!(polite.egress_config().proxy_port, polite.local_addr().port());

        // 300 connections that never send a request hold whatever slots they get.
        let mut opened = Vec::new();
        for _ in 0..300 {
            opened.push(TcpStream::connect(greedy.local_addr()).await.expect("connect"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut held = Vec::new();
        let mut refused = 0;
        for mut s in opened {
            let mut reply = [0u8; 64];
            // A refused connection was answered at once; a served one waits for its head.
            match tokio::time::timeout(Duration::from_millis(50), s.read(&mut reply)).await {
                Ok(Ok(n)) if n > 0 => {
                    assert!(reply.starts_with(b"HTTP/1.1 503 "), "{:?}", String::from_utf8_lossy(&reply[..n]));
                    refused += 1;
                }
                Ok(other) => panic!("unexpected {other:?}"),
                Err(_) => held.push(s),
            }
        }
        assert_eq!((held.len(), refused), (64, 236));

        let reply = ask(polite.local_addr(), &format!("CONNECT {allowed} HTTP/1.1\r\n\r\nping")).await;
        assert!(reply.starts_with("HTTP/1.1 200 ") && reply.ends_with("echo:ping"), "{reply}");
        for target in ["10.0.2.2:22", "192.0.2.1:80", "198.18.0.1:80", "[64:ff9b::7f00:1]:80", "[2002:7f00:1::1]:80", "[2001::1]:80", "[fec0::1]:80"] {
            let reply = ask(polite.local_addr(), &format!("CONNECT {target} HTTP/1.1\r\n\r\n")).await;
            assert!(reply.starts_with("HTTP/1.1 403 "), "{target}: {reply}");
        }

        // Dropping the lease closes the listener and frees its tunnels.
        let addr = greedy.local_addr();
        drop(greedy);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(TcpStream::connect(addr).await.is_err(), "the lease's listener still accepts");
        let mut closed = [0u8; 1];
        assert_eq!(held[0].read(&mut closed).await.ok(), Some(0), "a held tunnel outlived its lease");
        proxy.shutdown().await;
    }

    #[tokio::test]
    async fn oversized_heads_and_excess_tunnels_are_refused() {
        let proxy = EgressProxy::builder().max_head_bytes(128).max_tunnels(1).start().await.expect("start");
        let addr = proxy.local_addr();
        let reply = ask(addr, &format!("GET http://example.org/{} HTTP/1.1\r\n\r\n", "a".repeat(400))).await;
        assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");
        // One idle client holds the only slot; the next is turned away.
        let _idle = TcpStream::connect(addr).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let reply = ask(addr, "CONNECT example.org:443 HTTP/1.1\r\n\r\n").await;
        assert!(reply.starts_with("HTTP/1.1 503 "), "{reply}");
        proxy.shutdown().await;
    }
}
