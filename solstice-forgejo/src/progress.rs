//! A task's state as Forgejo sees it, built from the job's events, without I/O: log rows
//! waiting for `UpdateLog`, step states and outputs for `UpdateTask`, and the
//! bookkeeping of what the server acknowledged.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde_json::{Map, Value};
use solstice_core::support::Masker;
use solstice_core::{JobEvent, JobEventKind, JobRequest, JobResult, Secret, StepsContext};
use time::OffsetDateTime;

use crate::proto::Timestamp;
use crate::proto::runner::v1 as pb;

/// Forgejo truncates rows to 64 KiB; rows are cut before sending so one huge line cannot
/// make a request huge.
const MAX_ROW_BYTES: usize = 64 * 1024;
/// Forgejo's limits on a job output.
const MAX_OUTPUT_KEY: usize = 255;
const MAX_OUTPUT_VALUE: usize = 1024 * 1024;

/// A Forgejo timestamp.
pub(crate) fn timestamp(at: OffsetDateTime) -> Timestamp {
    Timestamp { seconds: at.unix_timestamp(), nanos: i32::try_from(at.nanosecond()).unwrap_or(0) }
}

/// The wire value of a result.
pub(crate) fn wire_result(result: JobResult) -> pb::Result {
    match result {
        JobResult::Success => pb::Result::Success,
        JobResult::Failure => pb::Result::Failure,
        JobResult::Cancelled => pb::Result::Cancelled,
        JobResult::Skipped => pb::Result::Skipped,
    }
}

/// The server's log acknowledged fewer rows than before: rows it had are gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server lost submitted log rows (acknowledged {ack}, had {acked})")]
pub(crate) struct LogsLost {
    pub(crate) ack: i64,
    pub(crate) acked: i64,
}

/// What the server said about a task in its `UpdateTask` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Still running (or the answer carried a result we ignore).
    Running,
    /// The task was cancelled or failed on the server: stop the job.
    Stop(pb::Result),
}

/// One task's reporting state.
#[derive(Debug)]
pub(crate) struct Progress {
    task_id: i64,
    result: pb::Result,
    started_at: Option<Timestamp>,
    stopped_at: Option<Timestamp>,
    steps: Vec<pb::StepState>,
    steps_context: StepsContext,
    output_exprs: Map<String, Value>,
    contexts: Map<String, Value>,
    /// The job's secrets, for the runner's own rows and the job's outputs (rows from the
    /// engine's events are masked already).
    masker: Masker,
    /// Rows from `acked` on, not yet acknowledged by the server.
    pending: VecDeque<pb::LogRow>,
    acked: i64,
    outputs: BTreeMap<String, String>,
    sent_outputs: BTreeSet<String>,
    attempt: u32,
    last_seq: u64,
    finished: bool,
    log_closed: bool,
    state_closed: bool,
    accepted: bool,
}

impl Progress {
    /// A task with `steps` pre-created steps and nothing else known.
    pub(crate) fn new(task_id: i64, steps: usize) -> Self {
        Self {
            task_id,
            result: pb::Result::Unspecified,
            started_at: None,
            stopped_at: None,
            steps: (0..steps).map(|i| pb::StepState { id: i as i64, ..Default::default() }).collect(),
            steps_context: StepsContext::new(vec![None; steps]),
            output_exprs: Map::new(),
            contexts: Map::new(),
            masker: Masker::default(),
            pending: VecDeque::new(),
            acked: 0,
            outputs: BTreeMap::new(),
            sent_outputs: BTreeSet::new(),
            attempt: 1,
            last_seq: 0,
            finished: false,
            log_closed: false,
            state_closed: false,
            accepted: false,
        }
    }

    /// A task that runs `job`, whose `outputs:` are `output_exprs`.
    pub(crate) fn for_job(task_id: i64, job: &JobRequest, output_exprs: Map<String, Value>) -> Self {
        let mut progress = Self::new(task_id, job.steps.len());
        progress.steps_context = StepsContext::for_job(job);
        progress.output_exprs = output_exprs;
        progress.contexts = job.contexts.clone();
        progress.masker = Masker::new(job.secrets.iter().map(Secret::expose));
        progress
    }

    /// The task id.
    pub(crate) fn task_id(&self) -> i64 {
        self.task_id
    }

