//! Fixtures: a fresh queue namespace or store database per test, on each backend.
//!
//! RabbitMQ and PostgreSQL are found through `SOLSTICE_TEST_AMQP_URL` and
//! `SOLSTICE_TEST_POSTGRES_URL` (printed by `.ci/services.sh`), defaulting to the URLs
//! that script sets up. A test needing a service that does not answer fails with a
//! message saying so; it never passes silently.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use solstice_core::{JobId, JobQueue, MemoryQueue, Store};

/// How long a test waits for something that should happen.
pub const PATIENCE: Duration = Duration::from_secs(15);
/// How long a test waits to be reasonably sure that something does not happen.
pub const QUIET: Duration = Duration::from_millis(400);

/// Labels and routes the queue tests may use (so the fixture can delete their queues).
#[cfg_attr(not(feature = "amqp"), allow(dead_code))]
pub const LABELS: [&str; 3] = ["alpha", "beta", "omnios"];
/// Event routes the queue tests may use.
#[cfg_attr(not(feature = "amqp"), allow(dead_code))]
pub const ROUTES: [&str; 2] = ["r1", "r2"];

/// Awaits `f` for at most [`PATIENCE`], failing the test with `what` otherwise.
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, f).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {PATIENCE:?} waiting for {what}"),
    }
}

/// Whether `f` completes within [`QUIET`].
pub async fn completes_soon<T>(f: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(QUIET, f).await.ok()
}

#[cfg_attr(not(feature = "amqp"), allow(dead_code))]
pub fn amqp_url() -> String {
    std::env::var("SOLSTICE_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/solstice-test".to_owned())
}

#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub fn postgres_url() -> String {
    std::env::var("SOLSTICE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://solstice:solstice@127.0.0.1:5432/solstice_test".to_owned())
}

