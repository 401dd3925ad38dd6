//! The `JobQueue` contract, asserted the same way on every backend.

use solstice_core::{JobEvent, JobEventKind, JobId, JobRequest, LogStream, StepCommand};
use time::OffsetDateTime;

use crate::support::{QueueFixture, completes_soon, within};

fn job(label: &str) -> JobRequest {
    JobRequest::new(format!("job on {label}"), vec![label.to_owned()], vec![StepCommand::run("hi", "echo hi")])
}

fn event(job_id: JobId, seq: u64) -> JobEvent {
    JobEvent {
        job_id,
        attempt: 1,
        seq,
        at: OffsetDateTime::now_utc(),
        kind: JobEventKind::Log { step: Some(0), stream: LogStream::Stdout, line: format!("line {seq}") },
    }
}

fn labels(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

pub async fn routes_jobs_by_label(fx: &QueueFixture) {
    let h = fx.open().await;
    let mut alpha = h.queue.consume_jobs(&labels(&["alpha"]), 8).await.expect("consume alpha");
    let mut beta = h.queue.consume_jobs(&labels(&["beta"]), 8).await.expect("consume beta");
    let (a, b) = (job("alpha"), job("beta"));
    h.queue.publish_job(&b).await.expect("publish beta");
    h.queue.publish_job(&a).await.expect("publish alpha");
    let got = within("the alpha job", alpha.next()).await.expect("alpha delivery");
    assert_eq!(got.job.id, a.id);
    assert_eq!(got.job, a, "the job arrives whole");
    assert!(!got.redelivered);
    got.acker.ack().await.expect("ack");
    let got = within("the beta job", beta.next()).await.expect("beta delivery");
    assert_eq!(got.job.id, b.id);
    got.acker.ack().await.expect("ack");
    assert!(completes_soon(alpha.next()).await.is_none(), "alpha got a second job");
    h.shutdown().await;
}

pub async fn routes_by_the_first_specific_label(fx: &QueueFixture) {
    let h = fx.open().await;
    let mut omnios = h.queue.consume_jobs(&labels(&["alpha", "omnios"]), 8).await.expect("consume");
    let j = JobRequest::new("generic first", labels(&["self-hosted", "x64", "omnios"]), vec![]);
    h.queue.publish_job(&j).await.expect("publish");
    let got = within("the omnios job", omnios.next()).await.expect("delivery");
    assert_eq!(got.job.id, j.id);
    got.acker.ack().await.expect("ack");
    h.shutdown().await;
}

pub async fn keeps_jobs_published_before_any_consumer(fx: &QueueFixture) {
    let publisher = fx.open().await;
    let jobs: Vec<_> = (0..5).map(|_| job("alpha")).collect();
    for j in &jobs {
        publisher.queue.publish_job(j).await.expect("publish");
    }
    publisher.shutdown().await;
    let consumer = fx.open().await;
    let mut alpha = consumer.queue.consume_jobs(&labels(&["alpha"]), 8).await.expect("consume");
    let mut seen = Vec::new();
    for _ in 0..jobs.len() {
        let got = within("a job published earlier", alpha.next()).await.expect("delivery");
        seen.push(got.job.id);
        got.acker.ack().await.expect("ack");
    }
    assert_eq!(seen, jobs.iter().map(|j| j.id).collect::<Vec<_>>(), "jobs come in publish order");
    consumer.shutdown().await;
}

pub async fn counts_the_jobs_waiting_per_label(fx: &QueueFixture) {
    let h = fx.open().await;
    for label in ["alpha", "alpha", "alpha", "beta", "beta"] {
        h.queue.publish_job(&job(label)).await.expect("publish");
    }
    let waiting = |names: &'static [&'static str]| {
        let queue = h.queue.clone();
        async move { queue.waiting_jobs(&labels(names)).await.expect("count") }
    };
    assert_eq!(waiting(&["alpha"]).await, Some(3));
    assert_eq!(waiting(&["alpha", "beta"]).await, Some(5));
    assert_eq!(waiting(&["gamma"]).await, Some(0), "a label nobody published to has none waiting");
    h.shutdown().await;
}

pub async fn redelivers_requeued_jobs_flagged(fx: &QueueFixture) {
    let h = fx.open().await;
    let mut alpha = h.queue.consume_jobs(&labels(&["alpha"]), 8).await.expect("consume");
    let j = job("alpha");
    h.queue.publish_job(&j).await.expect("publish");
    let first = within("the job", alpha.next()).await.expect("delivery");
    assert!(!first.redelivered);
    first.acker.nack(true, "try again").await.expect("nack");
    let again = within("the requeued job", alpha.next()).await.expect("redelivery");
    assert_eq!(again.job.id, j.id);
    assert!(again.redelivered, "a requeued job is flagged as redelivered");
    again.acker.ack().await.expect("ack");
    assert!(completes_soon(alpha.next()).await.is_none(), "an acknowledged job came back");
    h.shutdown().await;
}

