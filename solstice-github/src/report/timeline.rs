//! Classic reporting: timeline records, the console feed, log uploads, `JobCompleted`.

use reqwest::Method;
use serde_json::{Value, json};
use solstice_core::JobResult;

use solstice_core::AnnotationLevel as Level;
use super::{Flavor, JobReport, RecordState, task_result, vss_time};
use crate::GithubError;
use crate::http::{Auth, Call};
use crate::json::i64_field;
use crate::protocol::location::{Locations, ids};

const SERVICE: &str = "timeline service";

impl JobReport {
    fn auth(&self) -> Auth {
        Auth::Bearer(self.msg.endpoint.token.clone())
    }

    async fn locations(&mut self) -> Result<Locations, GithubError> {
        if let Flavor::Classic { locations: Some(l), .. } = &self.flavor {
            return Ok(l.clone());
        }
        let fetched = Locations::fetch(&self.http, &self.msg.endpoint.url, &Auth::None).await?;
        if let Flavor::Classic { locations, .. } = &mut self.flavor {
            *locations = Some(fetched.clone());
        }
        Ok(fetched)
    }

    fn plan_values(&self) -> Vec<(&'static str, String)> {
        vec![
            ("scopeIdentifier", self.msg.scope_identifier.clone()),
            ("hubName", self.msg.plan_type.clone()),
            ("planId", self.msg.plan_id.clone()),
            ("timelineId", self.msg.timeline_id.clone()),
        ]
    }

