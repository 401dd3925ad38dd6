//! A registered runner in all-in-one mode (memory queue, host engine) against a fake.

use std::sync::Arc;
use std::time::Duration;

use solstice_core::{Engine, HostExecutor, HostHypervisor, MemoryQueue, Secret};
use solstice_forgejo::{DaemonError, ForgejoClient, ForgejoSource, LabelSpec, Registration, RunnerFile, Service};
use solstice_forgejo_fake::{FakeForgejo, Scope};
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(30);

/// A single-job payload running `steps` (YAML list items, indented by 6).
pub fn payload(steps: &str) -> String {
    format!("name: ci\non: push\njobs:\n  build:\n    name: build\n    runs-on: host\n    steps:\n{steps}")
}

pub async fn register(fake: &FakeForgejo) -> RunnerFile {
    let token = fake.registration_token(Scope::Instance);
    let client = ForgejoClient::builder(fake.url()).build().unwrap();
    let registration = Registration {
        name: "test-runner".into(),
        token: Secret::new(token),
        labels: vec![LabelSpec::parse("host:host").unwrap()],
        ephemeral: false,
    };
    solstice_forgejo::register(&client, &registration, Duration::from_secs(5), &CancellationToken::new()).await.unwrap()
}

pub struct Runner {
    pub source: ForgejoSource,
    #[allow(dead_code)]
    pub file: RunnerFile,
    shutdown: CancellationToken,
    abort: CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), DaemonError>>,
}

impl Runner {
    pub async fn start(fake: &FakeForgejo) -> Runner {
        let file = register(fake).await;
        let client = ForgejoClient::builder(fake.url()).build().unwrap().with_credentials(file.credentials());
        let source = ForgejoSource::builder(client)
            .labels(vec!["host".into()])
            .runner_name("test-runner")
            .capacity(2)
            .fetch_interval(Duration::from_millis(50))
            .report_interval(Duration::from_millis(100))
            .build()
            .unwrap();
        let engine = Engine::builder().hypervisor(HostHypervisor::new()).executor(HostExecutor::new()).capacity(2).build().unwrap();
        let service = Service {
            source: source.clone(),
            queue: Arc::new(MemoryQueue::new()),
            engine: Some((engine, vec!["host".into()])),
            grace: Duration::from_secs(10),
        };
        let (shutdown, abort) = (CancellationToken::new(), CancellationToken::new());
        let handle = tokio::spawn(solstice_forgejo::run_service(service, shutdown.clone(), abort.clone()));
        Runner { source, file, shutdown, abort, handle }
    }

    pub async fn stop(self) -> Result<(), DaemonError> {
        self.shutdown.cancel();
        let abort = self.abort.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            abort.cancel();
        });
        self.handle.await.unwrap()
    }
}

/// Log lines without the runner's and engine's own chatter.
pub fn output(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| !l.starts_with("Step finished") && !l.starts_with("Machine ") && !l.starts_with("Preparing") && !l.starts_with("Job accepted") && !l.contains("received task"))
        .cloned()
        .collect()
}
