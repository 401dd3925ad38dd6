//! Crash recovery: a record of every job in flight, kept next to the runner's
//! credential files, so a runner that died between acquiring a job and completing it
//! completes the job as failed, with a log saying why, when it starts again (GitHub
//! would otherwise show the job in progress and keep the runner's slot).
//!
//! A record holds only ids and URLs — never the job message or a token. The job's own
//! token died with the process, so the completion goes out with the runner's OAuth
//! token: on the classic path the timeline, the job log and the `JobCompleted` event
//! (as github-act-runner does with "the runner's own connection"), falling back to
//! finishing the job request on the pool; on the broker path `completejob`, which the
//! run service may refuse without the job token (then the record is dropped with an
//! error: GitHub fails the job itself once its lock lapses).

use std::path::{Path, PathBuf};

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::GithubError;
use crate::http::{Auth, Call, RunnerAuth, with_auth};
use crate::json::{i64_field, join_url};
use crate::protocol::job::JobMessage;
use crate::protocol::location::{Locations, ids};
use crate::report::vss_time;
use crate::store::{RunnerSettings, write_private};

/// The message the recovered job's log and annotation carry.
pub(crate) const RESTART_MESSAGE: &str = "The runner stopped while this job was running (its process was killed, crashed, or \
     the machine restarted), so the job's steps did not finish. The runner completed the job as failed when it started again.";

const PREFIX: &str = ".job-";
const SUFFIX: &str = ".json";

/// What is kept about a job in flight: enough to complete it, nothing secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobRecord {
    /// Reported through the run and results services (else the classic tenant routes).
    pub broker: bool,
    pub job_id: String,
    pub job_name: String,
    pub plan_id: String,
    pub plan_type: String,
    pub scope_identifier: String,
    pub timeline_id: String,
    pub request_id: i64,
    /// `SystemVssConnection.url`: the tenant (classic) or the run service (broker).
    pub endpoint_url: String,
    pub billing_owner_id: Option<String>,
    /// When the job was acquired (informational).
    pub acquired_at: String,
}

impl JobRecord {
    pub fn of(msg: &JobMessage) -> Self {
        Self {
            broker: msg.is_v2(),
            job_id: msg.job_id.clone(),
            job_name: if msg.job_display_name.is_empty() { msg.job_name.clone() } else { msg.job_display_name.clone() },
            plan_id: msg.plan_id.clone(),
            plan_type: msg.plan_type.clone(),
            scope_identifier: msg.scope_identifier.clone(),
            timeline_id: msg.timeline_id.clone(),
            request_id: msg.request_id,
            endpoint_url: msg.endpoint.url.clone(),
            billing_owner_id: msg.billing_owner_id.clone(),
            acquired_at: vss_time(time::OffsetDateTime::now_utc()),
        }
    }
}

/// The directory of job records (the runner's directory).
#[derive(Debug, Clone)]
pub(crate) struct Journal {
    dir: PathBuf,
}

impl Journal {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn path(&self, job_id: &str) -> PathBuf {
        // Job ids are GUIDs; anything else is kept out of the file name.
        let safe: String = job_id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
        self.dir.join(format!("{PREFIX}{safe}{SUFFIX}"))
    }

    /// Writes a job's record (mode 0600).
    pub fn save(&self, record: &JobRecord) -> Result<(), GithubError> {
        let text = serde_json::to_vec_pretty(record).map_err(|e| GithubError::Config(e.to_string()))?;
        std::fs::create_dir_all(&self.dir).map_err(|e| GithubError::io(&self.dir, e))?;
        write_private(&self.path(&record.job_id), &text)
    }