/// A URL with its password replaced, for messages.
#[cfg_attr(not(any(feature = "amqp", feature = "postgres")), allow(dead_code))]
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => match url[scheme + 3..at].find(':') {
            Some(colon) => format!("{}:***{}", &url[..scheme + 3 + colon], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

/// Which queue backend a test runs on.
#[derive(Debug, Clone, Copy)]
pub enum QueueBackend {
    Memory,
    #[cfg(feature = "amqp")]
    RabbitMq,
}

/// One test's queue namespace; [`QueueFixture::open`] gives handles on it, as separate
/// processes would have.
pub struct QueueFixture {
    backend: QueueBackend,
    memory: MemoryQueue,
    #[cfg_attr(not(feature = "amqp"), allow(dead_code))]
    prefix: String,
}

/// A handle on the fixture's queue, standing for one process.
pub struct Handle {
    pub queue: Arc<dyn JobQueue>,
    #[cfg(feature = "amqp")]
    amqp: Option<solstice_core::AmqpQueue>,
}

impl Handle {
    /// The process ends: its connection closes without settling anything.
    pub async fn shutdown(self) {
        #[cfg(feature = "amqp")]
        if let Some(amqp) = self.amqp {
            amqp.close().await;
        }
    }

    /// The RabbitMQ handle, on that backend.
    #[cfg(feature = "amqp")]
    #[allow(dead_code)]
    pub fn amqp(&self) -> &solstice_core::AmqpQueue {
        self.amqp.as_ref().expect("a RabbitMQ handle")
    }
}

impl QueueFixture {
    pub async fn new(backend: QueueBackend) -> Self {
        let prefix = format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        Self { backend, memory: MemoryQueue::new(), prefix }
    }

    /// A new handle (a new connection on RabbitMQ).
    pub async fn open(&self) -> Handle {
        match self.backend {
            QueueBackend::Memory => Handle {
                queue: Arc::new(self.memory.clone()),
                #[cfg(feature = "amqp")]
                amqp: None,
            },
            #[cfg(feature = "amqp")]
            QueueBackend::RabbitMq => {
                let amqp = self.connect_amqp().await;
                Handle { queue: Arc::new(amqp.clone()), amqp: Some(amqp) }
            }
        }
    }

    /// The settings every RabbitMQ handle of this test uses.
    #[cfg(feature = "amqp")]
    pub fn amqp_builder(&self) -> solstice_core::AmqpQueueBuilder {
        solstice_core::AmqpQueue::builder(amqp_url())
            .prefix(self.prefix.clone())
            .connection_name(self.prefix.clone())
            // Queues a failed test leaves behind go away on their own.
            .expire_unused_queues(Some(Duration::from_secs(600)))
    }

    /// The test's namespace prefix.
    #[cfg(feature = "amqp")]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Connects a RabbitMQ handle, failing the test if the broker does not answer.
    #[cfg(feature = "amqp")]
    pub async fn connect_amqp(&self) -> solstice_core::AmqpQueue {
        connect_or_fail(self.amqp_builder()).await
    }

    /// The dead letters as (job id, reason).
    pub async fn dead_letters(&self) -> Vec<(JobId, String)> {
        match self.backend {
            QueueBackend::Memory => self.memory.dead_letters(),
            #[cfg(feature = "amqp")]
            QueueBackend::RabbitMq => {
                let amqp = self.connect_amqp().await;
                let letters = amqp.dead_letters().await.expect("dead letters");
                amqp.close().await;
                letters.into_iter().filter_map(|l| Some((l.job_id?, l.reason))).collect()
            }
        }
    }

    /// Deletes the namespace.
    pub async fn cleanup(self) {
        #[cfg(feature = "amqp")]
        if let QueueBackend::RabbitMq = self.backend {
            let amqp = self.connect_amqp().await;
            amqp.delete_namespace(&LABELS, &ROUTES).await.expect("delete the test namespace");
            amqp.close().await;
        }
    }
}

/// Connects, failing the test with a clear message if the broker does not answer.
#[cfg(feature = "amqp")]
pub async fn connect_or_fail(builder: solstice_core::AmqpQueueBuilder) -> solstice_core::AmqpQueue {
    let url = amqp_url();
    builder.connect().await.unwrap_or_else(|e| {
        panic!(
            "RabbitMQ is unreachable at {}: {}. Start it with `eval \"$(.ci/services.sh)\"` \
             or point SOLSTICE_TEST_AMQP_URL at a broker.",
            redact(&url),
            chain(&e)
        )
    })
}

/// An error with its causes.
#[cfg_attr(not(any(feature = "amqp", feature = "postgres")), allow(dead_code))]
pub fn chain(error: &dyn std::error::Error) -> String {
    solstice_core::support::error_chain(error)
}

/// Which store backend a test runs on.
#[derive(Debug, Clone, Copy)]
pub enum StoreBackend {
    Sqlite,
    #[cfg(feature = "postgres")]
    Postgres,
}

/// A store on a database of its own.
pub struct StoreFixture {
    pub store: Store,
    url: String,
    _dir: Option<tempfile::TempDir>,
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    database: Option<String>,
}

impl StoreFixture {
    pub async fn new(backend: StoreBackend) -> Self {
        match backend {
            StoreBackend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let url = format!("sqlite://{}", dir.path().join("state.db").display());
                let store = Store::connect(&url).await.expect("open the SQLite store");
                Self { store, url, _dir: Some(dir), database: None }
            }
            #[cfg(feature = "postgres")]
            StoreBackend::Postgres => {
                let database = format!("solstice_t_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
                admin(&format!("CREATE DATABASE {database}")).await;
                let url = with_database(&postgres_url(), &database);
                let store = Store::connect(&url)
                    .await
                    .unwrap_or_else(|e| panic!("open the PostgreSQL store: {}", chain(&e)));
                Self { store, url, _dir: None, database: Some(database) }
            }
        }
    }

    /// The database URL.
    #[cfg_attr(not(all(feature = "amqp", feature = "postgres")), allow(dead_code))]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A second store on the same database, as another process would open.
    pub async fn reconnect(&self) -> Store {
        Store::connect(&self.url).await.expect("open the store again")
    }

    /// Drops the test database.
    pub async fn cleanup(self) {
        #[cfg(feature = "postgres")]
        if let Some(database) = self.database {
            drop(self.store);
            admin(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")).await;
        }
    }
}

/// The URL of another database on the same server.
#[cfg(feature = "postgres")]
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let base = base.rsplit_once('/').map_or(base, |(server, _)| server);
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}

/// Runs one statement on the configured PostgreSQL database.
#[cfg(feature = "postgres")]
async fn admin(statement: &str) {
    use sqlx::Connection;
    let url = postgres_url();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is unreachable at {}: {e}. Start it with `eval \"$(.ci/services.sh)\"` \
             or point SOLSTICE_TEST_POSTGRES_URL at a server where the role may CREATE DATABASE.",
            redact(&url)
        )
    });
    sqlx::query(sqlx::AssertSqlSafe(statement.to_owned())).execute(&mut conn).await.unwrap_or_else(|e| panic!("`{statement}` failed: {e}"));
    let _ = conn.close().await;
}
