//! The engine and its debug keeper, built from the configuration.

use std::net::{AddrParseError, IpAddr};

use solstice_config::{DebugSshConfig, ServiceConfig};
use solstice_core::{DebugKeeper, DebugSshError, Engine, EngineError, JobQueue, Store};
use solstice_vm::Machines;

/// Why [`start_engine`] (or [`debug_keeper`]) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineSetupError {
    /// `[debug_ssh] listen` is not an IP address.
    #[error("debug_ssh.listen `{listen}`")]
    DebugListen {
        /// The configured value.
        listen: String,
        /// Why it does not parse.
        #[source]
        source: AddrParseError,
    },
    /// The debug keeper refused its settings (an empty port range, a zero time).
    #[error("setting up debug SSH")]
    DebugSsh(#[source] DebugSshError),
    /// The engine could not be built.
    #[error("building the engine")]
    Build(#[source] EngineError),
    /// The store could not be read, or a machine a previous run left could not be
    /// handled.
    #[error("reaping machines left by a previous run")]
    Reap(#[source] EngineError),
}

/// An engine ready to serve, and the keeper of failed jobs' machines if debug SSH is
/// on. Call [`shutdown`](Orchestrator::shutdown) once the engine has stopped serving.
#[derive(Debug, Clone)]
pub struct Orchestrator {
    engine: Engine,
    debug: Option<DebugKeeper>,
}

impl Orchestrator {
    /// The engine (cheap to clone).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The debug keeper, if `[debug_ssh] listen` is set.
    pub fn debug_keeper(&self) -> Option<&DebugKeeper> {
        self.debug.as_ref()
    }

    /// Destroys the machines kept for debugging, whatever their time left: they go with
    /// the orchestrator.
    ///
    /// # Cancel safety
    /// Not cancel safe: machines being destroyed when it is dropped are left to the
    /// next start-up's reaping.
    pub async fn shutdown(&self) {
        if let Some(keeper) = &self.debug {
            keeper.shutdown().await;
        }
    }
}

/// The keeper of failed jobs' machines for debug SSH, if `[debug_ssh] listen` is set;
/// logs that debug SSH is on.
///
/// # Errors
/// [`EngineSetupError::DebugListen`] for a `listen` that is not an IP address,
/// [`EngineSetupError::DebugSsh`] for settings the keeper refuses.
pub fn debug_keeper(section: &DebugSshConfig) -> Result<Option<DebugKeeper>, EngineSetupError> {
    if section.listen.is_empty() {
        return Ok(None);
    }
    let listen: IpAddr = section
        .listen
        .parse()
        .map_err(|source| EngineSetupError::DebugListen { listen: section.listen.clone(), source })?;
    let mut builder = DebugKeeper::builder()
        .dangerous_listen(listen)
        .ports(section.first_port..section.last_port.saturating_add(1))
        .ttl(section.ttl);
    if !section.host.is_empty() {
        builder = builder.host(section.host.clone());
    }
    let keeper = builder.build().map_err(EngineSetupError::DebugSsh)?;
    tracing::info!(%listen, ttl = ?section.ttl, "debug SSH into failed jobs that opt in is on");
    Ok(Some(keeper))
}

/// Builds the engine for `machines` (named, sized and with debug SSH as the
/// configuration says). With a `store` (the orchestrator, `solstice serve`) it then,
/// before it takes any job, reaps what a crashed run under the same name left
/// running, telling `queue` about their jobs; a runner's engine has no store.
///
/// # Errors
/// [`EngineSetupError`]: bad `[debug_ssh]` settings, an engine that cannot be built, or
/// a store that cannot be read while reaping.
///
/// # Cancel safety
/// Not cancel safe: reaping may stop half way (the next start-up finishes it).
pub async fn start_engine(
    config: &ServiceConfig,
    machines: &Machines,
    store: Option<Store>,
    queue: &dyn JobQueue,
) -> Result<Orchestrator, EngineSetupError> {
    let debug = debug_keeper(&config.debug_ssh)?;
    let mut builder = Engine::builder()
        .hypervisor(machines.hypervisor.clone())
        .executor(machines.executor.clone())
        .capacity(config.capacity)
        .name(config.name.clone())
        .claim_lease(config.engine.claim_lease);
    let reap = store.is_some();
    if let Some(store) = store {
        builder = builder.store(store);
    }
    if let Some(keeper) = &debug {
        builder = builder.debug_keeper(keeper.clone());
    }
    let engine = builder.build().map_err(EngineSetupError::Build)?;
    if !reap {
        return Ok(Orchestrator { engine, debug });
    }
    for reaped in engine.reap_orphans(Some(queue)).await.map_err(EngineSetupError::Reap)? {
        tracing::warn!(machine = %reaped.record.id, job_id = %reaped.record.job_id, job_failed = reaped.job_failed, "removed a machine left by a previous run");
    }
    Ok(Orchestrator { engine, debug })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn debug_ssh_is_off_without_listen_and_bad_settings_are_named() {
        assert!(debug_keeper(&DebugSshConfig::default()).expect("off").is_none());
        let on = DebugSshConfig { listen: "127.0.0.1".into(), ..DebugSshConfig::default() };
        let keeper = debug_keeper(&on).expect("on").expect("a keeper");
        assert_eq!(keeper.ttl(), Duration::from_secs(1800));
        let bad = DebugSshConfig { listen: "nowhere".into(), ..DebugSshConfig::default() };
        let err = debug_keeper(&bad).expect_err("not an address");
        assert_eq!(err.to_string(), "debug_ssh.listen `nowhere`");
        let empty = DebugSshConfig { listen: "127.0.0.1".into(), ttl: Duration::ZERO, ..DebugSshConfig::default() };
        assert!(matches!(debug_keeper(&empty), Err(EngineSetupError::DebugSsh(_))));
    }
}
