//! Broker-path reporting: the results service (step states, log blobs) and
//! `completejob` on the run service.

use reqwest::Method;
use serde_json::{Value, json};
use solstice_core::JobResult;

use super::timeline::log_text;
use super::{Flavor, JobReport, RecordState, results_time, task_result};
use crate::GithubError;
use crate::http::{Auth, Call};
use crate::json::{bool_field, join_url, str_field};

const RESULTS: &str = "results service";
const RUN: &str = "run service";

/// The results service's step conclusion codes.
fn conclusion_code(result: JobResult) -> u8 {
    match result {
        JobResult::Success => 2,
        JobResult::Failure => 3,
        JobResult::Cancelled => 4,
        JobResult::Skipped => 7,
    }
}

impl JobReport {
    fn results_base(&self) -> Option<String> {
        self.msg.endpoint.results_url.clone()
    }

    fn ids(&self) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert("workflow_run_backend_id".into(), json!(self.msg.plan_id));
        m.insert("workflow_job_run_backend_id".into(), json!(self.msg.job_id));
        m
    }

    async fn twirp(&self, method: &str, body: Value) -> Result<Value, GithubError> {
        let base = self.results_base().unwrap_or_default();
        let call = Call::new(Method::POST, join_url(&base, &format!("twirp/{method}")), RESULTS).json(body);
        self.http
            .send(&call, &Auth::Bearer(self.msg.endpoint.token.clone()))
            .await?
            .ok_or(GithubError::Protocol { service: RESULTS, what: "an empty answer".to_owned() })
    }

    pub(super) async fn broker_sync(&mut self) -> Result<(), GithubError> {
        if self.results_base().is_none() {
            return Ok(());
        }
        let steps: Vec<Value> = self
            .records
            .iter()
            .map(|r| {
                let mut step = json!({
                    "external_id": r.id,
                    "number": r.order,
                    "name": r.name,
                    "status": match r.state { RecordState::Pending => 5, RecordState::InProgress => 3, RecordState::Completed => 6 },
                });
                if let Some(t) = r.started {
                    step["started_at"] = json!(results_time(t));
                }
                if let Some(t) = r.finished {
                    step["completed_at"] = json!(results_time(t));
                }
                if let Some(result) = r.result {
                    step["conclusion"] = json!(conclusion_code(result));
                }
                step
            })
            .collect();
        let order = match &mut self.flavor {
            Flavor::Broker { change_order, .. } => {
                *change_order += 1;
                *change_order
            }
            Flavor::Classic { .. } => 1,
        };
        let mut body = self.ids();
        body.insert("steps".into(), json!(steps));
        body.insert("change_order".into(), json!(order));
        let reply = self.twirp("github.actions.results.api.v1.WorkflowStepUpdateService/WorkflowStepsUpdate", Value::Object(body)).await?;
        if bool_field(&reply, "ok") != Some(true) {
            return Err(GithubError::Protocol { service: RESULTS, what: "step update not ok".to_owned() });
        }
        Ok(())
    }

    /// Gets a signed URL, uploads `text` as a block blob, and records its metadata.
    async fn upload_blob(&self, kind: &str, step: Option<&str>, text: String, lines: usize) -> Result<(), GithubError> {
        let mut body = self.ids();
        if let Some(step) = step {
            body.insert("step_backend_id".into(), json!(step));
        }
        let signed = self.twirp(&format!("results.services.receiver.Receiver/Get{kind}LogsSignedBlobURL"), Value::Object(body.clone())).await?;
        let url = str_field(&signed, "logs_url")
            .filter(|u| !u.is_empty())
            .ok_or(GithubError::Protocol { service: RESULTS, what: "no signed log URL".to_owned() })?;
        let azure = str_field(&signed, "blob_storage_type").is_some_and(|t| t.eq_ignore_ascii_case("BLOB_STORAGE_TYPE_AZURE"));
        // The URL is pre-signed: no Authorization header.
        let mut request = self.http.raw().put(&url).header(reqwest::header::CONTENT_TYPE, "text/plain").body(text);
        if azure {
            request = request.header("x-ms-blob-type", "BlockBlob");
        }
        self.http.execute(request, "blob storage").await?;
        body.insert("uploaded_at".into(), json!(results_time(time::OffsetDateTime::now_utc())));
        body.insert("line_count".into(), json!(lines));
        let reply = self.twirp(&format!("results.services.receiver.Receiver/Create{kind}LogsMetadata"), Value::Object(body)).await?;
        if bool_field(&reply, "ok") != Some(true) {
            return Err(GithubError::Protocol { service: RESULTS, what: "log metadata not ok".to_owned() });
        }
        Ok(())
    }

    pub(super) async fn broker_upload_log(&mut self, index: usize) -> Result<(), GithubError> {
        if self.results_base().is_none() || self.records[index].lines.is_empty() {
            return Ok(());
        }
        // GitHub wants a step announced before its log arrives.
        self.broker_sync().await?;
        let record = &self.records[index];
        self.upload_blob("Step", Some(&record.id), log_text(&record.lines), record.lines.len()).await
    }

    pub(super) async fn broker_finish(&mut self, result: JobResult, outputs: &Value) -> Result<(), GithubError> {
        if let Flavor::Broker { job_log_uploaded: false, .. } = self.flavor
            && self.results_base().is_some()
        {
            let lines: Vec<String> = self.records.iter().flat_map(|r| r.lines.iter().cloned()).collect();
            if !lines.is_empty() {
                self.upload_blob("Job", None, log_text(&lines), lines.len()).await?;
            }
            if let Flavor::Broker { job_log_uploaded, .. } = &mut self.flavor {
                *job_log_uploaded = true;
            }
        }
        let step_results: Vec<Value> = self
            .records
            .iter()
            .map(|r| {
                json!({
                    "external_id": r.id,
                    "number": r.order,
                    "name": r.name,
                    "type": r.kind,
                    "status": "completed",
                    "conclusion": task_result(r.result.unwrap_or(JobResult::Skipped)),
                    "started_at": r.started.map(results_time),
                    "completed_at": r.finished.map(results_time),
                    "completed_log_url": null,
                    "completed_log_lines": r.lines.len(),
                    "annotations": r.annotations.iter().map(|a| a.run_annotation(r.order)).collect::<Vec<_>>(),
                })
            })
            .collect();
        let body = json!({
            "planId": self.msg.plan_id,
            "jobId": self.msg.job_id,
            "conclusion": task_result(result),
            "outputs": outputs,
            "stepResults": step_results,
            // The job's list too (the official runner collects every step's annotations
            // for the job).
            "annotations": self.annotations().map(|(order, a)| a.run_annotation(order)).collect::<Vec<_>>(),
            "telemetry": [],
            "environmentUrl": null,
            "billingOwnerId": self.msg.billing_owner_id,
            "infrastructureFailureCategory": null,
        });
        let call = Call::new(Method::POST, join_url(&self.msg.endpoint.url, "completejob"), RUN).json(body);
        self.http.send(&call, &Auth::Bearer(self.msg.endpoint.token.clone())).await?;
        Ok(())
    }
}
