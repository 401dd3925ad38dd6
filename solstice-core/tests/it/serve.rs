//! The whole embedded pipeline: a source, the in-process queue, the engine, a store.

use std::sync::Arc;

use solstice_core::testing::{CountingHypervisor, ScriptedExecutor};
use solstice_core::{
    Engine, JobEventKind, JobQueue, JobRequest, JobResult, JobState, LocalSource, MemoryQueue,
    StepCommand, Store, serve_source,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn jobs_flow_from_a_source_through_the_queue_to_the_engine_and_back() {
    let store = Store::connect("sqlite::memory:").await.expect("store");
    let hv = CountingHypervisor::new();
    let engine = Engine::builder()
        .hypervisor(hv.clone())
        .executor(ScriptedExecutor::new())
        .capacity(3)
        .store(store.clone())
        .build()
        .expect("engine");
    let queue: Arc<dyn JobQueue> = Arc::new(MemoryQueue::new());
    let jobs: Vec<JobRequest> = (0..20)
        .map(|i| {
            let script = if i % 5 == 4 { "echo failing\nexit 2".to_owned() } else { format!("echo job {i}") };
            JobRequest::new(format!("job {i}"), vec!["fake".into()], vec![StepCommand::run("s", script)])
        })
        .collect();
    let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
    let (tx, mut rx) = mpsc::channel(1024);
    let source = Arc::new(LocalSource::new("local", jobs, tx).parallel());

    let stop = CancellationToken::new();
    let orchestrator = {
        let engine = engine.clone();
        let queue = queue.clone();
        let stop = stop.clone();
        tokio::spawn(async move { engine.serve(queue, &["fake".into()], stop, CancellationToken::new()).await })
    };
    let collect = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
        events
    });
    serve_source(source.clone(), queue.clone(), CancellationToken::new()).await.expect("serve source");
    stop.cancel();
    orchestrator.await.expect("join").expect("serve");
    drop(source);
    let events = collect.await.expect("events");

    let finished: Vec<_> = events.iter().filter(|e| e.is_final()).collect();
    assert_eq!(finished.len(), 20, "every job finishes exactly once");
    for (i, id) in ids.iter().enumerate() {
        let expected = if i % 5 == 4 { JobResult::Failure } else { JobResult::Success };
        let record = store.job(*id).await.expect("query").expect("recorded");
        assert_eq!(record.state, JobState::Finished(expected), "job {i}");
        assert_eq!(record.attempt, 1);
        let line = format!("job {i}");
        if expected == JobResult::Success {
            assert!(events.iter().any(|e| e.job_id == *id && matches!(&e.kind, JobEventKind::Log { line: l, .. } if *l == line)));
        }
        let seqs: Vec<u64> = events.iter().filter(|e| e.job_id == *id).map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "events of job {i} in order, none lost");
    }
    assert_eq!((hv.provisioned(), hv.destroyed()), (20, 20));
    let metrics = engine.metrics();
    assert_eq!((metrics.finished(JobResult::Success), metrics.finished(JobResult::Failure), metrics.running()), (16, 4, 0));
    assert!(metrics.render().contains("solstice_jobs_accepted_total 20\n"));
}

/// A job redelivered after it finished (its orchestrator died between recording the end
/// and acknowledging) is not run again; its final event is sent once more instead.
#[tokio::test]
async fn a_redelivered_finished_job_is_not_run_again_and_its_final_event_is_resent() {
    use solstice_core::JobQueue as _;
    let store = Store::connect("sqlite::memory:").await.expect("store");
    let hv = CountingHypervisor::new();
    let engine = Engine::builder()
        .hypervisor(hv.clone())
        .executor(ScriptedExecutor::new())
        .store(store.clone())
        .build()
        .expect("engine");
    let queue = Arc::new(MemoryQueue::new());
    let stop = CancellationToken::new();
    let serving = {
        let (engine, queue, stop) = (engine.clone(), queue.clone(), stop.clone());
        tokio::spawn(async move { engine.serve(queue, &["fake".into()], stop, CancellationToken::new()).await })
    };
    let mut job = JobRequest::new("once", vec!["fake".into()], vec![StepCommand::run("s", "echo hi")]);
    job.origin.source = "src".into();
    let mut events = queue.consume_events("src").await.expect("events");
    let mut finals = Vec::new();
    for _ in 0..2 {
        queue.publish_job(&job).await.expect("publish");
        loop {
            let d = tokio::time::timeout(std::time::Duration::from_secs(10), events.next()).await.expect("event").expect("event");
            let event = d.event.clone();
            d.acker.ack().await.expect("ack");
            if event.is_final() {
                finals.push(event);
                break;
            }
        }
    }
    stop.cancel();
    serving.await.expect("join").expect("serve");
    assert_eq!(hv.provisioned(), 1, "the job ran twice");
    assert_eq!(finals.len(), 2);
    assert_eq!((finals[0].attempt, finals[0].seq), (finals[1].attempt, finals[1].seq), "the resent event is the same event");
    assert_eq!(finals[1].kind, JobEventKind::JobFinished { result: JobResult::Success });
}