    /// Appends a log row outside any event (runner messages), masked: it may quote an
    /// evaluated value.
    pub(crate) fn push_row(&mut self, at: OffsetDateTime, content: &str) {
        let content = self.masker.mask(content);
        self.push_masked_row(at, &content);
    }

    /// Appends a row whose secrets are masked already (a log line of the engine's).
    fn push_masked_row(&mut self, at: OffsetDateTime, content: &str) {
        if self.started_at.is_none() {
            self.started_at = Some(timestamp(at));
        }
        let mut content = content.trim_end_matches(['\r', '\n']).replace('\n', "\\n");
        if content.len() > MAX_ROW_BYTES {
            let mut cut = MAX_ROW_BYTES;
            while !content.is_char_boundary(cut) {
                cut -= 1;
            }
            content.truncate(cut);
        }
        self.pending.push_back(pb::LogRow { time: Some(timestamp(at)), content });
    }

    /// Rows appended so far (acknowledged or not).
    fn rows_total(&self) -> i64 {
        self.acked + self.pending.len() as i64
    }

    /// Rows waiting for the server.
    pub(crate) fn pending_rows(&self) -> usize {
        self.pending.len()
    }

    /// Whether an orchestrator has taken the job.
    pub(crate) fn accepted(&self) -> bool {
        self.accepted
    }

    /// Whether the local result is known (the closing sequence is due).
    pub(crate) fn finished(&self) -> bool {
        self.finished
    }

    /// Whether the server has every row, the final state and every output.
    pub(crate) fn complete(&self) -> bool {
        self.finished && self.log_closed && self.state_closed && self.unsent_outputs().is_empty()
    }

    /// Applies one job event; returns `false` for a duplicate or stale event.
    pub(crate) fn apply(&mut self, event: &JobEvent) -> bool {
        if event.attempt < self.attempt || (event.attempt == self.attempt && event.seq <= self.last_seq) {
            return false;
        }
        if event.attempt > self.attempt {
            self.restart(event.attempt, event.at);
        }
        if event.seq != self.last_seq + 1 {
            tracing::warn!(task_id = self.task_id, seq = event.seq, last = self.last_seq, "job events arrived with a gap");
        }
        self.last_seq = event.seq;
        if self.finished {
            return true;
        }
        match &event.kind {
            JobEventKind::Accepted { orchestrator } => {
                self.accepted = true;
                self.push_row(event.at, &format!("Job accepted by {orchestrator}"));
            }
            JobEventKind::StepStarted { index, .. } => {
                let rows = self.rows_total();
                if let Some(step) = self.steps.get_mut(*index) {
                    step.started_at = Some(timestamp(event.at));
                    step.log_index = rows;
                    step.log_length = 0;
                }
            }
            JobEventKind::Log { line, .. } => self.push_masked_row(event.at, line),
            JobEventKind::StepFinished { index, outcome, .. } => {
                self.steps_context.record(&event.kind);
                let rows = self.rows_total();
                if let Some(step) = self.steps.get_mut(*index) {
                    if step.started_at.is_none() {
                        step.started_at = Some(timestamp(event.at));
                        step.log_index = rows;
                    }
                    step.log_length = rows - step.log_index;
                    step.stopped_at = Some(timestamp(event.at));
                    step.result = wire_result(*outcome) as i32;
                }
            }
            JobEventKind::JobFinished { result } => self.finish(*result, event.at),
            _ => {}
        }
        true
    }

    /// A redelivered job runs again from its first step: rows stay (the server keeps
    /// them), step states start over.
    fn restart(&mut self, attempt: u32, at: OffsetDateTime) {
        self.attempt = attempt;
        self.last_seq = 0;
        for step in &mut self.steps {
            *step = pb::StepState { id: step.id, ..Default::default() };
        }
        self.steps_context.clear();
        self.push_row(at, &format!("##[warning]The job is being run again (attempt {attempt}) after its orchestrator stopped."));
    }

    /// Sets the final result: unfinished steps take the job's stop status, job outputs
    /// are evaluated for a successful job.
    pub(crate) fn finish(&mut self, result: JobResult, at: OffsetDateTime) {
        if self.finished {
            return;
        }
        if result == JobResult::Success {
            self.evaluate_outputs(at);
        }
        let rows = self.rows_total();
        let leftover = if result == JobResult::Skipped { pb::Result::Skipped } else { pb::Result::Cancelled };
        for step in &mut self.steps {
            if step.result == pb::Result::Unspecified as i32 {
                step.result = leftover as i32;
                if step.started_at.is_some() {
                    step.log_length = rows - step.log_index;
                    step.stopped_at = Some(timestamp(at));
                } else {
                    step.log_index = rows;
                }
            }
        }
        if self.started_at.is_none() {
            self.started_at = Some(timestamp(at));
        }
        self.result = wire_result(result);
        self.stopped_at = Some(timestamp(at));
        self.finished = true;
    }

