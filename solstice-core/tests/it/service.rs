//! The runner-service loop's stop behaviour, with a source of the test's own, the
//! in-process queue and an engine running steps on this host.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use solstice_core::{
    Engine, HostExecutor, HostHypervisor, JobEvent, JobEventKind, JobId, JobRequest, JobResult, JobSource, MemoryQueue,
    NOT_STARTED_MESSAGE, ReportOutcome, RunnerService, Shutdown, SourceError, SourceMessage, StepCommand,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Hands out what the test pushes, records what is reported.
#[derive(Default)]
struct TestSource {
    pending: Mutex<VecDeque<SourceMessage>>,
    pushed: Notify,
    events: Mutex<Vec<JobEvent>>,
    reported: Notify,
    /// Whether `pause` is supported (and was called).
    pausable: bool,
    paused: AtomicBool,
    /// Jobs handed out by `next`.
    taken: AtomicUsize,
    refuse_open: bool,
    closed: AtomicBool,
}

impl TestSource {
    fn push(&self, message: SourceMessage) {
        self.pending.lock().expect("lock").push_back(message);
        self.pushed.notify_waiters();
    }

    fn push_job(&self, job: &JobRequest) {
        self.push(SourceMessage::Job(Box::new(job.clone())));
    }

    fn events_of(&self, id: JobId) -> Vec<JobEvent> {
        self.events.lock().expect("lock").iter().filter(|e| e.job_id == id).cloned().collect()
    }

    fn result_of(&self, id: JobId) -> Option<JobResult> {
        self.events_of(id).iter().find_map(|e| match e.kind {
            JobEventKind::JobFinished { result } => Some(result),
            _ => None,
        })
    }

    fn lines_of(&self, id: JobId) -> Vec<String> {
        self.events_of(id)
            .into_iter()
            .filter_map(|e| match e.kind {
                JobEventKind::Log { line, .. } => Some(line),
                _ => None,
            })
            .collect()
    }

    /// Waits until `check` holds for the reported events (10 s at most).
    async fn wait_for(&self, what: &str, check: impl Fn(&[JobEvent]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let reported = self.reported.notified();
            if check(&self.events.lock().expect("lock")) {
                return;
            }
            if tokio::time::timeout_at(deadline, reported).await.is_err() {
                panic!("timed out waiting for {what}; events: {:#?}", self.events.lock().expect("lock"));
            }
        }
    }
}

#[async_trait]
impl JobSource for TestSource {
    fn name(&self) -> &str {
        "test"
    }

    async fn next(&self, cancel: &CancellationToken) -> Result<Option<SourceMessage>, SourceError> {
        loop {
            let pushed = self.pushed.notified();
            {
                let mut pending = self.pending.lock().expect("lock");
                let paused = self.paused.load(Ordering::SeqCst);
                // As a forge's source: told to stop, it takes no new job.
                if cancel.is_cancelled() && !paused {
                    return Ok(None);
                }
                // A paused source hands out only cancellations.
                let position = pending.iter().position(|m| !paused || matches!(m, SourceMessage::Cancel(_)));
                if let Some(message) = position.and_then(|i| pending.remove(i)) {
                    if matches!(message, SourceMessage::Job(_)) {
                        self.taken.fetch_add(1, Ordering::SeqCst);
                    }
                    return Ok(Some(message));
                }
            }
            tokio::select! {
                () = pushed => {}
                () = cancel.cancelled() => return Ok(None),
            }
        }
    }

    async fn report(&self, event: &JobEvent) -> Result<ReportOutcome, SourceError> {
        self.events.lock().expect("lock").push(event.clone());
        self.reported.notify_waiters();
        Ok(ReportOutcome::Continue)
    }

    async fn open(&self) -> Result<(), SourceError> {
        if self.refuse_open { Err(SourceError::Unauthorized(None)) } else { Ok(()) }
    }

    fn pause(&self) -> bool {
        self.paused.store(true, Ordering::SeqCst);
        self.pausable
    }

