//! Reporting a job's events to GitHub: step records, logs, completion.
//!
//! A job has one record per workflow step plus GitHub's two pseudo-steps, "Set up job"
//! (the machine's preparation) and "Complete job" (its clean-up). Events move records
//! through pending → in progress → completed; each change is sent whole, so a resent
//! event is harmless. Classic (`PipelineAgentJobRequest`) jobs report to the timeline,
//! the console feed, the log store and the plan's `JobCompleted` event; broker
//! (`RunnerJobRequest`) jobs to the results service and `completejob`.

mod annotation;
mod feed;

pub(crate) use feed::spawn_live_feed;
mod results;
mod timeline;

use std::time::Instant;

use serde_json::{Map, Value, json};
use solstice_core::support::Masker;
use solstice_core::{JobEvent, JobEventKind, JobId, JobResult, StepsContext};
use time::OffsetDateTime;

use crate::GithubError;
use crate::http::Http;
use crate::protocol::job::JobMessage;
use crate::protocol::location::Locations;
use crate::protocol::template::Token;
use crate::translate::StepPlan;

/// Feed lines are sent when this many are waiting…
const FEED_BATCH: usize = 100;
/// …or when the oldest has waited this long (checked as events arrive).
const FEED_DELAY_MS: u128 = 250;

/// A record's place in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordState {
    Pending,
    InProgress,
    Completed,
}

/// One timeline record (a step or a pseudo-step).
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub id: String,
    pub name: String,
    pub ref_name: String,
    /// 1-based position.
    pub order: usize,
    pub kind: &'static str,
    pub state: RecordState,
    pub result: Option<JobResult>,
    pub started: Option<OffsetDateTime>,
    pub finished: Option<OffsetDateTime>,
    /// Log lines with their timestamp prefix.
    pub lines: Vec<String>,
    /// Lines not yet sent to the live feed (without timestamps).
    pub feed: Vec<String>,
    /// How many lines the feed has received.
    pub fed: usize,
    pub log_uploaded: bool,
    pub log_id: Option<i64>,
    /// Annotations the engine reported (`::error`/`::warning`/`::notice`).
    pub annotations: Vec<annotation::Annotation>,
}

impl Record {
    fn new(id: String, name: String, ref_name: String, order: usize, kind: &'static str) -> Self {
        Self {
            id,
            name,
            ref_name,
            order,
            kind,
            state: RecordState::Pending,
            result: None,
            started: None,
            finished: None,
            lines: Vec::new(),
            feed: Vec::new(),
            fed: 0,
            log_uploaded: false,
            log_id: None,
            annotations: Vec::new(),
        }
    }

    fn start(&mut self) {
        if self.state == RecordState::Pending {
            self.state = RecordState::InProgress;
            self.started = Some(OffsetDateTime::now_utc());
        }
    }

    fn complete(&mut self, result: JobResult) {
        if self.state != RecordState::Completed {
            let now = OffsetDateTime::now_utc();
            self.started.get_or_insert(now);
            self.state = RecordState::Completed;
            self.result = Some(result);
            self.finished = Some(now);
        }
    }
}

/// Which reporting path a job uses.
#[derive(Debug)]
pub(crate) enum Flavor {
    /// Timeline, feed, logs, plan events on the tenant.
    Classic { locations: Option<Locations>, job_started: bool, job_log_id: Option<i64> },
    /// Results service and run service.
    Broker { change_order: u64, job_log_uploaded: bool },
}

/// What the reporter masks in what it sends itself: the job's `mask[]` regular
/// expressions and its secret values.
#[derive(Debug, Default)]
pub(crate) struct JobMasks {
    /// `mask[]` regular expressions, applied to every line.
    pub regexes: Vec<regex::Regex>,
    /// The job's secrets, for the runner's own lines and the job's outputs.
    pub values: Masker,
}

