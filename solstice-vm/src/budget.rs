//! The host's share for guests: memory and vCPUs that machines running at once may
//! use together, on top of the count of machines.
//!
//! A machine reserves its catalog entry's memory and vCPUs before QEMU starts and
//! gives them back when it is destroyed. Reservations are taken in one order (memory,
//! then vCPUs), so two machines waiting for each other's share cannot deadlock.
//!
//! The budget is set on [`crate::QemuHypervisorBuilder`]; this module holds the error a
//! machine that could never fit reports ([`crate::VmError::OverBudget`]).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// What a machine asks for is more than the whole budget: it could never start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the image needs {needed} {unit} but the host's budget for all machines is {budget} {unit}")]
pub struct OverBudget {
    /// What the image needs.
    pub needed: u32,
    /// The whole budget.
    pub budget: u32,
    /// `MiB of memory` or `vCPUs`.
    pub unit: &'static str,
}

/// Memory (MiB) and vCPUs for all machines together; `None` is unlimited.
#[derive(Debug, Clone, Default)]
pub(crate) struct Budget {
    memory: Option<Pool>,
    vcpus: Option<Pool>,
}

#[derive(Debug, Clone)]
struct Pool {
    units: Arc<Semaphore>,
    total: u32,
    unit: &'static str,
}

/// A machine's share, given back when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    _memory: Option<OwnedSemaphorePermit>,
    _vcpus: Option<OwnedSemaphorePermit>,
}

/// Why a reservation was not made.
#[derive(Debug)]
pub(crate) enum ReserveError {
    OverBudget(OverBudget),
    Cancelled,
}

impl Pool {
    fn new(total: u32, unit: &'static str) -> Self {
        Self { units: Arc::new(Semaphore::new(total as usize)), total, unit }
    }

    async fn take(&self, needed: u32, cancel: &CancellationToken) -> Result<OwnedSemaphorePermit, ReserveError> {
        if needed > self.total {
            return Err(ReserveError::OverBudget(OverBudget { needed, budget: self.total, unit: self.unit }));
        }
        tokio::select! {
            permit = self.units.clone().acquire_many_owned(needed) => permit.map_err(|_| ReserveError::Cancelled),
            _ = cancel.cancelled() => Err(ReserveError::Cancelled),
        }
    }
}

impl Budget {
    /// A budget of `memory_mib` and `vcpus` for all machines; `None` is no limit.
    pub(crate) fn new(memory_mib: Option<u32>, vcpus: Option<u32>) -> Self {
        Self {
            memory: memory_mib.map(|m| Pool::new(m, "MiB of memory")),
            vcpus: vcpus.map(|v| Pool::new(v, "vCPUs")),
        }
    }

    /// Waits until `memory_mib` and `vcpus` are free and takes them.
    pub(crate) async fn reserve(
        &self,
        memory_mib: u32,
        vcpus: u32,
        cancel: &CancellationToken,
    ) -> Result<Reservation, ReserveError> {
        // Refuse the impossible before waiting for anything.
        for (pool, needed) in [(&self.memory, memory_mib), (&self.vcpus, vcpus)] {
            if let Some(pool) = pool.as_ref().filter(|p| needed > p.total) {
                return Err(ReserveError::OverBudget(OverBudget { needed, budget: pool.total, unit: pool.unit }));
            }
        }
        let memory = match &self.memory {
            Some(pool) => Some(pool.take(memory_mib, cancel).await?),
            None => None,
        };
        let vcpus = match &self.vcpus {
            Some(pool) => Some(pool.take(vcpus, cancel).await?),
            None => None,
        };
        Ok(Reservation { _memory: memory, _vcpus: vcpus })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn machines_wait_for_memory_and_get_it_when_another_is_gone() {
        let budget = Budget::new(Some(1024), Some(4));
        let cancel = CancellationToken::new();
        let first = budget.reserve(768, 2, &cancel).await.expect("fits");
        let waiting = {
            let budget = budget.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move { budget.reserve(512, 2, &cancel).await.is_ok() })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "768 + 512 MiB is over the 1024 MiB budget");
        drop(first);
        assert!(tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("in time").expect("join"));
    }

    #[tokio::test]
    async fn vcpus_are_a_budget_of_their_own() {
        let budget = Budget::new(None, Some(4));
        let cancel = CancellationToken::new();
        let _a = budget.reserve(100_000, 4, &cancel).await.expect("memory is unlimited");
        let child = cancel.child_token();
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { matches!(budget.reserve(1, 1, &child).await, Err(ReserveError::Cancelled)) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        cancel.cancel();
        assert!(waiting.await.expect("join"), "a waiting reservation ends when cancelled");
    }

    #[tokio::test]
    async fn an_image_bigger_than_the_whole_budget_is_refused_at_once() {
        let budget = Budget::new(Some(2048), Some(2));
        match budget.reserve(4096, 1, &CancellationToken::new()).await {
            Err(ReserveError::OverBudget(e)) => {
                assert_eq!(e.to_string(), "the image needs 4096 MiB of memory but the host's budget for all machines is 2048 MiB of memory");
            }
            other => panic!("expected OverBudget, got {other:?}"),
        }
        assert!(matches!(budget.reserve(1, 3, &CancellationToken::new()).await, Err(ReserveError::OverBudget(_))));
    }
}