    fn evaluate_outputs(&mut self, at: OffsetDateTime) {
        if self.output_exprs.is_empty() {
            return;
        }
        let exprs = std::mem::take(&mut self.output_exprs);
        for (key, value) in self.steps_context.job_outputs(&exprs, &self.contexts, "success") {
            let value = match value {
                Ok(value) => value,
                Err(e) => {
                    self.push_row(at, &format!("##[warning]Job output `{key}` could not be evaluated: {e}"));
                    continue;
                }
            };
            // GitHub's runner drops an output that holds a secret, with this warning
            // (`JobExtension.cs`, `FinalizeJob`): it would reach the forge in clear.
            if self.masker.reveals_secret(&value) {
                self.push_row(at, &format!("##[warning]Skip output '{key}' since it may contain secret."));
                continue;
            }
            if key.len() > MAX_OUTPUT_KEY || value.len() > MAX_OUTPUT_VALUE {
                self.push_row(at, &format!("##[warning]Job output `{key}` is too large for Forgejo and was dropped."));
                continue;
            }
            self.outputs.insert(key, value);
        }
    }

    /// The next `UpdateLog`: every pending row up to `max_rows`, with `no_more` once the
    /// job is finished and this request carries the last rows.
    pub(crate) fn log_request(&self, max_rows: usize) -> pb::UpdateLogRequest {
        let rows: Vec<pb::LogRow> = self.pending.iter().take(max_rows).cloned().collect();
        let no_more = self.finished && rows.len() == self.pending.len();
        pb::UpdateLogRequest { task_id: self.task_id, index: self.acked, rows, no_more }
    }

    /// Records the server's answer to `sent`.
    ///
    /// # Errors
    /// [`LogsLost`] when the server holds fewer rows than it acknowledged before.
    pub(crate) fn log_acked(&mut self, sent: &pb::UpdateLogRequest, ack: i64) -> Result<(), LogsLost> {
        if ack < self.acked {
            return Err(LogsLost { ack, acked: self.acked });
        }
        let drop = usize::try_from(ack - self.acked).unwrap_or(usize::MAX).min(self.pending.len());
        self.pending.drain(..drop);
        self.acked = ack;
        if sent.no_more && self.pending.is_empty() && self.finished {
            self.log_closed = true;
        }
        Ok(())
    }

    /// The server will take no more rows (its log is archived): drop what is pending.
    pub(crate) fn log_archived(&mut self) {
        self.acked += self.pending.len() as i64;
        self.pending.clear();
        if self.finished {
            self.log_closed = true;
        }
    }

    /// Whether the final `UpdateLog` went through.
    pub(crate) fn log_closed(&self) -> bool {
        self.log_closed
    }

    fn unsent_outputs(&self) -> Vec<(&String, &String)> {
        self.outputs.iter().filter(|(k, _)| !self.sent_outputs.contains(*k)).collect()
    }

    /// The next `UpdateTask`: the full state and the outputs not yet acknowledged.
    pub(crate) fn state_request(&self) -> pb::UpdateTaskRequest {
        let state = pb::TaskState {
            id: self.task_id,
            result: self.result as i32,
            started_at: self.started_at,
            stopped_at: self.stopped_at,
            steps: self.steps.clone(),
        };
        let outputs = self.unsent_outputs().into_iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        pb::UpdateTaskRequest { state: Some(state), outputs }
    }

    /// Records the server's answer to an `UpdateTask` made with [`Self::state_request`].
    pub(crate) fn state_acked(&mut self, sent: &pb::UpdateTaskRequest, response: &pb::UpdateTaskResponse) -> Verdict {
        self.sent_outputs.extend(response.sent_outputs.iter().cloned());
        let sent_final = sent.state.as_ref().is_some_and(|s| s.result != pb::Result::Unspecified as i32);
        if sent_final {
            self.state_closed = true;
        }
        let server = response.state.as_ref().map(|s| s.result).unwrap_or_default();
        match pb::Result::try_from(server) {
            Ok(r @ (pb::Result::Cancelled | pb::Result::Failure)) if !self.finished => Verdict::Stop(r),
            _ => Verdict::Running,
        }
    }

