//! Registration: a registration token traded for a runner identity.

use std::time::Duration;

use solstice_core::Secret;
use tokio_util::sync::CancellationToken;

use crate::proto::runner::v1 as pb;
use crate::{ForgeError, ForgejoClient, LabelSpec, RUNNER_VERSION, RunnerFile, label_names};

/// What to register.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The runner's name as shown in Forgejo.
    pub name: String,
    /// The registration token from Forgejo's runner settings.
    pub token: Secret,
    /// The runner's labels; only their names are sent.
    pub labels: Vec<LabelSpec>,
    /// Take one job, then be deleted by the server.
    pub ephemeral: bool,
}

/// Why registration failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// `Ping` did not succeed in time.
    #[error("the Forgejo instance did not answer Ping within {waited:?}")]
    Unreachable {
        /// How long it was tried.
        waited: Duration,
        /// The last failure.
        #[source]
        source: ForgeError,
    },
    /// The server refused `Register` (an unknown or invalidated token, a missing name).
    #[error("registration refused")]
    Refused(#[source] ForgeError),
    /// Registration needs at least one label.
    #[error("a runner needs at least one label")]
    NoLabels,
    /// `cancel` fired.
    #[error("registration was cancelled")]
    Cancelled,
}

/// Registers a runner: `Ping` (retried every second for up to `ping_wait`), then
/// `Register`. Returns the runner file to save; it holds the only copy of the runner
/// secret.
///
/// # Errors
/// [`RegisterError`].
///
/// # Cancel safety
/// Cancel through `cancel`; a dropped call may leave a runner registered on the server.
pub async fn register(
    client: &ForgejoClient,
    registration: &Registration,
    ping_wait: Duration,
    cancel: &CancellationToken,
) -> Result<RunnerFile, RegisterError> {
    if registration.labels.is_empty() {
        return Err(RegisterError::NoLabels);
    }
    let started = tokio::time::Instant::now();
    loop {
        let attempt = tokio::select! {
            r = client.ping("solstice") => r,
            () = cancel.cancelled() => return Err(RegisterError::Cancelled),
        };
        match attempt {
            Ok(_) => break,
            Err(e) if started.elapsed() >= ping_wait => {
                return Err(RegisterError::Unreachable { waited: started.elapsed(), source: e });
            }
            Err(e) => {
                tracing::info!(error = %e, "Forgejo not reachable yet; retrying in 1 s");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = cancel.cancelled() => return Err(RegisterError::Cancelled),
                }
            }
        }
    }
    let names = label_names(&registration.labels);
    let request = pb::RegisterRequest {
        name: registration.name.clone(),
        token: registration.token.expose().to_owned(),
        agent_labels: names.clone(),
        custom_labels: Vec::new(),
        version: RUNNER_VERSION.to_owned(),
        labels: names,
        ephemeral: registration.ephemeral,
    };
    let runner = tokio::select! {
        r = client.register(&request) => r.map_err(RegisterError::Refused)?,
        () = cancel.cancelled() => return Err(RegisterError::Cancelled),
    };
    tracing::info!(uuid = %runner.uuid, name = %runner.name, "runner registered");
    Ok(RunnerFile::new(
        runner.id,
        runner.uuid,
        runner.name,
        Secret::new(runner.token),
        client.instance().to_owned(),
        &registration.labels,
    ))
}