/// Everything the reporter keeps about one job.
#[derive(Debug)]
pub(crate) struct JobReport {
    pub job_id: JobId,
    pub msg: JobMessage,
    pub http: Http,
    pub runner_name: String,
    pub flavor: Flavor,
    pub records: Vec<Record>,
    regex_masks: Vec<regex::Regex>,
    /// The job's secrets: for the runner's own lines and the job's outputs (lines from
    /// the engine are masked already).
    masker: Masker,
    contexts: Map<String, Value>,
    steps_ctx: StepsContext,
    last: Option<(u32, u64)>,
    /// Where job-level lines go: "Set up job" until the first step starts, then
    /// "Complete job".
    job_level: usize,
    feed_since: Option<Instant>,
    /// Batches for the broker path's live console websocket task.
    live: Option<tokio::sync::mpsc::Sender<String>>,
    pub result: Option<JobResult>,
    /// The job's outputs, evaluated when it finished.
    final_outputs: Option<Value>,
    completed: bool,
}

impl JobReport {
    pub fn new(
        job_id: JobId,
        msg: JobMessage,
        http: Http,
        runner_name: String,
        steps: &[StepPlan],
        masks: JobMasks,
        contexts: Map<String, Value>,
    ) -> Self {
        let JobMasks { regexes: regex_masks, values: masker } = masks;
        let mut records = vec![Record::new(uuid::Uuid::new_v4().to_string(), "Set up job".into(), "__setup".into(), 1, "runner")];
        for (i, step) in steps.iter().enumerate() {
            records.push(Record::new(step.record_id.clone(), step.display_name.clone(), step.ref_name.clone(), i + 2, step.kind));
        }
        let n = records.len();
        records.push(Record::new(uuid::Uuid::new_v4().to_string(), "Complete job".into(), "__complete".into(), n + 1, "runner"));
        let flavor = if msg.is_v2() {
            Flavor::Broker { change_order: 0, job_log_uploaded: false }
        } else {
            Flavor::Classic { locations: None, job_started: false, job_log_id: None }
        };
        Self {
            job_id,
            http,
            runner_name,
            flavor,
            records,
            regex_masks,
            masker,
            contexts,
            steps_ctx: StepsContext::new(steps.iter().map(|s| s.context_name.clone()).collect()),
            last: None,
            job_level: 0,
            feed_since: None,
            live: None,
            result: None,
            final_outputs: None,
            completed: false,
            msg,
        }
    }

    /// Whether `completejob` / `JobCompleted` went through.
    pub fn is_completed(&self) -> bool {
        self.completed
    }

    /// Applies one event. Safe to call again with the same event after an error.
    pub async fn apply(&mut self, event: &JobEvent) -> Result<(), GithubError> {
        if let Some((attempt, seq)) = self.last {
            if (event.attempt, event.seq) <= (attempt, seq) {
                return Ok(());
            }
            if event.attempt > attempt {
                self.restart_attempt();
            }
        }
        match &event.kind {
            JobEventKind::Accepted { .. } => {
                self.records[0].start();
                self.sync().await?;
            }
            JobEventKind::StepStarted { index, .. } => {
                let setup_done = self.records[0].state == RecordState::Completed;
                if !setup_done {
                    self.records[0].complete(JobResult::Success);
                }
                self.upload_log(0).await?;
                self.job_level = self.records.len() - 1;
                if let Some(record) = self.records.get_mut(index + 1) {
                    record.start();
                }
                self.sync().await?;
            }
            JobEventKind::Log { step, line, .. } => {
                let index = self.record_of(*step);
                self.push_line(index, line);
                self.flush_feed(false).await;
            }
            JobEventKind::Annotation { step, annotation } => {
                let index = self.record_of(*step);
                self.annotate(index, annotation);
            }
            JobEventKind::StepFinished { index, outcome, .. } => {
                let i = index + 1;
                if i < self.records.len() - 1 {
                    self.records[i].complete(*outcome);
                    self.steps_ctx.record(&event.kind);
                    self.flush_feed(true).await;
                    self.upload_log(i).await?;
                    self.sync().await?;
                }
            }
            JobEventKind::JobFinished { result } => {
                self.finish(*result).await?;
            }
            _ => {}
        }
        self.last = Some((event.attempt, event.seq));
        Ok(())
    }

