//! The in-process queue's delivery semantics.

use std::time::Duration;

use solstice_core::{JobQueue, JobRequest, MemoryQueue, StepCommand};

fn job(label: &str) -> JobRequest {
    JobRequest::new("j", vec![label.into()], vec![StepCommand::run("s", "true")])
}

#[tokio::test]
async fn jobs_are_routed_by_label() {
    let q = MemoryQueue::new();
    let mut linux = q.consume_jobs(&["linux-vm".into()], 1).await.expect("consumer");
    let mut omnios = q.consume_jobs(&["omnios".into()], 1).await.expect("consumer");
    let (a, b) = (job("omnios"), job("linux-vm"));
    q.publish_job(&a).await.expect("publish");
    q.publish_job(&b).await.expect("publish");
    let got = omnios.next().await.expect("omnios job");
    assert_eq!(got.job.id, a.id);
    got.acker.ack().await.expect("ack");
    let got = linux.next().await.expect("linux job");
    assert_eq!(got.job.id, b.id);
    got.acker.ack().await.expect("ack");
    assert_eq!(q.pending_jobs(), 0);
}

#[tokio::test]
async fn an_unsettled_or_requeued_job_is_redelivered() {
    let q = MemoryQueue::new();
    let mut c = q.consume_jobs(&["l".into()], 1).await.expect("consumer");
    let j = job("l");
    q.publish_job(&j).await.expect("publish");
    let first = c.next().await.expect("first");
    assert!(!first.redelivered);
    first.acker.nack(true, "try again").await.expect("nack");
    let second = c.next().await.expect("second");
    assert!(second.redelivered);
    drop(second); // its consumer "died" without settling
    let third = tokio::time::timeout(Duration::from_secs(1), c.next()).await.expect("redelivered").expect("third");
    assert_eq!(third.job.id, j.id);
    third.acker.nack(false, "poison").await.expect("dead-letter");
    assert_eq!(q.dead_letters(), vec![(j.id, "poison".to_owned())]);
    assert_eq!(q.pending_jobs(), 0);
}

#[tokio::test]
async fn cancellations_reach_every_consumer() {
    let q = MemoryQueue::new();
    let mut a = q.consume_cancels().await.expect("a");
    let mut b = q.consume_cancels().await.expect("b");
    let id = job("x").id;
    q.publish_cancel(id).await.expect("cancel");
    assert_eq!(a.next().await.expect("a"), id);
    assert_eq!(b.next().await.expect("b"), id);
}

/// Deliveries handed back together come back in the order they were published, as
/// RabbitMQ puts a requeued message back where it stood: a reporter that restarts
/// sees a job's events in order.
#[tokio::test]
async fn unsettled_deliveries_come_back_in_their_order() {
    use solstice_core::{JobEvent, JobEventKind, LogStream};

    let q = MemoryQueue::new();
    let j = job("l");
    let event = |seq: u64| JobEvent {
        job_id: j.id,
        attempt: 1,
        seq,
        at: time::OffsetDateTime::now_utc(),
        kind: JobEventKind::Log { step: None, stream: LogStream::System, line: format!("line {seq}") },
    };
    q.publish_events("src", &[event(1), event(2)]).await.expect("publish");
    q.publish_event("src", &event(3)).await.expect("publish");
    let mut reporter = q.consume_events("src").await.expect("consumer");
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(reporter.next().await.expect("event"));
    }
    // Settled as a dying reporter may leave them: the first one last.
    held.pop().expect("third").acker.nack(true, "reporter stopping").await.expect("nack");
    drop(held);
    q.publish_event("src", &event(4)).await.expect("publish");
    let mut seqs = Vec::new();
    for _ in 0..4 {
        let delivery = tokio::time::timeout(Duration::from_secs(1), reporter.next()).await.expect("in time").expect("event");
        seqs.push(delivery.event.seq);
        delivery.acker.ack().await.expect("ack");
    }
    assert_eq!(seqs, [1, 2, 3, 4]);

    let jobs: Vec<_> = (0..3).map(|_| job("l")).collect();
    for j in &jobs {
        q.publish_job(j).await.expect("publish");
    }
    let mut orchestrator = q.consume_jobs(&["l".into()], 3).await.expect("consumer");
    let mut taken = Vec::new();
    for _ in 0..3 {
        taken.push(orchestrator.next().await.expect("job"));
    }
    // Their orchestrator died: dropped unsettled, the first one first.
    drop(taken);
    for want in &jobs {
        let again = orchestrator.next().await.expect("redelivered");
        assert_eq!((again.job.id, again.redelivered), (want.id, true));
        again.acker.ack().await.expect("ack");
    }
}
