//! Host ports for the guests' SSH forwards.
//!
//! A [`PortAllocator`] is shared between the hypervisors of a host (see
//! [`crate::QemuHypervisorBuilder::ports`]) so their machines never get the same port;
//! it is its own module because it belongs to the host, not to one QEMU process.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// No free port was left in the allocator's range.
#[derive(Debug, thiserror::Error)]
#[error("no free host port in {start}..{end} ({leased} leased to live machines)")]
pub struct PortError {
    /// First port of the range.
    pub start: u16,
    /// End of the range (exclusive).
    pub end: u16,
    /// Ports held by live leases.
    pub leased: usize,
}

#[derive(Debug)]
struct Inner {
    range: Range<u16>,
    leased: Mutex<(HashSet<u16>, u16)>,
}

/// Hands out loopback ports that no live machine holds and that nothing else on the
/// host listens on.
///
/// A port is leased until its [`PortLease`] is dropped, so two live machines never get
/// the same port however many allocate at once. Before leasing, the allocator binds the
/// port on `127.0.0.1` to make sure no other program holds it; a program may still take
/// it in the short gap before QEMU binds it, which QEMU reports at start-up (the
/// hypervisor then retries with another port). Ports are taken in turn through the range,
/// so a just-released port is not reused at once. Cloning is cheap and shares the leases.
#[derive(Debug, Clone)]
pub struct PortAllocator {
    inner: Arc<Inner>,
}

impl PortAllocator {
    /// An allocator over `range` (e.g. `42000..43000`).
    pub fn new(range: Range<u16>) -> Self {
        let start = range.start;
        Self { inner: Arc::new(Inner { range, leased: Mutex::new((HashSet::new(), start)) }) }
    }

    /// Leases a free port.
    ///
    /// # Errors
    /// [`PortError`] when every port of the range is leased or busy.
    pub fn allocate(&self) -> Result<PortLease, PortError> {
        let range = self.inner.range.clone();
        let size = usize::from(range.end.saturating_sub(range.start));
        let mut guard = self.inner.leased.lock().unwrap_or_else(|p| p.into_inner());
        let (leased, cursor) = &mut *guard;
        for _ in 0..size {
            let port = *cursor;
            *cursor = if port.saturating_add(1) >= range.end { range.start } else { port + 1 };
            if leased.contains(&port) || !is_free(port) {
                continue;
            }
            leased.insert(port);
            return Ok(PortLease { port, allocator: self.inner.clone() });
        }
        Err(PortError { start: range.start, end: range.end, leased: leased.len() })
    }

    /// How many ports are leased right now.
    pub fn leased(&self) -> usize {
        self.inner.leased.lock().map(|g| g.0.len()).unwrap_or(0)
    }
}

impl Default for PortAllocator {
    /// Ports 42000..44000.
    fn default() -> Self {
        Self::new(42000..44000)
    }
}

fn is_free(port: u16) -> bool {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).is_ok()
}

/// A leased port, released when dropped.
#[derive(Debug)]
pub struct PortLease {
    port: u16,
    allocator: Arc<Inner>,
}

impl PortLease {
    /// The port number.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        let mut guard = self.allocator.leased.lock().unwrap_or_else(|p| p.into_inner());
        guard.0.remove(&self.port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_allocations_never_share_a_port() {
        let allocator = PortAllocator::new(45000..45400);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let allocator = allocator.clone();
                std::thread::spawn(move || (0..40).filter_map(|_| allocator.allocate().ok()).collect::<Vec<_>>())
            })
            .collect();
        let leases: Vec<PortLease> = threads.into_iter().flat_map(|t| t.join().expect("thread")).collect();
        let ports: HashSet<u16> = leases.iter().map(PortLease::port).collect();
        assert_eq!(leases.len(), 320, "every allocation should succeed");
        assert_eq!(ports.len(), leases.len(), "a port was handed out twice");
        assert_eq!(allocator.leased(), 320);
        drop(leases);
        assert_eq!(allocator.leased(), 0);
    }

    #[test]
    fn a_port_held_by_another_program_is_skipped() {
        let holder = TcpListener::bind("127.0.0.1:0").expect("bind");
        let busy = holder.local_addr().expect("addr").port();
        let allocator = PortAllocator::new(busy..busy.saturating_add(2));
        let lease = allocator.allocate().expect("the next port is free");
        assert_ne!(lease.port(), busy);
    }

    #[test]
    fn an_exhausted_range_is_an_error_until_a_lease_is_dropped() {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = probe.local_addr().expect("addr").port();
        drop(probe);
        let allocator = PortAllocator::new(port..port + 1);
        let lease = allocator.allocate().expect("free");
        let err = allocator.allocate().expect_err("range is exhausted");
        assert_eq!(err.leased, 1);
        drop(lease);
        let again = allocator.allocate().expect("free again");
        assert_eq!(again.port(), port);
    }
}
