//! What only the RabbitMQ queue does: prefetch, poison messages, the delivery limit,
//! and connections the broker drops.

use std::process::Command;
use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use solstice_core::{AmqpQueue, JobEvent, JobEventKind, JobId, JobQueue, JobRequest, LogStream, QueueError, StepCommand};

use crate::support::{QueueBackend, QueueFixture, amqp_url, completes_soon, connect_or_fail, within};

fn job(label: &str) -> JobRequest {
    JobRequest::new("job", vec![label.to_owned()], vec![StepCommand::run("hi", "echo hi")])
}

fn alpha() -> Vec<String> {
    vec!["alpha".to_owned()]
}

/// Runs a test body on a fresh namespace and deletes it afterwards.
macro_rules! rabbit_test {
    ($name:ident, $body:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let fx = QueueFixture::new(QueueBackend::RabbitMq).await;
            $body(&fx).await;
            fx.cleanup().await;
        }
    };
}

rabbit_test!(prefetch_bounds_unacknowledged_jobs, prefetch_body);
async fn prefetch_body(fx: &QueueFixture) {
    let q = fx.connect_amqp().await;
    let mut consumer = q.consume_jobs(&alpha(), 2).await.expect("consume");
    for _ in 0..4 {
        q.publish_job(&job("alpha")).await.expect("publish");
    }
    let first = within("job 1", consumer.next()).await.expect("delivery");
    let second = within("job 2", consumer.next()).await.expect("delivery");
    assert!(completes_soon(consumer.next()).await.is_none(), "a third job came with prefetch 2");
    first.acker.ack().await.expect("ack");
    let third = within("job 3 after an ack", consumer.next()).await.expect("delivery");
    second.acker.ack().await.expect("ack");
    third.acker.ack().await.expect("ack");
    within("job 4", consumer.next()).await.expect("delivery").acker.ack().await.expect("ack");
    q.close().await;
}

rabbit_test!(dead_letters_undecodable_messages, undecodable_body);
async fn undecodable_body(fx: &QueueFixture) {
    let q = fx.connect_amqp().await;
    let mut jobs = q.consume_jobs(&alpha(), 4).await.expect("consume jobs");
    let mut events = q.consume_events("r1").await.expect("consume events");
    // Someone else's software publishes garbage into our exchanges.
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default()).await.expect("raw connection");
    let channel = conn.create_channel().await.expect("channel");
    for (exchange, key) in [(format!("{}.jobs", q.prefix()), "alpha"), (format!("{}.events", q.prefix()), "r1")] {
        channel
            .basic_publish(exchange.into(), key.into(), BasicPublishOptions::default(), b"{not json", BasicProperties::default())
            .await
            .expect("publish garbage");
    }
    let fine = job("alpha");
    q.publish_job(&fine).await.expect("publish");
    let got = within("the good job after the garbage", jobs.next()).await.expect("delivery");
    assert_eq!(got.job.id, fine.id, "the undecodable message is not handed out");
    got.acker.ack().await.expect("ack");
    assert!(completes_soon(events.next()).await.is_none(), "an undecodable event was handed out");
    let dead = within("the dead letters", async {
        loop {
            let dead = q.dead_letters().await.expect("dead letters");
            if dead.len() >= 2 {
                return dead;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(dead.len(), 2);
    for letter in &dead {
        assert_eq!(letter.body, b"{not json");
        assert_eq!(letter.job_id, None);
    }
    assert!(dead[0].reason.starts_with("undecodable"), "reason: {}", dead[0].reason);
    let queues: Vec<_> = dead.iter().map(|l| l.queue.clone()).collect();
    assert!(queues.contains(&format!("{}.jobs.alpha", q.prefix())), "{queues:?}");
    assert!(queues.contains(&format!("{}.events.r1", q.prefix())), "{queues:?}");
    // Peeking leaves them in place.
    assert_eq!(q.dead_letters().await.expect("dead letters").len(), 2);
    let _ = conn.close(200, "done".into()).await;
    q.close().await;
}

rabbit_test!(reads_event_messages_of_the_previous_version, old_event_body);
async fn old_event_body(fx: &QueueFixture) {
    let q = fx.connect_amqp().await;
    let mut events = q.consume_events("r1").await.expect("consume events");
    let id = JobId::new();
    let event = |seq| JobEvent {
        job_id: id,
        attempt: 1,
        seq,
        at: time::OffsetDateTime::now_utc(),
        kind: JobEventKind::Log { step: None, stream: LogStream::System, line: format!("line {seq}") },
    };
    // Left in the queue by a version that sent one event per message, without a type.
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default()).await.expect("raw connection");
    let channel = conn.create_channel().await.expect("channel");
    let old = serde_json::to_vec(&event(1)).expect("encode");
    channel
        .basic_publish(format!("{}.events", q.prefix()).into(), "r1".into(), BasicPublishOptions::default(), &old, BasicProperties::default().with_delivery_mode(2))
        .await
        .expect("publish an old event");
    // Then this version's batch.
    q.publish_events("r1", &[event(2), event(3)]).await.expect("publish a batch");
    for seq in 1..=3 {
        let got = within("an event", events.next()).await.expect("event");
        assert_eq!((got.event.job_id, got.event.seq), (id, seq), "old and new messages, in order");
        got.acker.ack().await.expect("ack");
    }
    assert!(q.dead_letters().await.expect("dead letters").is_empty(), "the old message was dead-lettered");
    let _ = conn.close(200, "done".into()).await;
    q.close().await;
}

rabbit_test!(dead_letters_jobs_delivered_too_often, delivery_limit_body);
async fn delivery_limit_body(fx: &QueueFixture) {
    let q = connect_or_fail(fx.amqp_builder().delivery_limit(Some(2))).await;
    let mut consumer = q.consume_jobs(&alpha(), 1).await.expect("consume");
    let poison = job("alpha");
    q.publish_job(&poison).await.expect("publish");
    let mut deliveries = 0;
    while let Some(Ok(got)) = completes_soon(consumer.next()).await {
        assert_eq!(got.job.id, poison.id);
        deliveries += 1;
        // Its orchestrator dies every time.
        got.acker.nack(true, "orchestrator crashed").await.expect("nack");
        assert!(deliveries < 10, "the delivery limit never struck");
    }
    assert_eq!(deliveries, 3, "delivered once plus the limit of 2 redeliveries");
    let dead = q.dead_letters().await.expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].job_id, Some(poison.id));
    assert_eq!(dead[0].reason, "delivery_limit");
    q.close().await;
}

