//! Machines outliving their orchestrator: written down before they start, reaped when
//! a restarted orchestrator finds them.

use std::sync::Mutex;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{Engine, EngineError};
use crate::{
    JobEvent, JobEventKind, JobId, JobQueue, JobResult, JobState, LogStream, MachineFootprint, MachineJournal, Store,
    VmRecord,
};
use crate::support::error_chain;

/// Writes a job's machine to the state store.
pub(crate) struct StoreJournal<'a> {
    store: &'a Store,
    job_id: JobId,
    owner: &'a str,
    /// The machine recorded, if any: most machines (the host's) record nothing, and
    /// then destroying them costs no store round trip.
    recorded: Mutex<Option<String>>,
}

impl<'a> StoreJournal<'a> {
    pub(crate) fn new(store: &'a Store, job_id: JobId, owner: &'a str) -> Self {
        Self { store, job_id, owner, recorded: Mutex::new(None) }
    }

    /// Forgets the recorded machine once it is destroyed (or failed to start, which
    /// leaves nothing behind either).
    pub(crate) async fn forget(&self) {
        let recorded = self.recorded.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(machine_id) = recorded else { return };
        if let Err(e) = self.store.remove_vm(&machine_id).await {
            // The record outlives the machine; a restart finds nothing to reap and forgets it.
            tracing::warn!(machine = %machine_id, error = %error_chain(&e), "could not forget a destroyed machine");
        }
    }

    /// [`forget`](Self::forget) for later, by whoever destroys the machine then (the
    /// debug keeper): the record must outlive this journal, which borrows the engine,
    /// so that a crash while the machine is kept still leaves it to be reaped.
    pub(crate) fn forget_later(&self) -> Option<super::debug::OnDestroyed> {
        let machine_id = self.recorded.lock().unwrap_or_else(|p| p.into_inner()).take()?;
        let store = self.store.clone();
        Some(Box::pin(async move {
            if let Err(e) = store.remove_vm(&machine_id).await {
                tracing::warn!(machine = %machine_id, error = %error_chain(&e), "could not forget a destroyed machine");
            }
        }))
    }
}

#[async_trait]
impl MachineJournal for StoreJournal<'_> {
    async fn record(&self, footprint: &MachineFootprint) {
        *self.recorded.lock().unwrap_or_else(|p| p.into_inner()) = Some(footprint.machine_id.clone());
        let record = VmRecord::from_footprint(footprint, self.job_id, self.owner);
        if let Err(e) = self.store.record_vm(&record).await {
            // Not fatal for the job: it only weakens crash clean-up, so say so loudly.
            tracing::error!(machine = %footprint.machine_id, error = %error_chain(&e), "could not record a machine; it will not be reaped after a crash");
        }
    }
}

/// A machine found and removed by [`Engine::reap_orphans`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReapedMachine {
    /// The machine's record as the crashed orchestrator left it.
    pub record: VmRecord,
    /// The job was still this orchestrator's and unfinished, and is now reported failed.
    pub job_failed: bool,
}

/// The sequence number of events written for an attempt by someone other than the
/// engine that ran it (the reaper): high enough to follow whatever that engine sent.
const REAPER_SEQ: u64 = u64::MAX - 16;

impl Engine {
    /// Finds the machines this engine's name left in the store (a previous run of this
    /// orchestrator that crashed), stops their processes, removes their files and
    /// forgets them. A job of such a machine that no other orchestrator took over is
    /// finished as a failure with a log line that says why, recorded in the store and,
    /// given a queue, reported to its source.
    ///
    /// Call it once at start-up, before serving: machines of the running engine would
    /// be reaped too.
    ///
    /// # Errors
    /// [`EngineError::Missing`] without a store; [`EngineError::Store`] when the
    /// records cannot be read. A machine that cannot be removed is logged and kept in
    /// the store for the next attempt.
    pub async fn reap_orphans(&self, queue: Option<&dyn JobQueue>) -> Result<Vec<ReapedMachine>, EngineError> {
        let store = self.inner.store.as_ref().ok_or(EngineError::Missing("state store"))?;
        let mut reaped = Vec::new();
        for record in store.vms_of(&self.inner.name).await? {
            if let Err(e) = self.inner.hypervisor.reap(&record.footprint()).await {
                tracing::error!(machine = %record.id, error = %error_chain(&e), "could not reap an orphaned machine");
                continue;
            }
            store.remove_vm(&record.id).await?;
            self.inner.metrics.machine_reaped();
            let job_failed = self.fail_orphaned_job(store, queue, &record).await?;
            tracing::warn!(machine = %record.id, job_id = %record.job_id, job_failed, "reaped a machine left by a previous run");
            reaped.push(ReapedMachine { record, job_failed });
        }
        Ok(reaped)
    }

    async fn fail_orphaned_job(
        &self,
        store: &Store,
        queue: Option<&dyn JobQueue>,
        record: &VmRecord,
    ) -> Result<bool, EngineError> {
        let Some(job) = store.job(record.job_id).await? else { return Ok(false) };
        let ours = job.owner.as_deref() == Some(self.inner.name.as_str());
        if !ours || matches!(job.state, JobState::Finished(_) | JobState::Queued) {
            // Finished already, or taken over by another orchestrator after a redelivery.
            return Ok(false);
        }
        let event = |seq: u64, kind: JobEventKind| JobEvent {
            job_id: job.id,
            attempt: job.attempt,
            seq,
            at: OffsetDateTime::now_utc(),
            kind,
        };
        let line = event(
            REAPER_SEQ,
            JobEventKind::Log {
                step: None,
                stream: LogStream::System,
                line: format!(
                    "##[error]The orchestrator `{}` stopped unexpectedly while this job ran; its machine {} was removed when it restarted.",
                    self.inner.name, record.id
                ),
            },
        );
        let finished = event(REAPER_SEQ + 1, JobEventKind::JobFinished { result: JobResult::Failure });
        if !store.finish_with_event(&finished).await? {
            return Ok(false);
        }
        if let Some(queue) = queue {
            for event in [&line, &finished] {
                // The store holds the final event, and a redelivery of the job resends
                // it; so a failure here loses nothing but the explanatory line.
                if let Err(e) = queue.publish_event(&job.source, event).await {
                    tracing::warn!(job_id = %job.id, error = %error_chain(&e), "could not report a reaped job now; its redelivery will");
                }
            }
        }
        Ok(true)
    }
}