    /// Deletes a job's record (a missing one is fine).
    pub fn remove(&self, job_id: &str) {
        let path = self.path(job_id);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "could not delete a job record");
        }
    }

    /// Every record left behind; unreadable ones are reported and skipped.
    pub fn load_all(&self) -> Vec<JobRecord> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with(PREFIX) || !name.ends_with(SUFFIX) {
                continue;
            }
            match std::fs::read(entry.path()).map(|b| serde_json::from_slice::<JobRecord>(&b)) {
                Ok(Ok(record)) => out.push(record),
                _ => tracing::warn!(path = %entry.path().display(), "ignoring an unreadable job record"),
            }
        }
        out
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Completes a job a previous process of this runner left unfinished, as failed.
pub(crate) async fn complete_abandoned(auth: &RunnerAuth, settings: &RunnerSettings, record: &JobRecord) -> Result<(), GithubError> {
    if record.broker {
        let body = json!({
            "planId": record.plan_id,
            "jobId": record.job_id,
            "conclusion": "failed",
            "outputs": {},
            "stepResults": [],
            "annotations": [{"level": "failure", "message": RESTART_MESSAGE, "isInfrastructureIssue": true}],
            "telemetry": [],
            "environmentUrl": null,
            "billingOwnerId": record.billing_owner_id,
            "infrastructureFailureCategory": null,
        });
        let call = Call::new(Method::POST, join_url(&record.endpoint_url, "completejob"), "run service").json(body);
        return auth.send(&call).await.map(|_| ());
    }
    match complete_classic(auth, record).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_transient() => Err(e),
        Err(e) => {
            // The plan refused the runner's token: finish the job request on the pool,
            // which takes it (as for services older than plan version 8).
            tracing::warn!(github_job = %record.job_id, error = %e, "could not complete the job on its plan; finishing the job request");
            let locations = Locations::fetch(auth.http(), &settings.server_url, &Auth::None).await?;
            let url = locations.url(
                ids::JOB_REQUESTS,
                &[("poolId", &settings.pool_id.to_string()), ("requestId", &record.request_id.to_string())],
            );
            let call = Call::new(Method::PATCH, url, "tenant")
                .api("5.1-preview.1")
                .query("lockToken", "00000000-0000-0000-0000-000000000000")
                .json(json!({"requestId": record.request_id, "result": "failed", "finishTime": vss_time(time::OffsetDateTime::now_utc())}));
            auth.send(&call).await.map(|_| ())
        }
    }
}

/// Classic: a job log with the reason, the job record completed as failed with an error
/// issue, then `JobCompleted`.
async fn complete_classic(auth: &RunnerAuth, record: &JobRecord) -> Result<(), GithubError> {
    const SERVICE: &str = "timeline service";
    let locations = Locations::fetch(auth.http(), &record.endpoint_url, &Auth::None).await?;
    let values = [
        ("scopeIdentifier", record.scope_identifier.as_str()),
        ("hubName", record.plan_type.as_str()),
        ("planId", record.plan_id.as_str()),
        ("timelineId", record.timeline_id.as_str()),
    ];
    let now = vss_time(time::OffsetDateTime::now_utc());
    let create = Call::new(Method::POST, locations.url(ids::LOGS, &values), SERVICE)
        .api("5.1-preview.1")
        .json(json!({"path": format!("logs\\{}", record.job_id), "createdOn": now, "lastChangedOn": now}));
    let log = auth.send(&create).await?;
    let log_id = log
        .as_ref()
        .and_then(|l| i64_field(l, "id"))
        .ok_or(GithubError::Protocol { service: SERVICE, what: "a log without an id".to_owned() })?;
    let mut with_log: Vec<(&str, &str)> = values.to_vec();
    let log_text = log_id.to_string();
    with_log.push(("logId", &log_text));
    let text = format!("{now} ##[error]{RESTART_MESSAGE}\n");
    let token = auth.token().await?;
    let upload = with_auth(auth.http().raw().post(locations.url(ids::LOGS, &with_log)), &Auth::Bearer(token))
        .header(reqwest::header::ACCEPT, "application/json; api-version=5.1-preview.1")
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(text);
    auth.http().execute(upload, SERVICE).await?;
    let job_record = json!({
        "id": record.job_id, "type": "Job", "name": record.job_name, "state": "completed", "result": "failed",
        "finishTime": now, "percentComplete": 100, "log": {"id": log_id}, "errorCount": 1,
        "issues": [{"type": "error", "category": "General", "message": RESTART_MESSAGE, "isInfrastructureIssue": true}],
    });
    let patch = Call::new(Method::PATCH, locations.url(ids::RECORDS, &values), SERVICE)
        .api("5.1-preview.1")
        .json(json!({"count": 1, "value": [job_record]}));
    auth.send(&patch).await?;
    let event = Call::new(Method::POST, locations.url(ids::EVENTS, &values), SERVICE).api("2.0-preview.1").json(json!({
        "name": "JobCompleted", "jobId": record.job_id, "requestId": record.request_id, "result": "failed", "outputs": {},
    }));
    auth.send(&event).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_mode_0600_and_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::new(dir.path());
        let record = JobRecord {
            broker: false,
            job_id: "b0000000-0000-0000-0000-000000000002".into(),
            job_name: "build".into(),
            plan_id: "p".into(),
            plan_type: "actions".into(),
            scope_identifier: "s".into(),
            timeline_id: "t".into(),
            request_id: 7,
            endpoint_url: "http://h/tenant/".into(),
            billing_owner_id: None,
            acquired_at: "now".into(),
        };
        journal.save(&record).expect("save");
        std::fs::write(dir.path().join(".runner"), "{}").expect("other file");
        assert_eq!(journal.load_all(), std::slice::from_ref(&record));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(journal.path(&record.job_id)).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        journal.remove(&record.job_id);
        assert!(journal.load_all().is_empty());
        assert!(journal.path("../../etc/x").starts_with(dir.path()));
    }
}