    async fn close(&self, _limit: Duration) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

fn job(name: &str, script: &str) -> JobRequest {
    let mut job = JobRequest::new(name, vec!["host".into()], vec![StepCommand::run("step", script)]);
    job.origin.source = "test".into();
    job
}

fn engine(capacity: usize) -> Engine {
    Engine::builder().hypervisor(HostHypervisor::new()).executor(HostExecutor::new()).capacity(capacity).build().expect("engine")
}

/// A service over `source` with an engine of `capacity`, running until it returns.
fn start(
    source: &Arc<TestSource>,
    capacity: usize,
    grace: Duration,
    shutdown: &Shutdown,
) -> tokio::task::JoinHandle<Result<(), solstice_core::ServiceError>> {
    let service = RunnerService::builder(Arc::new(MemoryQueue::new()))
        .source(source.clone())
        .engine(engine(capacity), vec!["host".into()])
        .grace(grace)
        .report_limit(Duration::from_secs(10))
        .build();
    tokio::spawn(service.run(shutdown.clone()))
}

fn started(id: JobId) -> impl Fn(&[JobEvent]) -> bool {
    move |events| events.iter().any(|e| e.job_id == id && matches!(e.kind, JobEventKind::StepStarted { .. }))
}

async fn ended(service: tokio::task::JoinHandle<Result<(), solstice_core::ServiceError>>) {
    tokio::time::timeout(Duration::from_secs(20), service)
        .await
        .expect("the service stops")
        .expect("join")
        .expect("the service stops without an error");
}

#[tokio::test]
async fn a_job_running_at_the_first_stop_finishes_and_is_reported_and_no_new_job_is_taken() {
    let source = Arc::new(TestSource::default());
    let shutdown = Shutdown::new();
    let first = job("first", "sleep 1; echo first done");
    source.push_job(&first);
    let service = start(&source, 2, Duration::from_secs(60), &shutdown);
    source.wait_for("the first job to start", started(first.id)).await;

    shutdown.drain();
    let second = job("second", "echo second");
    source.push_job(&second);
    ended(service).await;

    assert_eq!(source.result_of(first.id), Some(JobResult::Success));
    assert!(source.lines_of(first.id).contains(&"first done".to_owned()), "{:?}", source.lines_of(first.id));
    assert_eq!(source.taken.load(Ordering::SeqCst), 1, "no job is taken after the first stop");
    assert!(source.events_of(second.id).is_empty());
    assert!(source.closed.load(Ordering::SeqCst), "the source is closed at the end");
}

#[tokio::test]
async fn a_second_stop_cancels_the_running_job_and_it_is_reported_cancelled() {
    let source = Arc::new(TestSource::default());
    let shutdown = Shutdown::new();
    let long = job("long", "echo started; sleep 60");
    source.push_job(&long);
    let service = start(&source, 1, Duration::from_secs(60), &shutdown);
    source.wait_for("the job to start", started(long.id)).await;

    shutdown.drain();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(source.result_of(long.id), None, "the first stop lets the job run");
    let asked = std::time::Instant::now();
    shutdown.abort();
    ended(service).await;

    assert_eq!(source.result_of(long.id), Some(JobResult::Cancelled));
    assert!(asked.elapsed() < Duration::from_secs(15), "cancelled promptly, not after its 60 s: {:?}", asked.elapsed());
}

#[tokio::test]
async fn the_grace_period_ends_with_the_running_jobs_cancelled() {
    let source = Arc::new(TestSource::default());
    let shutdown = Shutdown::new();
    let long = job("long", "sleep 60");
    source.push_job(&long);
    let service = start(&source, 1, Duration::from_millis(500), &shutdown);
    source.wait_for("the job to start", started(long.id)).await;

    let drained = std::time::Instant::now();
    shutdown.drain();
    ended(service).await;

    assert_eq!(source.result_of(long.id), Some(JobResult::Cancelled));
    let took = drained.elapsed();
    assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(15), "cancelled after the grace period: {took:?}");
}

#[tokio::test]
async fn jobs_that_never_started_are_reported_failed_when_the_engine_stops() {
    let source = Arc::new(TestSource::default());
    let shutdown = Shutdown::new();
    let (running, waiting) = (job("running", "sleep 60"), job("waiting", "echo never"));
    source.push_job(&running);
    source.push_job(&waiting);
    // Capacity 1: the second job stays in the queue.
    let service = start(&source, 1, Duration::from_secs(60), &shutdown);
    source.wait_for("the first job to start", started(running.id)).await;
    assert_eq!(source.taken.load(Ordering::SeqCst), 2, "both jobs were taken from the forge");

    shutdown.abort();
    ended(service).await;

    assert_eq!(source.result_of(running.id), Some(JobResult::Cancelled));
    assert_eq!(source.result_of(waiting.id), Some(JobResult::Failure));
    assert_eq!(source.lines_of(waiting.id), [NOT_STARTED_MESSAGE]);
    let seqs: Vec<u64> = source.events_of(waiting.id).iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2], "a well-formed attempt");
}