rabbit_test!(folds_a_redelivered_running_job_into_it, dropped_connection_body);
async fn dropped_connection_body(fx: &QueueFixture) {
    let name = format!("{}-orchestrator", fx.prefix());
    let q = connect_or_fail(fx.amqp_builder().connection_name(name.clone())).await;
    let mut consumer = q.consume_jobs(&alpha(), 4).await.expect("consume");
    let (running, waiting) = (job("alpha"), job("alpha"));
    q.publish_job(&running).await.expect("publish");
    let got = within("the job", consumer.next()).await.expect("delivery");
    assert_eq!(got.job.id, running.id);
    // The broker drops the connection while the job runs (a restart, a network cut).
    close_connection(&name);
    // Publishing works again on a new connection ...
    within("a publish after the drop", async {
        loop {
            match q.publish_job(&waiting).await {
                Ok(()) => return,
                Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => panic!("publish failed: {e}"),
            }
        }
    })
    .await;
    // ... and the consumer, subscribed again, gets the new job but not the running one,
    // which RabbitMQ redelivered when the connection dropped.
    let next = within("the next job after the drop", consumer.next()).await.expect("delivery");
    assert_eq!(next.job.id, waiting.id, "the running job was handed out a second time");
    assert!(completes_soon(consumer.next()).await.is_none(), "a job was handed out twice");
    // The running job ends: its acknowledgement settles the redelivered copy.
    got.acker.ack().await.expect("ack");
    next.acker.ack().await.expect("ack");
    q.close().await;
    let later = fx.connect_amqp().await;
    let mut consumer = later.consume_jobs(&alpha(), 4).await.expect("consume");
    assert!(completes_soon(consumer.next()).await.is_none(), "a finished job is still queued");
    later.close().await;
}

#[tokio::test]
async fn an_unreachable_broker_is_a_transient_error() {
    let started = std::time::Instant::now();
    let err = AmqpQueue::connect("amqp://guest:guest@127.0.0.1:1/%2f").await.expect_err("nothing listens on port 1");
    assert!(matches!(err, QueueError::Unavailable(_)), "{err:?}");
    assert!(err.is_transient());
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Makes the broker close the connection with the given name.
fn close_connection(name: &str) {
    let output = Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "--no-table-headers", "pid", "client_properties"])
        .output()
        .unwrap_or_else(|e| panic!("this test drops a connection with `rabbitmqctl`, which could not run: {e}"));
    let listing = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "rabbitmqctl list_connections: {}", String::from_utf8_lossy(&output.stderr));
    // One line per connection: `<rabbit@host.1.2.3>\t[{"connection_name",longstr,"…"},…]`.
    let pid = listing
        .lines()
        .find(|line| line.contains(&format!("\"{name}\"")))
        .and_then(|line| line.split('\t').next())
        .unwrap_or_else(|| panic!("no connection named {name} in:\n{listing}"))
        .to_owned();
    let output = Command::new("rabbitmqctl")
        .args(["-q", "close_connection", &pid, "test drops the connection"])
        .output()
        .expect("rabbitmqctl close_connection");
    assert!(
        output.status.success(),
        "rabbitmqctl close_connection {pid}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
