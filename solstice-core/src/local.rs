//! A [`JobSource`] over a fixed list of jobs: `solstice run`, examples and tests.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::{JobEvent, JobEventKind, JobId, JobRequest, JobResult, JobSource, ReportOutcome, SourceError, SourceMessage};

/// Hands out a list of jobs and passes their events to a channel.
///
/// By default jobs are handed out one at a time, each after the previous one finished
/// (as `solstice run` shows them); [`LocalSource::parallel`] hands them all out at once.
/// `next` returns `None` once every job has finished.
#[derive(Debug)]
pub struct LocalSource {
    name: String,
    parallel: bool,
    state: Mutex<LocalState>,
    changed: Notify,
    events: mpsc::Sender<JobEvent>,
}

#[derive(Debug, Default)]
struct LocalState {
    pending: VecDeque<JobRequest>,
    in_flight: HashSet<JobId>,
    results: HashMap<JobId, JobResult>,
}

impl LocalSource {
    /// A source named `name` for `jobs`, whose events go to `events`. Each job's
    /// `origin.source` is set to `name`.
    pub fn new(name: impl Into<String>, jobs: Vec<JobRequest>, events: mpsc::Sender<JobEvent>) -> Self {
        let name = name.into();
        let pending = jobs
            .into_iter()
            .map(|mut job| {
                job.origin.source = name.clone();
                job
            })
            .collect();
        Self {
            name,
            parallel: false,
            state: Mutex::new(LocalState { pending, ..LocalState::default() }),
            changed: Notify::new(),
            events,
        }
    }

    /// Hands out all jobs at once instead of one after another.
    #[must_use]
    pub fn parallel(mut self) -> Self {
        self.parallel = true;
        self
    }

    /// The results of the jobs that finished so far.
    pub fn results(&self) -> HashMap<JobId, JobResult> {
        self.lock().results.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LocalState> {
        // Each critical section is a single update of plain collections.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl JobSource for LocalSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn next(&self, cancel: &CancellationToken) -> Result<Option<SourceMessage>, SourceError> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = self.lock();
                if (self.parallel || state.in_flight.is_empty())
                    && let Some(job) = state.pending.pop_front()
                {
                    state.in_flight.insert(job.id);
                    return Ok(Some(SourceMessage::Job(Box::new(job))));
                }
                if state.pending.is_empty() && state.in_flight.is_empty() {
                    return Ok(None);
                }
            }
            tokio::select! {
                _ = changed => {}
                _ = cancel.cancelled() => return Ok(None),
            }
        }
    }

    async fn report(&self, event: &JobEvent) -> Result<ReportOutcome, SourceError> {
        if !self.lock().in_flight.contains(&event.job_id) {
            return Err(SourceError::UnknownJob(event.job_id));
        }
        let _ = self.events.send(event.clone()).await;
        if let JobEventKind::JobFinished { result } = event.kind {
            let mut state = self.lock();
            state.in_flight.remove(&event.job_id);
            state.results.insert(event.job_id, result);
            drop(state);
            self.changed.notify_waiters();
        }
        Ok(ReportOutcome::Continue)
    }
}