#[tokio::test]
async fn a_pausable_source_still_passes_the_forges_cancellations_while_draining() {
    let source = Arc::new(TestSource { pausable: true, ..TestSource::default() });
    let shutdown = Shutdown::new();
    let long = job("long", "sleep 60");
    source.push_job(&long);
    let service = start(&source, 1, Duration::from_secs(60), &shutdown);
    source.wait_for("the job to start", started(long.id)).await;

    shutdown.drain();
    let later = job("later", "echo later");
    source.push_job(&later);
    // The forge cancels the running job during the grace period.
    source.push(SourceMessage::Cancel(long.id));
    ended(service).await;

    assert!(source.paused.load(Ordering::SeqCst));
    assert_eq!(source.result_of(long.id), Some(JobResult::Cancelled));
    assert_eq!(source.taken.load(Ordering::SeqCst), 1, "the paused source handed out no new job");
    assert!(source.events_of(later.id).is_empty());
}

#[tokio::test]
async fn a_source_with_no_more_jobs_ends_the_service_once_they_are_reported() {
    let (events, mut lines) = tokio::sync::mpsc::channel(64);
    let jobs = vec![job("one", "echo one"), job("two", "exit 3")];
    let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    let source = Arc::new(solstice_core::LocalSource::new("local", jobs, events));
    let service = RunnerService::builder(Arc::new(MemoryQueue::new()))
        .source(source.clone())
        .engine(engine(1), vec!["host".into()])
        .build();
    tokio::time::timeout(Duration::from_secs(20), service.run(Shutdown::new()))
        .await
        .expect("the service ends on its own")
        .expect("without an error");
    let results = source.results();
    assert_eq!((results.get(&ids[0]), results.get(&ids[1])), (Some(&JobResult::Success), Some(&JobResult::Failure)));
    let mut finals = 0;
    while let Ok(event) = lines.try_recv() {
        finals += usize::from(event.is_final());
    }
    assert_eq!(finals, 2);
}

#[tokio::test]
async fn a_source_the_forge_refuses_stops_the_service_before_anything_runs() {
    let source = Arc::new(TestSource { refuse_open: true, ..TestSource::default() });
    source.push_job(&job("never", "echo never"));
    let err = start(&source, 1, Duration::from_secs(1), &Shutdown::new())
        .await
        .expect("join")
        .expect_err("refused");
    assert!(err.is_unauthorized(), "{err:?}");
    assert_eq!(source.taken.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_orchestrator_without_sources_serves_until_the_stop_and_lets_its_job_finish() {
    let queue = Arc::new(MemoryQueue::new());
    let (events, mut lines) = tokio::sync::mpsc::channel(64);
    let quick = job("quick", "sleep 1; echo quick done");
    let source = Arc::new(solstice_core::LocalSource::new("test", vec![quick.clone()], events));
    // The runner side feeds the queue; the orchestrator side has no source of its own.
    let runner = tokio::spawn(solstice_core::serve_source(source.clone(), queue.clone(), CancellationToken::new()));
    let shutdown = Shutdown::new();
    let orchestrator = RunnerService::builder(queue.clone()).engine(engine(1), vec!["host".into()]).build();
    let orchestrator = tokio::spawn(orchestrator.run(shutdown.clone()));
    // Stop the orchestrator as soon as the job started: it still finishes.
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), lines.recv()).await.expect("events").expect("open");
        if matches!(event.kind, JobEventKind::StepStarted { .. }) {
            break;
        }
    }
    shutdown.drain();
    ended(orchestrator).await;
    tokio::time::timeout(Duration::from_secs(10), runner).await.expect("the runner side ends").expect("join").expect("served");
    assert_eq!(source.results().get(&quick.id), Some(&JobResult::Success));
}