    /// Every annotation of the job, with the 1-based order of its record.
    pub(crate) fn annotations(&self) -> impl Iterator<Item = (usize, &annotation::Annotation)> {
        self.records.iter().flat_map(|r| r.annotations.iter().map(move |a| (r.order, a)))
    }

    /// The record of a step's lines and annotations; job-level ones go to the current
    /// pseudo-step.
    fn record_of(&self, step: Option<usize>) -> usize {
        match step {
            Some(i) if i + 1 < self.records.len() - 1 => i + 1,
            _ => self.job_level,
        }
    }

    /// Records an annotation: the engine sends it right before the line that shows it,
    /// so it points at the record's next line.
    fn annotate(&mut self, index: usize, reported: &solstice_core::Annotation) {
        if index == self.job_level && self.records[index].state == RecordState::Pending {
            self.records[index].start();
        }
        let mut reported = reported.clone();
        reported.message = self.regex_mask(&reported.message);
        reported.title = reported.title.as_deref().map(|t| self.regex_mask(t));
        let record = &mut self.records[index];
        let log_line = record.lines.len() + 1;
        record.annotations.push(annotation::Annotation { reported, log_line });
    }

    fn restart_attempt(&mut self) {
        for record in &mut self.records {
            *record = Record::new(record.id.clone(), record.name.clone(), record.ref_name.clone(), record.order, record.kind);
        }
        self.job_level = 0;
        self.steps_ctx.clear();
    }

    /// Adds a line of the runner's own to the job-level log ("Set up job" before the
    /// first step starts), masked like every other line.
    pub(crate) fn job_line(&mut self, line: &str) {
        let line = self.masker.mask(line);
        self.push_line(self.job_level, &line);
    }

    /// A line of the runner's own in the job-level log (before the final event).
    pub(crate) fn push_job_line(&mut self, line: &str) {
        let index = self.job_level;
        let line = self.masker.mask(line);
        self.push_line(index, &line);
    }

    /// `text` with the job's regular-expression masks applied.
    fn regex_mask(&self, text: &str) -> String {
        self.regex_masks.iter().fold(text.to_owned(), |t, re| re.replace_all(&t, "***").into_owned())
    }

    fn push_line(&mut self, index: usize, line: &str) {
        let line = self.regex_mask(line);
        let record = &mut self.records[index];
        if record.state == RecordState::Pending && index == self.job_level {
            record.start();
        }
        let now = vss_time(OffsetDateTime::now_utc());
        record.lines.push(format!("{now} {line}"));
        record.feed.push(line);
        self.feed_since.get_or_insert_with(Instant::now);
    }

    async fn finish(&mut self, result: JobResult) -> Result<(), GithubError> {
        self.result = Some(result);
        let last = self.records.len() - 1;
        if self.records[0].state != RecordState::Completed {
            // No step started: whatever went wrong happened while setting up.
            let setup = if result == JobResult::Success { JobResult::Success } else { result };
            self.records[0].complete(setup);
        }
        for record in &mut self.records[1..last] {
            if record.state != RecordState::Completed {
                let r = if result == JobResult::Cancelled { JobResult::Cancelled } else { JobResult::Skipped };
                record.complete(r);
            }
        }
        // Evaluated before "Complete job" closes, so that a dropped output's warning is
        // in its log; once only, as this may run again after an error.
        if self.final_outputs.is_none() {
            self.final_outputs = Some(self.job_outputs());
        }
        self.records[last].start();
        self.records[last].complete(JobResult::Success);
        self.flush_feed(true).await;
        self.close_feed();
        self.upload_log(0).await?;
        self.upload_log(last).await?;
        self.sync().await?;
        if !self.completed {
            let outputs = self.final_outputs.clone().unwrap_or_else(|| json!({}));
            match &self.flavor {
                Flavor::Classic { .. } => self.classic_finish(result, &outputs).await?,
                Flavor::Broker { .. } => self.broker_finish(result, &outputs).await?,
            }
            self.completed = true;
        }
        Ok(())
    }