    fn url(&self, locations: &Locations, id: &str, extra: &[(&'static str, String)]) -> String {
        let mut values = self.plan_values();
        values.extend(extra.iter().cloned());
        let refs: Vec<(&str, &str)> = values.iter().map(|(k, v)| (*k, v.as_str())).collect();
        locations.url(id, &refs)
    }

    fn job_record(&self, result: Option<JobResult>) -> Value {
        let started = self.records[0].started.map(vss_time);
        let mut record = json!({
            "id": self.msg.job_id,
            "type": "Job",
            "name": if self.msg.job_display_name.is_empty() { &self.msg.job_name } else { &self.msg.job_display_name },
            "refName": self.msg.job_name,
            "state": if result.is_some() { "completed" } else { "inProgress" },
            "startTime": started,
            "workerName": self.runner_name,
            "agentPlatform": "Linux",
        });
        if let Some(result) = result {
            record["result"] = json!(task_result(result));
            record["finishTime"] = json!(vss_time(time::OffsetDateTime::now_utc()));
            record["percentComplete"] = json!(100);
        }
        if let Flavor::Classic { job_log_id: Some(id), .. } = &self.flavor {
            record["log"] = json!({"id": id});
        }
        record
    }

    fn step_records(&self) -> Vec<Value> {
        self.records
            .iter()
            .map(|r| {
                let count = |level| r.annotations.iter().filter(|a| a.reported.level == level).count();
                json!({
                    "issues": r.annotations.iter().map(|a| a.issue()).collect::<Vec<_>>(),
                    "errorCount": count(Level::Error),
                    "warningCount": count(Level::Warning),
                    "noticeCount": count(Level::Notice),
                    "id": r.id,
                    "parentId": self.msg.job_id,
                    "type": "Task",
                    "name": r.name,
                    "refName": r.ref_name,
                    "order": r.order,
                    "state": match r.state {
                        RecordState::Pending => "pending",
                        RecordState::InProgress => "inProgress",
                        RecordState::Completed => "completed",
                    },
                    "result": r.result.map(task_result),
                    "startTime": r.started.map(vss_time),
                    "finishTime": r.finished.map(vss_time),
                    "percentComplete": if r.state == RecordState::Completed { 100 } else { 0 },
                    "workerName": self.runner_name,
                    "log": r.log_id.map(|id| json!({"id": id})),
                })
            })
            .collect()
    }

    async fn patch_records(&mut self, records: Vec<Value>) -> Result<(), GithubError> {
        let locations = self.locations().await?;
        let url = self.url(&locations, ids::RECORDS, &[]);
        // At most 25 records per request, as the official runner sends them.
        for chunk in records.chunks(25) {
            let call = Call::new(Method::PATCH, url.clone(), SERVICE)
                .api("5.1-preview.1")
                .json(json!({"count": chunk.len(), "value": chunk}));
            self.http.send(&call, &self.auth()).await?;
        }
        Ok(())
    }

    pub(super) async fn classic_sync(&mut self) -> Result<(), GithubError> {
        let mut records = Vec::new();
        if let Flavor::Classic { job_started: false, .. } = self.flavor {
            records.push(self.job_record(None));
        }
        records.extend(self.step_records());
        self.patch_records(records).await?;
        if let Flavor::Classic { job_started, .. } = &mut self.flavor {
            *job_started = true;
        }
        Ok(())
    }

    pub(super) async fn classic_feed(&mut self) -> Result<(), GithubError> {
        let locations = self.locations().await?;
        let url = self.url(&locations, ids::FEED, &[("recordId", self.msg.job_id.clone())]);
        for i in 0..self.records.len() {
            while !self.records[i].feed.is_empty() {
                let take = self.records[i].feed.len().min(100);
                let lines: Vec<String> = self.records[i].feed[..take].to_vec();
                let body = json!({
                    "value": lines, "count": take, "stepId": self.records[i].id, "startLine": self.records[i].fed + 1,
                });
                let call = Call::new(Method::POST, url.clone(), SERVICE).api("5.1-preview.1").json(body);
                self.http.send(&call, &self.auth()).await?;
                self.records[i].feed.drain(..take);
                self.records[i].fed += take;
            }
        }
        Ok(())
    }

    async fn upload_text(&mut self, record_id: &str, text: String) -> Result<i64, GithubError> {
        let locations = self.locations().await?;
        let now = vss_time(time::OffsetDateTime::now_utc());
        let create = Call::new(Method::POST, self.url(&locations, ids::LOGS, &[]), SERVICE)
            .api("5.1-preview.1")
            .json(json!({"path": format!("logs\\{record_id}"), "createdOn": now, "lastChangedOn": now}));
        let log = self.http.send(&create, &self.auth()).await?;
        let id = log
            .as_ref()
            .and_then(|l| i64_field(l, "id"))
            .ok_or(GithubError::Protocol { service: SERVICE, what: "a log without an id".to_owned() })?;
        let url = self.url(&locations, ids::LOGS, &[("logId", id.to_string())]);
        let request = crate::http::with_auth(self.http.raw().post(url), &self.auth())
            .header(reqwest::header::ACCEPT, "application/json; api-version=5.1-preview.1")
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(text);
        self.http.execute(request, SERVICE).await?;
        Ok(id)
    }

    pub(super) async fn classic_upload_log(&mut self, index: usize) -> Result<(), GithubError> {
        if self.records[index].log_id.is_none() && !self.records[index].lines.is_empty() {
            let text = log_text(&self.records[index].lines);
            let id = self.upload_text(&self.records[index].id.clone(), text).await?;
            self.records[index].log_id = Some(id);
        }
        Ok(())
    }

    pub(super) async fn classic_finish(&mut self, result: JobResult, outputs: &Value) -> Result<(), GithubError> {
        if let Flavor::Classic { job_log_id: None, .. } = self.flavor {
            let lines: Vec<String> = self.records.iter().flat_map(|r| r.lines.iter().cloned()).collect();
            if !lines.is_empty() {
                let id = self.upload_text(&self.msg.job_id.clone(), log_text(&lines)).await?;
                if let Flavor::Classic { job_log_id, .. } = &mut self.flavor {
                    *job_log_id = Some(id);
                }
            }
        }
        let record = self.job_record(Some(result));
        self.patch_records(vec![record]).await?;
        let locations = self.locations().await?;
        let call = Call::new(Method::POST, self.url(&locations, ids::EVENTS, &[]), SERVICE).api("2.0-preview.1").json(json!({
            "name": "JobCompleted",
            "jobId": self.msg.job_id,
            "requestId": self.msg.request_id,
            "result": task_result(result),
            "outputs": outputs,
        }));
        self.http.send(&call, &self.auth()).await?;
        Ok(())
    }
}

/// A log file's text: one timestamped line per line.
pub(super) fn log_text(lines: &[String]) -> String {
    let mut text = lines.join("\n");
    text.push('\n');
    text
}
