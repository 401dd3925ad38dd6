//! Scale-out harness for Solstice CI: a job plan whose results are known in advance,
//! and a [`JobSource`] that hands the plan out and records what comes back.
//!
//! The binaries are the parts of a multi-process deployment (`scale-submitter`, a
//! runner service with this source; `scale-orchestrator`, an engine with the host
//! runner), and `queue_bench` measures queue throughput. The tests in `tests/` start
//! them against RabbitMQ and PostgreSQL (see `.ci/services.sh`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use solstice_core::{
    JobEvent, JobEventKind, JobId, JobRequest, JobResult, JobSource, ReportOutcome, SourceError, SourceMessage,
    StepCommand,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The label the plan's jobs run on (the host runner's).
pub const LABEL: &str = "host";

/// Job `index` of run `run`: prints a marker, sleeps, and exits with a code that
/// [`expected_result`] predicts. Its id is stable, derived from the run and index.
pub fn plan_job(run: &str, index: usize, sleep_ms: u64) -> JobRequest {
    let code = if expected_result(index) == JobResult::Failure { 3 } else { 0 };
    let sleep = format!("{}.{:03}", sleep_ms / 1000, sleep_ms % 1000);
    let script = format!("echo {}\nsleep {sleep}\nexit {code}\n", marker(index));
    let mut job = JobRequest::new(format!("scale job {index}"), vec![LABEL.to_owned()], vec![StepCommand::run("work", script)]);
    job.id = JobId::from_external(run, &index.to_string());
    job.origin.source = run.to_owned();
    job.origin.external_id = index.to_string();
    job
}

/// The line job `index` prints.
pub fn marker(index: usize) -> String {
    format!("marker-{index}")
}

/// Every seventh job fails; the others succeed.
pub fn expected_result(index: usize) -> JobResult {
    if index % 7 == 3 { JobResult::Failure } else { JobResult::Success }
}

/// What the source saw of one job.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JobOutcome {
    /// The job's index in the plan.
    pub index: usize,
    /// Its id.
    pub id: String,
    /// Every `JobFinished` received, as (attempt, result).
    pub finishes: Vec<(u32, String)>,
    /// Every `Accepted` received, as (attempt, orchestrator).
    pub accepted: Vec<(u32, String)>,
    /// Whether the finishing attempt logged the job's marker.
    pub marker_seen: bool,
    /// Distinct events received.
    pub events: usize,
    /// Events received again (same attempt and sequence number), which a reporter
    /// must tolerate after a broker restart; they are not counted above.
    pub duplicates: usize,
}

/// What a submitter reports when it exits.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// One entry per planned job, by index.
    pub jobs: Vec<JobOutcome>,
    /// From the first job handed out until every job had finished.
    pub elapsed_ms: u64,
}

#[derive(Debug, Default)]
struct State {
    pending: VecDeque<JobRequest>,
    outcomes: BTreeMap<JobId, JobOutcome>,
    /// Marker lines seen per (job, attempt).
    markers: BTreeMap<(JobId, u32), bool>,
    /// (job, attempt, seq) of every event seen.
    seen: std::collections::HashSet<(JobId, u32, u64)>,
    finished: usize,
}

/// Hands out a plan of jobs and records their events.
#[derive(Debug)]
pub struct PlanSource {
    name: String,
    total: usize,
    state: Mutex<State>,
    progress: Notify,
}

impl PlanSource {
    /// A source named `run` for `jobs` plan jobs.
    pub fn new(run: &str, jobs: usize, sleep_ms: u64) -> Self {
        let pending: VecDeque<_> = (0..jobs).map(|i| plan_job(run, i, sleep_ms)).collect();
        let outcomes = pending
            .iter()
            .enumerate()
            .map(|(index, job)| (job.id, JobOutcome { index, id: job.id.to_string(), ..JobOutcome::default() }))
            .collect();
        Self {
            name: run.to_owned(),
            total: jobs,
            state: Mutex::new(State { pending, outcomes, ..State::default() }),
            progress: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many jobs have finished at least once.
    pub fn finished(&self) -> usize {
        self.lock().finished
    }

    /// Waits until every job has finished.
    pub async fn all_finished(&self) {
        loop {
            let notified = self.progress.notified();
            if self.finished() >= self.total {
                return;
            }
            notified.await;
        }
    }

    /// The report, by job index.
    pub fn report(&self, elapsed_ms: u64) -> Report {
        let mut jobs: Vec<_> = self.lock().outcomes.values().cloned().collect();
        jobs.sort_by_key(|o| o.index);
        Report { jobs, elapsed_ms }
    }
}

#[async_trait]
impl JobSource for PlanSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn next(&self, cancel: &CancellationToken) -> Result<Option<SourceMessage>, SourceError> {
        if let Some(job) = self.lock().pending.pop_front() {
            return Ok(Some(SourceMessage::Job(Box::new(job))));
        }
        // Everything handed out: wait for the end (returning `None` would stop the
        // reporting of events too).
        cancel.cancelled().await;
        Ok(None)
    }

    async fn report(&self, event: &JobEvent) -> Result<ReportOutcome, SourceError> {
        let mut state = self.lock();
        let state = &mut *state;
        let Some(outcome) = state.outcomes.get_mut(&event.job_id) else {
            return Err(SourceError::UnknownJob(event.job_id));
        };
        if !state.seen.insert((event.job_id, event.attempt, event.seq)) {
            outcome.duplicates += 1;
            return Ok(ReportOutcome::Continue);
        }
        outcome.events += 1;
        match &event.kind {
            JobEventKind::Accepted { orchestrator } => outcome.accepted.push((event.attempt, orchestrator.clone())),
            JobEventKind::Log { line, .. } if *line == marker(outcome.index) => {
                state.markers.insert((event.job_id, event.attempt), true);
            }
            JobEventKind::JobFinished { result } => {
                if outcome.finishes.is_empty() {
                    state.finished += 1;
                    self.progress.notify_waiters();
                }
                outcome.finishes.push((event.attempt, result.as_str().to_owned()));
                outcome.marker_seen = state.markers.contains_key(&(event.job_id, event.attempt));
            }
            _ => {}
        }
        Ok(ReportOutcome::Continue)
    }
}

/// Installs a `tracing` subscriber writing to stderr, filtered by `RUST_LOG`
/// (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
