//! Running jobs on this host, without a virtual machine.

mod executor;
mod hypervisor;

pub use executor::HostExecutor;
pub use hypervisor::HostHypervisor;
