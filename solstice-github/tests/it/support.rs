//! Shared helpers: one RSA key per test binary, registration, a running runner.

use std::sync::OnceLock;
use std::time::Duration;

use solstice_core::{Engine, HostExecutor, HostHypervisor, Secret};
use solstice_github::{GithubSource, GithubSourceBuilder, RegistrationConfig, RunnerConfig, RunnerKey, RunnerStore};
use solstice_github_fake::FakeGithub;
use tokio_util::sync::CancellationToken;

/// Generous limit for a job to finish on a loaded 2-core machine.
pub const JOB_LIMIT: Duration = Duration::from_secs(60);

/// A copy of the one key generated for this test binary.
pub fn key() -> RunnerKey {
    static KEY: OnceLock<String> = OnceLock::new();
    let json = KEY.get_or_init(|| {
        let key = RunnerKey::generate().expect("key");
        key.to_rsaparams_json().expect("encode").expose().to_owned()
    });
    RunnerKey::from_rsaparams_json(json).expect("decode")
}

/// Registers a runner named `name` with the `host` label, saves and reloads its files.
pub async fn register(fake: &FakeGithub, name: &str, ephemeral: bool) -> (tempfile::TempDir, RunnerConfig) {
    let config = RegistrationConfig {
        url: fake.repo_url(),
        token: Secret::new(fake.config().registration_token.clone()),
        name: name.to_owned(),
        labels: vec!["host".into()],
        ephemeral,
        ..Default::default()
    };
    let registered = solstice_github::register_with_key(&config, key()).await.expect("register");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RunnerStore::new(dir.path());
    store.save(&registered).expect("save");
    (dir, store.load().expect("load"))
}

/// A runner serving jobs until dropped or stopped.
pub struct Runner {
    #[allow(dead_code)]
    pub source: GithubSource,
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), solstice_github::GithubError>>,
}

impl Runner {
    pub fn start(config: RunnerConfig) -> Self {
        Self::start_with(config, |b| b)
    }

    pub fn start_with(config: RunnerConfig, tweak: impl FnOnce(GithubSourceBuilder) -> GithubSourceBuilder) -> Self {
        let builder = GithubSource::builder(config).retry_delay(Duration::from_millis(100));
        let source = tweak(builder).build().expect("source");
        let engine = Engine::builder().hypervisor(HostHypervisor::new()).executor(HostExecutor::new()).build().expect("engine");
        let stop = CancellationToken::new();
        let task = tokio::spawn(solstice_github::serve_all_in_one(source.clone(), engine, vec!["host".into()], stop.clone()));
        Self { source, stop, task }
    }

    /// Stops the runner and waits for it (the session is deleted).
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }
}

/// Registers and starts a runner.
pub async fn runner(fake: &FakeGithub, name: &str) -> (tempfile::TempDir, Runner) {
    let (dir, config) = register(fake, name, false).await;
    (dir, Runner::start(config))
}