/// A job the forge cancelled while it still waited in the queue ends as cancelled
/// when it is delivered, without a machine.
#[tokio::test]
async fn a_job_cancelled_while_queued_is_reported_cancelled_without_running() {
    use solstice_core::JobQueue as _;
    let hv = CountingHypervisor::new();
    let engine = Engine::builder().hypervisor(hv.clone()).executor(ScriptedExecutor::new()).build().expect("engine");
    let queue = Arc::new(MemoryQueue::new());
    let stop = CancellationToken::new();
    let serving = {
        let (engine, queue, stop) = (engine.clone(), queue.clone(), stop.clone());
        tokio::spawn(async move { engine.serve(queue, &["fake".into()], stop, CancellationToken::new()).await })
    };
    let mut job = JobRequest::new("late", vec!["fake".into()], vec![StepCommand::run("s", "echo must not run")]);
    job.origin.source = "src".into();
    let mut events = queue.consume_events("src").await.expect("events");
    // The cancellation reaches the engine before the job does, as when the forge
    // cancels a job still waiting in the queue. Let the engine open its cancel
    // consumer first.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    queue.publish_cancel(job.id).await.expect("cancel");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    queue.publish_job(&job).await.expect("publish");
    let result = loop {
        let d = tokio::time::timeout(std::time::Duration::from_secs(10), events.next()).await.expect("event").expect("event");
        let kind = d.event.kind.clone();
        d.acker.ack().await.expect("ack");
        if let JobEventKind::JobFinished { result } = kind {
            break result;
        }
    };
    stop.cancel();
    serving.await.expect("join").expect("serve");
    assert_eq!(result, JobResult::Cancelled);
    assert_eq!(hv.provisioned(), 0, "a machine was made for a cancelled job");
}

#[tokio::test]
async fn serving_keeps_the_queue_depth_metric_current() {
    use std::time::Duration;
    // One job at a time, each held up in provisioning: the others wait in the queue.
    let engine = Engine::builder()
        .hypervisor(CountingHypervisor::new().with_delay(Duration::from_millis(700)))
        .executor(ScriptedExecutor::new())
        .queue_depth_interval(Duration::from_millis(20))
        .build()
        .expect("engine");
    let queue = Arc::new(MemoryQueue::new());
    let job = || {
        let mut job = JobRequest::new("wait", vec!["fake".into()], vec![StepCommand::run("s", "true")]);
        job.origin.source = "src".into();
        job
    };
    queue.publish_job(&job()).await.expect("publish");
    let stop = CancellationToken::new();
    let serving = {
        let (engine, queue, stop) = (engine.clone(), queue.clone(), stop.clone());
        tokio::spawn(async move { engine.serve(queue, &["fake".into()], stop, CancellationToken::new()).await })
    };
    let depth = |engine: &Engine| {
        engine.metrics().render().lines().find_map(|l| l.strip_prefix("solstice_queue_depth ").map(str::to_owned))
    };
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while engine.metrics().running() == 0 {
        assert!(tokio::time::Instant::now() < until, "the first job never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    queue.publish_job(&job()).await.expect("publish");
    queue.publish_job(&job()).await.expect("publish");
    while depth(&engine).as_deref() != Some("2") {
        assert!(tokio::time::Instant::now() < until, "depth never showed the two waiting jobs: {:?}", depth(&engine));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    while depth(&engine).as_deref() != Some("0") || engine.metrics().running() > 0 || queue.pending_jobs() > 0 {
        assert!(tokio::time::Instant::now() < until, "depth never went back to 0: {:?}", depth(&engine));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    serving.await.expect("join").expect("serve");
}
