//! A repository's debug slot in the store, so that the one-machine-per-repository rule
//! of debug SSH holds across every orchestrator sharing the store, not only within
//! one `DebugKeeper` (see `Store::claim_debug_slot`). Without a store, only the
//! keeper's own rule applies.

use std::time::Duration;

use super::EngineInner;
use crate::JobId;

/// How much longer than the kept machine's time to live a slot is held: the keys are
/// installed before the time to live starts, and a slot must not lapse while its
/// machine still stands.
#[cfg_attr(not(feature = "_store"), allow(dead_code))]
const SLOT_MARGIN: Duration = Duration::from_secs(300);

/// Why the slot could not be had (only a store refuses).
#[cfg_attr(not(feature = "_store"), allow(dead_code))]
pub(crate) enum SlotRefused {
    /// Another job holds it (the nil id: a holder that could not be read).
    Busy(JobId),
    /// The store could not be asked.
    Unavailable,
}

/// A claimed slot, to be given back when the machine is gone.
pub(crate) struct SharedSlot {
    #[cfg(feature = "_store")]
    held: Option<(crate::Store, String, JobId)>,
}

impl SharedSlot {
    /// Claims `repository`'s slot for `job`, for the keeper's time to live `ttl` and a
    /// margin.
    pub(crate) async fn claim(engine: &EngineInner, repository: &str, job: JobId, ttl: Duration) -> Result<Self, SlotRefused> {
        #[cfg(feature = "_store")]
        if let Some(store) = &engine.store {
            return match store.claim_debug_slot(repository, job, &engine.name, ttl + SLOT_MARGIN).await {
                Ok(None) => Ok(Self { held: Some((store.clone(), repository.to_owned(), job)) }),
                Ok(Some(holder)) => Err(SlotRefused::Busy(holder)),
                Err(e) => {
                    tracing::warn!(job_id = %job, error = %crate::support::error_chain(&e), "could not claim the repository's debug slot");
                    Err(SlotRefused::Unavailable)
                }
            };
        }
        let _ = (engine, repository, job, ttl);
        Ok(Self {
            #[cfg(feature = "_store")]
            held: None,
        })
    }

    /// Gives the slot back (a failure is logged: the slot then lapses at its deadline).
    pub(crate) async fn release(self) {
        #[cfg(feature = "_store")]
        if let Some((store, repository, job)) = self.held
            && let Err(e) = store.release_debug_slot(&repository, job).await
        {
            tracing::warn!(job_id = %job, error = %crate::support::error_chain(&e), "could not give the repository's debug slot back; it lapses by itself");
        }
    }
}
