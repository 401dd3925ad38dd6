//! The engine on RabbitMQ and PostgreSQL when the store is out of reach while a job
//! is claimed: the job waits for the store instead of being handed back, so a
//! database outage cannot push a healthy job over the queue's delivery limit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use solstice_core::testing::{CountingHypervisor, ScriptedExecutor};
use solstice_core::{Engine, JobEventKind, JobQueue, JobRequest, JobResult, JobState, StepCommand, Store};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::support::{QueueBackend, QueueFixture, StoreBackend, StoreFixture, connect_or_fail, within};

/// A TCP forwarder in front of PostgreSQL that the test can cut and restore.
struct Proxy {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    connections: Arc<std::sync::Mutex<JoinSet<()>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let open = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(std::sync::Mutex::new(JoinSet::new()));
        let accept = {
            let (open, connections) = (open.clone(), connections.clone());
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !open.load(Ordering::SeqCst) {
                        // Cut: the database is unreachable.
                        drop(client);
                        continue;
                    }
                    let upstream = upstream.clone();
                    connections.lock().expect("proxy connections").spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                }
            })
        };
        Self { addr, open, connections, accept }
    }

    /// Drops every connection and refuses new ones.
    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.connections.lock().expect("proxy connections").abort_all();
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.connections.lock().map(|mut c| c.abort_all()).unwrap_or_default();
    }
}

/// `postgres://user:pass@host:port/db?…` with `host:port` replaced by `addr`; returns
/// the new URL and the old `host:port`.
fn through(url: &str, addr: SocketAddr) -> (String, String) {
    let at = url.rfind('@').expect("a PostgreSQL URL with credentials");
    let rest = &url[at + 1..];
    let end = rest.find('/').unwrap_or(rest.len());
    (format!("{}@{addr}{}", &url[..at], &rest[end..]), rest[..end].to_owned())
}

/// Issue 5: claim failures must not use up the delivery limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_a_store_outage_during_a_claim_does_not_dead_letter_the_job() {
    let queue_fx = QueueFixture::new(QueueBackend::RabbitMq).await;
    let store_fx = StoreFixture::new(StoreBackend::Postgres).await;
    let (_, upstream) = through(store_fx.url(), "127.0.0.1:1".parse().expect("address"));
    let proxy = Proxy::start(upstream).await;
    let (url, _) = through(store_fx.url(), proxy.addr);
    let store = Store::connect(&url).await.expect("open the store through the proxy");
    // One redelivery at most: before this was fixed, every failed claim handed the job
    // back, and the second one dead-lettered it.
    let queue = connect_or_fail(queue_fx.amqp_builder().delivery_limit(Some(1))).await;
    let queue: Arc<dyn JobQueue> = Arc::new(queue);
    let engine = Engine::builder()
        .hypervisor(CountingHypervisor::new())
        .executor(ScriptedExecutor::new())
        .store(store.clone())
        .capacity(1)
        .name("orch")
        .build()
        .expect("engine");
    let mut job = JobRequest::new("patient", vec!["alpha".into()], vec![StepCommand::run("hi", "echo hi")]);
    job.origin.source = "r1".into();
    let mut events = queue.consume_events("r1").await.expect("consume events");

    proxy.cut();
    queue.publish_job(&job).await.expect("publish");
    let stop = CancellationToken::new();
    let serving = {
        let (engine, queue, stop) = (engine.clone(), queue.clone(), stop.clone());
        tokio::spawn(async move { engine.serve(queue, &["alpha".into()], stop, CancellationToken::new()).await })
    };
    // Long enough for two failed claims of 5 s each (the store's connection timeout).
    tokio::time::sleep(Duration::from_secs(13)).await;
    proxy.restore();

    let result = within("the job to finish once the store is back", async {
        loop {
            let delivery = events.next().await.expect("event");
            delivery.acker.ack().await.expect("ack");
            if let JobEventKind::JobFinished { result } = delivery.event.kind {
                return (delivery.event.attempt, result);
            }
        }
    })
    .await;
    assert_eq!(result, (1, JobResult::Success), "the job ran once, as its first attempt");
    assert_eq!(queue_fx.dead_letters().await, vec![], "the job was dead-lettered during the outage");
    let record = store.job(job.id).await.expect("read").expect("recorded");
    assert_eq!((record.state, record.attempt), (JobState::Finished(JobResult::Success), 1));
    stop.cancel();
    serving.await.expect("join").expect("serve");
    drop(store);
    drop(proxy);
    store_fx.cleanup().await;
    queue_fx.cleanup().await;
}