    /// The log rows still held (for tests and diagnostics).
    #[cfg(test)]
    fn pending_contents(&self) -> Vec<&str> {
        self.pending.iter().map(|r| r.content.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use solstice_core::{JobId, LogStream, StepCommand};

    fn event(seq: u64, kind: JobEventKind) -> JobEvent {
        JobEvent { job_id: JobId::new(), attempt: 1, seq, at: OffsetDateTime::UNIX_EPOCH, kind }
    }

    fn log(seq: u64, step: Option<usize>, line: &str) -> JobEvent {
        event(seq, JobEventKind::Log { step, stream: LogStream::Stdout, line: line.into() })
    }

    fn finished(seq: u64, index: usize, outcome: JobResult) -> JobEvent {
        event(
            seq,
            JobEventKind::StepFinished { index, outcome, conclusion: outcome, exit_code: Some(0), outputs: BTreeMap::new() },
        )
    }

    #[test]
    fn steps_get_contiguous_log_slices_and_unrun_steps_are_cancelled() {
        let mut p = Progress::new(9, 3);
        let events = [
            log(1, None, "preparing"),
            event(2, JobEventKind::StepStarted { index: 0, name: "a".into() }),
            log(3, Some(0), "a1"),
            log(4, Some(0), "a2"),
            finished(5, 0, JobResult::Success),
            event(6, JobEventKind::StepStarted { index: 1, name: "b".into() }),
            finished(7, 1, JobResult::Failure),
            log(8, None, "destroyed"),
            event(9, JobEventKind::JobFinished { result: JobResult::Failure }),
        ];
        for e in &events {
            assert!(p.apply(e));
        }
        assert!(!p.apply(&events[3]), "a duplicate is ignored");
        let state = p.state_request().state.expect("state");
        assert_eq!(state.result, pb::Result::Failure as i32);
        let slices: Vec<_> = state.steps.iter().map(|s| (s.id, s.result, s.log_index, s.log_length)).collect();
        assert_eq!(
            slices,
            [
                (0, pb::Result::Success as i32, 1, 2),
                (1, pb::Result::Failure as i32, 3, 0),
                (2, pb::Result::Cancelled as i32, 4, 0),
            ]
        );
        assert_eq!(p.pending_contents(), ["preparing", "a1", "a2", "destroyed"]);
    }

    #[test]
    fn acknowledged_rows_leave_the_buffer_and_no_more_comes_last() {
        let mut p = Progress::new(1, 0);
        for i in 0..5 {
            p.push_row(OffsetDateTime::UNIX_EPOCH, &format!("line {i}"));
        }
        let first = p.log_request(3);
        assert_eq!((first.index, first.rows.len(), first.no_more), (0, 3, false));
        p.log_acked(&first, 3).expect("ack");
        p.finish(JobResult::Success, OffsetDateTime::UNIX_EPOCH);
        let last = p.log_request(3);
        assert_eq!((last.index, last.rows.len(), last.no_more), (3, 2, true));
        assert_eq!(p.log_acked(&last, 2), Err(LogsLost { ack: 2, acked: 3 }));
        p.log_acked(&last, 5).expect("ack");
        assert!(p.log_closed());
        let sent = p.state_request();
        let verdict = p.state_acked(&sent, &pb::UpdateTaskResponse::default());
        assert_eq!(verdict, Verdict::Running);
        assert!(p.complete());
    }

    #[test]
    fn a_partial_ack_keeps_the_rest_for_the_next_request() {
        let mut p = Progress::new(1, 0);
        for i in 0..4 {
            p.push_row(OffsetDateTime::UNIX_EPOCH, &format!("r{i}"));
        }
        let sent = p.log_request(10);
        p.log_acked(&sent, 1).expect("ack");
        let next = p.log_request(10);
        assert_eq!(next.index, 1);
        assert_eq!(next.rows.iter().map(|r| r.content.as_str()).collect::<Vec<_>>(), ["r1", "r2", "r3"]);
    }

    // Issue 16 items 1 and 2: an output holding a secret (in any form the masker knows)
    // is dropped with the runner's warning (`JobExtension.cs`), and the warning for an
    // output that could not be evaluated does not quote the secret.
    #[test]
    fn outputs_with_a_secret_are_dropped_and_warnings_are_masked() {
        let mut job = JobRequest::new("j", vec!["x".into()], vec![StepCommand::run("s", "true")]);
        job.secrets = vec![Secret::new("hunter2-Secret")];
        job.contexts.insert("secrets".into(), json!({"S": "hunter2-Secret"}));
        let mut exprs = Map::new();
        exprs.insert("plain".into(), json!("${{ secrets.S }}"));
        exprs.insert("base64".into(), json!("aHVudGVyMi1TZWNyZXQ="));
        exprs.insert("broken".into(), json!("${{ fromJSON(secrets.S) }}"));
        exprs.insert("fine".into(), json!("ok"));
        let mut p = Progress::for_job(1, &job, exprs);
        p.finish(JobResult::Success, OffsetDateTime::UNIX_EPOCH);
        let sent = p.state_request();
        assert_eq!(sent.outputs.keys().collect::<Vec<_>>(), ["fine"]);
        let rows: Vec<String> = p.log_request(100).rows.into_iter().map(|r| r.content).collect();
        assert!(rows.iter().any(|r| r == "##[warning]Skip output 'plain' since it may contain secret."), "{rows:?}");
        assert!(rows.iter().any(|r| r.contains("Skip output 'base64'")), "{rows:?}");
        assert!(rows.iter().any(|r| r.contains("`broken` could not be evaluated")), "{rows:?}");
        assert!(rows.iter().all(|r| !r.contains("hunter2")), "{rows:?}");
    }

    #[test]
    fn job_outputs_are_evaluated_from_step_outputs_and_resent_until_acknowledged() {
        let mut job = JobRequest::new("j", vec!["host".into()], vec![StepCommand::run("s", "true")]);
        job.steps[0].id = Some("make".into());
        let mut exprs = Map::new();
        exprs.insert("artifact".into(), json!("${{ steps.make.outputs.file }}"));
        let mut p = Progress::for_job(3, &job, exprs);
        let mut outputs = BTreeMap::new();
        outputs.insert("file".to_owned(), "x.tar".to_owned());
        p.apply(&event(1, JobEventKind::StepStarted { index: 0, name: "s".into() }));
        p.apply(&event(
            2,
            JobEventKind::StepFinished {
                index: 0,
                outcome: JobResult::Success,
                conclusion: JobResult::Success,
                exit_code: Some(0),
                outputs,
            },
        ));
        p.apply(&event(3, JobEventKind::JobFinished { result: JobResult::Success }));
        let sent = p.state_request();
        assert_eq!(sent.outputs.get("artifact").map(String::as_str), Some("x.tar"));
        p.state_acked(&sent, &pb::UpdateTaskResponse::default());
        assert_eq!(p.state_request().outputs.len(), 1, "not acknowledged yet");
        let response = pb::UpdateTaskResponse { state: None, sent_outputs: vec!["artifact".into()] };
        p.state_acked(&sent, &response);
        assert!(p.state_request().outputs.is_empty());
    }

    #[test]
    fn a_server_cancel_is_a_stop_verdict_until_the_job_is_finished() {
        let mut p = Progress::new(1, 1);
        let sent = p.state_request();
        let cancelled = pb::UpdateTaskResponse {
            state: Some(pb::TaskState { id: 1, result: pb::Result::Cancelled as i32, ..Default::default() }),
            sent_outputs: vec![],
        };
        assert_eq!(p.state_acked(&sent, &cancelled), Verdict::Stop(pb::Result::Cancelled));
        p.finish(JobResult::Cancelled, OffsetDateTime::UNIX_EPOCH);
        assert_eq!(p.state_acked(&sent, &cancelled), Verdict::Running);
    }

    #[test]
    fn rows_are_single_lines_of_bounded_size() {
        let mut p = Progress::new(1, 0);
        p.push_row(OffsetDateTime::UNIX_EPOCH, "a\nb\r\n");
        p.push_row(OffsetDateTime::UNIX_EPOCH, &"é".repeat(40_000));
        let rows = p.pending_contents();
        assert_eq!(rows[0], "a\\nb");
        assert!(rows[1].len() <= MAX_ROW_BYTES && rows[1].len() > MAX_ROW_BYTES - 2);
    }
}
