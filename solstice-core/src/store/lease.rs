//! Claim leases: a claimed job belongs to one engine instance for as long as that
//! instance renews its lease, so that a redelivered copy of a running job (its
//! orchestrator's connection dropped, not the orchestrator) is held instead of run a
//! second time, while a job whose orchestrator died is taken over once the lease
//! expires.
//!
//! Lease times are the orchestrators' wall clocks (Unix milliseconds), so their
//! clocks must agree to well within a lease (NTP does).

use std::time::Duration;

use sqlx::Row;
use time::OffsetDateTime;

use super::{Store, StoreError, final_columns, from_ms, now_ms, query_error};
use crate::{JobEvent, JobId};

/// What [`Store::renew_lease`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseRenewal {
    /// The holder still runs the job; its lease was extended.
    Renewed,
    /// The holder itself recorded the job's end: there is nothing left to renew, and
    /// the job is still the holder's to report.
    Finished,
    /// The job is no longer the holder's (another instance took it over after the
    /// lease expired, or the job is unknown): the holder must stop running it and
    /// report nothing more.
    Lost,
}

/// What [`Store::claim_leased`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Claim {
    /// The job is claimed: run it as this attempt, and renew the lease while it runs.
    Claimed {
        /// The attempt number (1 for the first claim).
        attempt: u32,
    },
    /// Another engine instance holds a live lease: the job runs there. Wait, and ask
    /// again; the lease expires if its holder stops renewing it.
    Held {
        /// The orchestrator that runs it.
        owner: String,
        /// When its lease ends unless renewed.
        until: OffsetDateTime,
    },
    /// The job finished already, or is not recorded at all: do not run it.
    Finished,
}

fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2)
}

impl Store {
    /// Claims a job for the engine instance `holder` (of orchestrator `owner`) with a
    /// lease of `lease`: it moves to `provisioning` and its attempt count grows,
    /// unless it finished or another holder's lease on it is still live.
    ///
    /// # Errors
    /// [`StoreError::Query`]; [`StoreError::is_transient`] tells whether a retry may
    /// succeed.
    pub async fn claim_leased(&self, id: JobId, owner: &str, holder: &str, lease: Duration) -> Result<Claim, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(query_error("claim_leased"))?;
        // A live lease, even our own, blocks a second run: the running holder settles
        // its redeliveries itself, and a lease it stopped renewing expires.
        let updated = sqlx::query(
            "UPDATE jobs SET state = 'provisioning', owner = $1, lease_holder = $2, lease_until = $3, \
             attempt = attempt + 1, updated_at = $4 \
             WHERE id = $5 AND state <> 'finished' AND (lease_until IS NULL OR lease_until < $6)",
        )
        .bind(owner.to_owned())
        .bind(holder.to_owned())
        .bind(now.saturating_add(lease_ms(lease)))
        .bind(now)
        .bind(id.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(query_error("claim_leased"))?;
        let row = sqlx::query("SELECT state, attempt, owner, lease_until FROM jobs WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(query_error("claim_leased"))?;
        tx.commit().await.map_err(query_error("claim_leased"))?;
        let Some(row) = row else { return Ok(Claim::Finished) };
        let state: String = row.try_get(0).map_err(query_error("claim_leased"))?;
        if updated.rows_affected() == 1 {
            let attempt: i64 = row.try_get(1).map_err(query_error("claim_leased"))?;
            return Ok(Claim::Claimed { attempt: u32::try_from(attempt).unwrap_or(u32::MAX) });
        }
        if state == "finished" {
            return Ok(Claim::Finished);
        }
        let owner: Option<String> = row.try_get(2).map_err(query_error("claim_leased"))?;
        let until: Option<i64> = row.try_get(3).map_err(query_error("claim_leased"))?;
        Ok(Claim::Held { owner: owner.unwrap_or_default(), until: from_ms(until.unwrap_or(now)) })
    }

    /// Extends `holder`'s lease on a job to `lease` from now; see [`LeaseRenewal`] for
    /// what else it may find.
    ///
    /// A renewal can race the holder's own end of the job (the final state is recorded
    /// while the last events are still being delivered): that is
    /// [`LeaseRenewal::Finished`], not a loss, so the holder goes on reporting.
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn renew_lease(
        &self,
        id: JobId,
        holder: &str,
        lease: Duration,
    ) -> Result<LeaseRenewal, StoreError> {
        let now = now_ms();
        let updated = sqlx::query(
            "UPDATE jobs SET lease_until = $1, updated_at = $2 WHERE id = $3 AND lease_holder = $4 AND state <> 'finished'",
        )
        .bind(now.saturating_add(lease_ms(lease)))
        .bind(now)
        .bind(id.to_string())
        .bind(holder.to_owned())
        .execute(&self.pool)
        .await
        .map_err(query_error("renew_lease"))?;
        if updated.rows_affected() == 1 {
            return Ok(LeaseRenewal::Renewed);
        }
        // Only the holder of the lease can finish a leased job (`finish_leased`), and a
        // finished job is never claimed again: finished under this holder means by it.
        let finished_here = sqlx::query(
            "SELECT 1 FROM jobs WHERE id = $1 AND lease_holder = $2 AND state = 'finished'",
        )
        .bind(id.to_string())
        .bind(holder.to_owned())
        .fetch_optional(&self.pool)
        .await
        .map_err(query_error("renew_lease"))?;
        Ok(if finished_here.is_some() {
            LeaseRenewal::Finished
        } else {
            LeaseRenewal::Lost
        })
    }

    /// As [`Store::finish_with_event`], but only while `holder` holds the job: an
    /// instance whose lease was taken over cannot record a result for the new owner's
    /// attempt. Returns `false` if the job finished already or belongs to another
    /// holder.
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn finish_leased(&self, event: &JobEvent, holder: &str) -> Result<bool, StoreError> {
        let (result, text) = final_columns(event);
        let now = now_ms();
        let updated = sqlx::query(
            "UPDATE jobs SET state = 'finished', result = $1, final_event = $2, finished_at = $3, updated_at = $4, \
             lease_until = NULL WHERE id = $5 AND state <> 'finished' AND lease_holder = $6",
        )
        .bind(result.as_str().to_owned())
        .bind(text)
        .bind(now)
        .bind(now)
        .bind(event.job_id.to_string())
        .bind(holder.to_owned())
        .execute(&self.pool)
        .await
        .map_err(query_error("finish_leased"))?;
        Ok(updated.rows_affected() == 1)
    }
}
