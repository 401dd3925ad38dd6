//! The one machine a repository may keep for debug SSH, counted across every
//! orchestrator that shares the store (each one's `DebugKeeper` only sees its own).
//!
//! A slot is held until a deadline (the kept machine's time to live plus a margin),
//! not until someone remembers to give it back: a slot whose orchestrator died frees
//! itself.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Row;

use super::{Store, StoreError, now_ms, query_error};
use crate::JobId;

impl Store {
    /// Claims `repository`'s debug slot for `job` (kept by orchestrator `owner`) for
    /// `hold` from now. Returns `None` when the slot is `job`'s now, or the job that
    /// holds it under a live claim.
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn claim_debug_slot(
        &self,
        repository: &str,
        job: JobId,
        owner: &str,
        hold: Duration,
    ) -> Result<Option<JobId>, StoreError> {
        let now = now_ms();
        let until = now.saturating_add(i64::try_from(hold.as_millis()).unwrap_or(i64::MAX / 2));
        // One statement, so two orchestrators racing for a free slot cannot both win.
        let claimed = sqlx::query(
            "INSERT INTO debug_slots (repository, job_id, owner, until_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (repository) DO UPDATE SET job_id = excluded.job_id, owner = excluded.owner, \
             until_ms = excluded.until_ms WHERE debug_slots.until_ms < $5 OR debug_slots.job_id = excluded.job_id",
        )
        .bind(repository.to_owned())
        .bind(job.to_string())
        .bind(owner.to_owned())
        .bind(until)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(query_error("claim_debug_slot"))?;
        if claimed.rows_affected() == 1 {
            return Ok(None);
        }
        let row = sqlx::query("SELECT job_id FROM debug_slots WHERE repository = $1")
            .bind(repository.to_owned())
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error("claim_debug_slot"))?;
        let holder: Option<String> = row.map(|r| r.try_get(0)).transpose().map_err(query_error("claim_debug_slot"))?;
        // Unreadable, or freed in between: still declined (the caller may try again
        // later), naming no job (the nil id).
        Ok(Some(holder.and_then(|id| JobId::from_str(&id).ok()).unwrap_or(JobId(uuid::Uuid::nil()))))
    }

    /// Gives `repository`'s debug slot back, if `job` holds it.
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn release_debug_slot(&self, repository: &str, job: JobId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM debug_slots WHERE repository = $1 AND job_id = $2")
            .bind(repository.to_owned())
            .bind(job.to_string())
            .execute(&self.pool)
            .await
            .map_err(query_error("release_debug_slot"))?;
        Ok(())
    }
}