pub async fn redelivers_jobs_dropped_unsettled(fx: &QueueFixture) {
    let h = fx.open().await;
    let mut alpha = h.queue.consume_jobs(&labels(&["alpha"]), 8).await.expect("consume");
    let j = job("alpha");
    h.queue.publish_job(&j).await.expect("publish");
    let first = within("the job", alpha.next()).await.expect("delivery");
    drop(first);
    let again = within("the dropped job", alpha.next()).await.expect("redelivery");
    assert_eq!(again.job.id, j.id);
    assert!(again.redelivered);
    again.acker.ack().await.expect("ack");
    h.shutdown().await;
}

pub async fn hands_a_dead_consumers_jobs_to_another(fx: &QueueFixture) {
    let dying = fx.open().await;
    let survivor = fx.open().await;
    let mut doomed = dying.queue.consume_jobs(&labels(&["alpha"]), 1).await.expect("consume");
    let j = job("alpha");
    survivor.queue.publish_job(&j).await.expect("publish");
    let held = within("the job", doomed.next()).await.expect("delivery");
    assert_eq!(held.job.id, j.id);
    // The consumer's process ends with the job unsettled.
    dying.shutdown().await;
    drop(held);
    drop(doomed);
    let mut alpha = survivor.queue.consume_jobs(&labels(&["alpha"]), 1).await.expect("consume");
    let got = within("the dead consumer's job", alpha.next()).await.expect("redelivery");
    assert_eq!(got.job.id, j.id);
    assert!(got.redelivered);
    got.acker.ack().await.expect("ack");
    survivor.shutdown().await;
}

pub async fn forgets_acknowledged_jobs(fx: &QueueFixture) {
    let h = fx.open().await;
    let mut alpha = h.queue.consume_jobs(&labels(&["alpha"]), 8).await.expect("consume");
    let j = job("alpha");
    h.queue.publish_job(&j).await.expect("publish");
    within("the job", alpha.next()).await.expect("delivery").acker.ack().await.expect("ack");
    drop(alpha);
    h.shutdown().await;
    let later = fx.open().await;
    let mut alpha = later.queue.consume_jobs(&labels(&["alpha"]), 8).await.expect("consume");
    assert!(completes_soon(alpha.next()).await.is_none(), "an acknowledged job was delivered again");
    later.shutdown().await;
}

pub async fn dead_letters_jobs_with_the_reason(fx: &QueueFixture) {
    let h = fx.open().await;
    let mut alpha = h.queue.consume_jobs(&labels(&["alpha"]), 8).await.expect("consume");
    let (poison, fine) = (job("alpha"), job("alpha"));
    h.queue.publish_job(&poison).await.expect("publish");
    h.queue.publish_job(&fine).await.expect("publish");
    let got = within("the poison job", alpha.next()).await.expect("delivery");
    assert_eq!(got.job.id, poison.id);
    got.acker.nack(false, "no image for this label").await.expect("nack");
    let got = within("the next job", alpha.next()).await.expect("delivery");
    assert_eq!(got.job.id, fine.id, "a dead-lettered job is not delivered again");
    got.acker.ack().await.expect("ack");
    let dead = fx.dead_letters().await;
    assert_eq!(dead, vec![(poison.id, "no image for this label".to_owned())]);
    h.shutdown().await;
}

pub async fn routes_events_by_source_in_order(fx: &QueueFixture) {
    let h = fx.open().await;
    let (one, two) = (JobId::new(), JobId::new());
    for seq in 1..=40 {
        h.queue.publish_event("r1", &event(one, seq)).await.expect("publish");
        if seq % 4 == 0 {
            h.queue.publish_event("r2", &event(two, seq / 4)).await.expect("publish");
        }
    }
    let mut r1 = h.queue.consume_events("r1").await.expect("consume r1");
    for seq in 1..=40 {
        let got = within("an r1 event", r1.next()).await.expect("event");
        assert_eq!((got.event.job_id, got.event.seq), (one, seq), "r1 events in publish order");
        assert_eq!(got.event, event(one, seq).with_at(got.event.at), "the event arrives whole");
        got.acker.ack().await.expect("ack");
    }
    assert!(completes_soon(r1.next()).await.is_none(), "r1 received another source's event");
    let mut r2 = h.queue.consume_events("r2").await.expect("consume r2");
    for seq in 1..=10 {
        let got = within("an r2 event", r2.next()).await.expect("event");
        assert_eq!((got.event.job_id, got.event.seq), (two, seq));
        got.acker.ack().await.expect("ack");
    }
    h.shutdown().await;
}

