//! What can stop a service that the libraries' errors do not say.

use std::path::PathBuf;

use solstice_core::{QueueError, StoreError};

use crate::Exit;

/// Why a service could not start, or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The runner's registration, which the configuration points to, is missing or
    /// unreadable (exit 2).
    #[error("{key}: register the runner first ({})", path.display())]
    NotRegistered {
        /// The key that names it (`forgejo.file`, `github.dir`).
        key: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Nothing would run: no label for the engine (exit 2).
    #[error("no label to serve: set [engine] host_labels or vm_images, or give the runners labels")]
    NoLabels,
    /// RabbitMQ could not be reached (exit 5).
    #[error("could not connect to RabbitMQ")]
    Queue(#[source] QueueError),
    /// The state store could not be opened (exit 5).
    #[error("could not open the state store")]
    Store(#[source] StoreError),
    /// A runner service stopped by itself (exit 5, unless its cause says otherwise).
    #[error("the {runner} runner stopped on its own")]
    RunnerEnded {
        /// `forgejo` or `github`.
        runner: &'static str,
    },
}

impl ServiceError {
    /// Its place in the exit-code table, if it decides it (else its cause does).
    pub(crate) fn exit(&self) -> Option<Exit> {
        match self {
            ServiceError::NotRegistered { .. } | ServiceError::NoLabels => Some(Exit::InvalidInput),
            ServiceError::Queue(_) | ServiceError::Store(_) | ServiceError::RunnerEnded { .. } => None,
        }
    }
}
