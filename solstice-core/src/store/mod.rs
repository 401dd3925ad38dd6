//! The job state store: SQLite (embedded default) or PostgreSQL, chosen by URL.

use std::str::FromStr;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use time::OffsetDateTime;

use crate::{JobEvent, JobEventKind, JobId, JobRequest, JobResult, JobState};

mod debug_slots;
mod lease;
mod vms;

pub use lease::{Claim, LeaseRenewal};

/// How long a query waits for a pooled connection before failing.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The URL names no backend compiled into this build.
    #[error("unsupported store URL `{0}` (expected sqlite://… or postgres://…)")]
    UnsupportedUrl(String),
    /// Connecting to the database failed.
    #[error("could not connect to the job state database")]
    Connect(#[source] sqlx::Error),
    /// Applying the schema migrations failed.
    #[error("could not apply the job state schema")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("job state query `{query}` failed")]
    Query {
        /// Which operation.
        query: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// A row held a value this version does not understand.
    #[error("job state row for {id} is corrupt: {what}")]
    Corrupt {
        /// The row's id.
        id: String,
        /// What was wrong.
        what: String,
    },
}

impl StoreError {
    /// Whether a retry may succeed (the database was unreachable or busy).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Connect(_)
                | Self::Query { source: sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed, .. }
        )
    }
}

/// One job's recorded life.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// The job.
    pub id: JobId,
    /// The source that issued it.
    pub source: String,
    /// The forge's id of it.
    pub external_id: String,
    /// Display name.
    pub name: String,
    /// The label it was routed by.
    pub route_label: String,
    /// Where it is.
    pub state: JobState,
    /// How many times an orchestrator claimed it.
    pub attempt: u32,
    /// The orchestrator that claimed it last.
    pub owner: Option<String>,
    /// When it was queued.
    pub created_at: OffsetDateTime,
    /// When its steps started.
    pub started_at: Option<OffsetDateTime>,
    /// When it ended.
    pub finished_at: Option<OffsetDateTime>,
}

/// A virtual machine recorded before it starts, so that a restarted orchestrator can
/// reap what a crashed one left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRecord {
    /// The machine id.
    pub id: String,
    /// The job it runs.
    pub job_id: JobId,
    /// The orchestrator that owns it.
    pub owner: String,
    /// The QEMU process id, once known.
    pub pid: Option<u32>,
    /// The host port of its SSH forward.
    pub ssh_port: Option<u16>,
    /// Files and directories to remove when it is reaped.
    pub files: Vec<String>,
}

/// The job state store. Cheap to clone (a connection pool inside).
///
/// Every state change is one conditional `UPDATE`, so two orchestrators racing for
/// the same job (a redelivery) cannot both claim or both finish it.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
}

/// The column list [`job_record`] reads, as a literal so queries stay static strings.
macro_rules! job_columns {
    () => {
        "SELECT id, source, external_id, name, route_label, state, result, attempt, owner, created_at, started_at, finished_at FROM jobs"
    };
}

fn now_ms() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn query_error(query: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { query, source }
}