    /// `jobOutputs` evaluated with the final contexts: `{name: {value, isSecret}}`.
    ///
    /// As GitHub's runner does (`JobExtension.cs`, `FinalizeJob`), an empty output is
    /// left out and one that holds a secret is dropped with a warning in the job's log,
    /// so no output goes to GitHub with a secret, and none is marked `isSecret`.
    fn job_outputs(&mut self) -> Value {
        let Some(token) = self.msg.job_outputs.clone() else { return json!({}) };
        let mut ctx = self.contexts.clone();
        ctx.insert("steps".to_owned(), Value::Object(self.steps_ctx.as_map().clone()));
        let mut out = Map::new();
        if let Token::Mapping(pairs) = &token {
            for (k, v) in pairs {
                let (Ok(k), Ok(v)) = (k.evaluate_string(&ctx), v.evaluate_string(&ctx)) else {
                    tracing::warn!(job_id = %self.job_id, "a job output could not be evaluated");
                    continue;
                };
                if v.is_empty() {
                    continue;
                }
                if self.masker.reveals_secret(&v) || self.regex_mask(&v) != v {
                    self.push_job_line(&format!("##[warning]Skip output '{k}' since it may contain secret."));
                    continue;
                }
                out.insert(k, json!({"value": v, "isSecret": false}));
            }
        }
        Value::Object(out)
    }

    async fn sync(&mut self) -> Result<(), GithubError> {
        match self.flavor {
            Flavor::Classic { .. } => self.classic_sync().await,
            Flavor::Broker { .. } => self.broker_sync().await,
        }
    }

    async fn upload_log(&mut self, index: usize) -> Result<(), GithubError> {
        if self.records[index].log_uploaded || self.records[index].state != RecordState::Completed {
            return Ok(());
        }
        match self.flavor {
            Flavor::Classic { .. } => self.classic_upload_log(index).await?,
            Flavor::Broker { .. } => self.broker_upload_log(index).await?,
        }
        self.records[index].log_uploaded = true;
        Ok(())
    }

    /// Sends live lines that have waited long enough (called by a timer, so a quiet step's
    /// last lines do not wait for its end).
    pub async fn tick(&mut self) {
        self.flush_feed(false).await;
    }

    async fn flush_feed(&mut self, force: bool) {
        let waiting: usize = self.records.iter().map(|r| r.feed.len()).sum();
        let due = self.feed_since.is_some_and(|t| t.elapsed().as_millis() >= FEED_DELAY_MS);
        if waiting == 0 || !(force || due || waiting >= FEED_BATCH) {
            return;
        }
        if let Flavor::Classic { .. } = self.flavor {
            // The live feed is best effort: a failure only delays the lines to the log.
            if let Err(e) = self.classic_feed().await {
                tracing::debug!(job_id = %self.job_id, error = %e, "could not send live log lines");
            }
        } else {
            // Best effort too: the websocket is the only live channel, the step's log
            // blob is the record.
            self.broker_feed();
        }
        self.feed_since = None;
    }
}

/// .NET round-trip UTC time with 7 fractional digits.
pub(crate) fn vss_time(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond() / 100
    )
}

/// Results-service time with 3 fractional digits.
pub(crate) fn results_time(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// The VSS `TaskResult` name.
pub(crate) fn task_result(result: JobResult) -> &'static str {
    match result {
        JobResult::Success => "succeeded",
        JobResult::Failure => "failed",
        JobResult::Cancelled => "canceled",
        JobResult::Skipped => "skipped",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_the_documented_precision() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_767_323_045_123_456_789).expect("time");
        assert_eq!(vss_time(t), "2026-01-02T03:04:05.1234567Z");
        assert_eq!(results_time(t), "2026-01-02T03:04:05.123Z");
    }
}