pub async fn delivers_a_batch_of_events_one_by_one_in_order(fx: &QueueFixture) {
    let h = fx.open().await;
    let (one, two) = (JobId::new(), JobId::new());
    let first: Vec<_> = (1..=5).map(|seq| event(one, seq)).collect();
    h.queue.publish_events("r1", &first).await.expect("publish a batch");
    // A run of two jobs' events, as a caller may hand over.
    let mixed = vec![event(two, 1), event(two, 2), event(one, 6)];
    h.queue.publish_events("r1", &mixed).await.expect("publish a mixed run");
    let mut r1 = h.queue.consume_events("r1").await.expect("consume");
    let mut got = Vec::new();
    for _ in 0..8 {
        let delivery = within("an event of a batch", r1.next()).await.expect("event");
        got.push((delivery.event.job_id, delivery.event.seq));
        delivery.acker.ack().await.expect("ack");
    }
    let want: Vec<_> = first.iter().chain(&mixed).map(|e| (e.job_id, e.seq)).collect();
    assert_eq!(got, want, "every event once, in publish order");
    assert!(completes_soon(r1.next()).await.is_none(), "an acknowledged batch came back");
    h.shutdown().await;
}

pub async fn a_batch_is_kept_until_every_event_in_it_is_acknowledged(fx: &QueueFixture) {
    let orchestrator = fx.open().await;
    let id = JobId::new();
    let batch: Vec<_> = (1..=4).map(|seq| event(id, seq)).collect();
    orchestrator.queue.publish_events("r1", &batch).await.expect("publish");
    let source = fx.open().await;
    let mut r1 = source.queue.consume_events("r1").await.expect("consume");
    // The runner service reports two events of the batch, then dies.
    for seq in 1..=2 {
        let got = within("an event", r1.next()).await.expect("event");
        assert_eq!(got.event.seq, seq);
        got.acker.ack().await.expect("ack");
    }
    let held = within("event 3", r1.next()).await.expect("event");
    source.shutdown().await;
    drop(held);
    drop(r1);
    let restarted = fx.open().await;
    let mut r1 = restarted.queue.consume_events("r1").await.expect("consume again");
    let mut seqs = Vec::new();
    while let Some(Ok(got)) = completes_soon(r1.next()).await {
        seqs.push(got.event.seq);
        got.acker.ack().await.expect("ack");
    }
    // Events 1 and 2 may come again (a batch is one message); none may be missing,
    // and the order holds.
    assert!(seqs.ends_with(&[3, 4]), "the unreported events came back in order: {seqs:?}");
    assert!(seqs == [3, 4] || seqs == [1, 2, 3, 4], "got {seqs:?}");
    restarted.shutdown().await;
    orchestrator.shutdown().await;
}

pub async fn keeps_unacknowledged_events_across_a_source_restart(fx: &QueueFixture) {
    let orchestrator = fx.open().await;
    let id = JobId::new();
    for seq in 1..=6 {
        orchestrator.queue.publish_event("r1", &event(id, seq)).await.expect("publish");
    }
    let source = fx.open().await;
    let mut r1 = source.queue.consume_events("r1").await.expect("consume");
    let first = within("event 1", r1.next()).await.expect("event");
    first.acker.ack().await.expect("ack");
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(within("an event", r1.next()).await.expect("event"));
    }
    // The runner service dies with events 2-4 reported to nobody.
    source.shutdown().await;
    while let Some(delivery) = held.pop() {
        drop(delivery);
    }
    drop(r1);
    let restarted = fx.open().await;
    let mut r1 = restarted.queue.consume_events("r1").await.expect("consume again");
    for seq in 2..=6 {
        let got = within("an unacknowledged event", r1.next()).await.expect("event");
        assert_eq!(got.event.seq, seq, "events come back in order, none lost");
        got.acker.ack().await.expect("ack");
    }
    assert!(completes_soon(r1.next()).await.is_none(), "an acknowledged event came back");
    restarted.shutdown().await;
    orchestrator.shutdown().await;
}

pub async fn broadcasts_cancels_to_every_consumer(fx: &QueueFixture) {
    let (a, b) = (fx.open().await, fx.open().await);
    let mut first = a.queue.consume_cancels().await.expect("consume");
    let mut second = b.queue.consume_cancels().await.expect("consume");
    let early = JobId::new();
    a.queue.publish_cancel(early).await.expect("publish");
    assert_eq!(within("a cancel", first.next()).await.expect("cancel"), early);
    assert_eq!(within("a cancel", second.next()).await.expect("cancel"), early);
    // A consumer opened later sees only what is published after it opened.
    let mut third = a.queue.consume_cancels().await.expect("consume");
    let late = JobId::new();
    b.queue.publish_cancel(late).await.expect("publish");
    assert_eq!(within("a cancel", third.next()).await.expect("cancel"), late);
    assert_eq!(within("a cancel", first.next()).await.expect("cancel"), late);
    assert_eq!(within("a cancel", second.next()).await.expect("cancel"), late);
    a.shutdown().await;
    b.shutdown().await;
}

trait WithAt {
    fn with_at(self, at: OffsetDateTime) -> Self;
}

impl WithAt for JobEvent {
    fn with_at(mut self, at: OffsetDateTime) -> Self {
        self.at = at;
        self
    }
}