impl Store {
    /// Opens the store at `url` and brings its schema up to date.
    ///
    /// `sqlite://PATH` (the file is created if missing), `sqlite::memory:` (one
    /// connection, gone with the store), or `postgres://USER:PASS@HOST/DB`.
    ///
    /// # Errors
    /// [`StoreError`] when the URL is unsupported, the database is unreachable or
    /// the migrations fail.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let (url, max) = if url.starts_with("sqlite:") {
            if !cfg!(feature = "sqlite") {
                return Err(StoreError::UnsupportedUrl(url.to_owned()));
            }
            if url.contains(":memory:") {
                (url.to_owned(), 1)
            } else if url.contains('?') {
                (url.to_owned(), 4)
            } else {
                (format!("{url}?mode=rwc"), 4)
            }
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            if !cfg!(feature = "postgres") {
                return Err(StoreError::UnsupportedUrl(url.to_owned()));
            }
            (url.to_owned(), 10)
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        // A query waits at most ACQUIRE_TIMEOUT for a connection: an unreachable
        // database then shows as a transient error the caller retries with backoff
        // (a claim holds its job meanwhile) instead of a call hanging half a minute.
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(&url)
            .await
            .map_err(StoreError::Connect)?;
        if url.starts_with("sqlite:") {
            // Concurrent writers wait for each other instead of failing with SQLITE_BUSY.
            sqlx::query("PRAGMA busy_timeout = 5000").execute(&pool).await.map_err(query_error("busy_timeout"))?;
        }
        sqlx::migrate!("./migrations").run(&pool).await.map_err(StoreError::Migrate)?;
        Ok(Self { pool })
    }

    /// Records a job as queued; a job already known is left as it is (redelivery).
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn record_queued(&self, job: &JobRequest) -> Result<(), StoreError> {
        let now = now_ms();
        let payload = serde_json::to_string(&job.origin).unwrap_or_default();
        sqlx::query(
            "INSERT INTO jobs (id, source, external_id, name, route_label, state, attempt, payload, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'queued', 0, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
        )
        .bind(job.id.to_string())
        .bind(job.origin.source.clone())
        .bind(job.origin.external_id.clone())
        .bind(job.name.clone())
        .bind(job.route_label().to_owned())
        .bind(payload)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(query_error("record_queued"))?;
        Ok(())
    }

    /// Claims a job for `owner`: it moves to `provisioning` and its attempt count grows.
    /// Returns the new attempt number, or `None` if the job is unknown or already
    /// finished (a redelivery of a finished job, to be acknowledged and dropped).
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn claim(&self, id: JobId, owner: &str) -> Result<Option<u32>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(query_error("claim"))?;
        let updated = sqlx::query(
            "UPDATE jobs SET state = 'provisioning', owner = $1, attempt = attempt + 1, updated_at = $2 \
             WHERE id = $3 AND state <> 'finished'",
        )
        .bind(owner.to_owned())
        .bind(now_ms())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(query_error("claim"))?;
        if updated.rows_affected() == 0 {
            tx.rollback().await.map_err(query_error("claim"))?;
            return Ok(None);
        }
        let row = sqlx::query("SELECT attempt FROM jobs WHERE id = $1")
            .bind(id.to_string())
            .fetch_one(&mut *tx)
            .await
            .map_err(query_error("claim"))?;
        tx.commit().await.map_err(query_error("claim"))?;
        let attempt: i64 = row.try_get(0).map_err(query_error("claim"))?;
        Ok(Some(u32::try_from(attempt).unwrap_or(u32::MAX)))
    }

    /// Moves a claimed job to `running`.
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn mark_running(&self, id: JobId) -> Result<(), StoreError> {
        let now = now_ms();
        sqlx::query("UPDATE jobs SET state = 'running', started_at = $1, updated_at = $2 WHERE id = $3 AND state = 'provisioning'")
            .bind(now)
            .bind(now)
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(query_error("mark_running"))?;
        Ok(())
    }

    /// Records a job's final result. Returns `false` if it had already finished, so a
    /// job is finished exactly once whatever races happen.
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn finish(&self, id: JobId, result: JobResult) -> Result<bool, StoreError> {
        let now = now_ms();
        let updated = sqlx::query(
            "UPDATE jobs SET state = 'finished', result = $1, finished_at = $2, updated_at = $3 WHERE id = $4 AND state <> 'finished'",
        )
        .bind(result.as_str().to_owned())
        .bind(now)
        .bind(now)
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(query_error("finish"))?;
        Ok(updated.rows_affected() == 1)
    }

    /// Records a job's final result together with its `JobFinished` event, which
    /// [`Store::final_event`] gives back to whoever sees the job redelivered. Returns
    /// `false` if the job had already finished. An event of another kind is recorded
    /// as a failure.
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn finish_with_event(&self, event: &JobEvent) -> Result<bool, StoreError> {
        let (result, text) = final_columns(event);
        let now = now_ms();
        let updated = sqlx::query(
            "UPDATE jobs SET state = 'finished', result = $1, final_event = $2, finished_at = $3, updated_at = $4 \
             WHERE id = $5 AND state <> 'finished'",
        )
        .bind(result.as_str().to_owned())
        .bind(text)
        .bind(now)
        .bind(now)
        .bind(event.job_id.to_string())
        .execute(&self.pool)
        .await
        .map_err(query_error("finish_with_event"))?;
        Ok(updated.rows_affected() == 1)
    }

    /// The `JobFinished` event recorded with [`Store::finish_with_event`], if any.
    ///
    /// # Errors
    /// [`StoreError`]; a stored event this version cannot read is [`StoreError::Corrupt`].
    pub async fn final_event(&self, id: JobId) -> Result<Option<JobEvent>, StoreError> {
        let row = sqlx::query("SELECT final_event FROM jobs WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error("final_event"))?;
        let Some(row) = row else { return Ok(None) };
        let text: Option<String> = row.try_get(0).map_err(query_error("final_event"))?;
        text.map(|t| serde_json::from_str(&t).map_err(|e| StoreError::Corrupt { id: id.to_string(), what: e.to_string() }))
            .transpose()
    }

    /// The record of one job.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn job(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        let row = sqlx::query(concat!(job_columns!(), " WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error("job"))?;
        row.map(|row| job_record(&row)).transpose()
    }

    /// Jobs in a state (by its name: `queued`, `provisioning`, `running`, `finished`),
    /// oldest first, at most `limit`.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn jobs_in_state(&self, state: &str, limit: i64) -> Result<Vec<JobRecord>, StoreError> {
        let rows = sqlx::query(concat!(job_columns!(), " WHERE state = $1 ORDER BY created_at LIMIT $2"))
            .bind(state.to_owned())
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("jobs_in_state"))?;
        rows.iter().map(job_record).collect()
    }

}



/// The `result` and `final_event` columns of a job finished by `event`: its result
/// (a failure for an event of another kind) and the event as JSON.
pub(super) fn final_columns(event: &JobEvent) -> (JobResult, String) {
    let result = match event.kind {
        JobEventKind::JobFinished { result } => result,
        _ => JobResult::Failure,
    };
    (result, serde_json::to_string(event).unwrap_or_default())
}

fn job_record(row: &AnyRow) -> Result<JobRecord, StoreError> {
    let get = query_error("job row");
    let id: String = row.try_get(0).map_err(get)?;
    let corrupt = |what: String| StoreError::Corrupt { id: id.clone(), what };
    let state: String = row.try_get(5).map_err(query_error("job row"))?;
    let result: Option<String> = row.try_get(6).map_err(query_error("job row"))?;
    let state = match (state.as_str(), result.as_deref()) {
        ("queued", _) => JobState::Queued,
        ("provisioning", _) => JobState::Provisioning,
        ("running", _) => JobState::Running,
        ("finished", Some(r)) => JobState::Finished(parse_result(r).ok_or_else(|| corrupt(format!("result `{r}`")))?),
        (other, _) => return Err(corrupt(format!("state `{other}`"))),
    };
    let attempt: i64 = row.try_get(7).map_err(query_error("job row"))?;
    let started: Option<i64> = row.try_get(10).map_err(query_error("job row"))?;
    let finished: Option<i64> = row.try_get(11).map_err(query_error("job row"))?;
    Ok(JobRecord {
        id: JobId::from_str(&id).map_err(|e| corrupt(e.to_string()))?,
        source: row.try_get(1).map_err(query_error("job row"))?,
        external_id: row.try_get(2).map_err(query_error("job row"))?,
        name: row.try_get(3).map_err(query_error("job row"))?,
        route_label: row.try_get(4).map_err(query_error("job row"))?,
        state,
        attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
        owner: row.try_get(8).map_err(query_error("job row"))?,
        created_at: from_ms(row.try_get(9).map_err(query_error("job row"))?),
        started_at: started.map(from_ms),
        finished_at: finished.map(from_ms),
    })
}

fn parse_result(text: &str) -> Option<JobResult> {
    [JobResult::Success, JobResult::Failure, JobResult::Cancelled, JobResult::Skipped]
        .into_iter()
        .find(|r| r.as_str() == text)
}
