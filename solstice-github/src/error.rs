//! [`GithubError`]: everything that can go wrong talking to GitHub.

/// Why a call to GitHub, or local runner state, failed.
///
/// Messages never contain tokens, private keys or credentialed URLs; a response body is
/// quoted only in a short excerpt of the forge's own error message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GithubError {
    /// The request could not be sent or its response not received.
    #[error("could not reach the {service}")]
    Transport {
        /// Which GitHub service (`token service`, `broker`, …).
        service: &'static str,
        /// The cause, with its URL removed.
        #[source]
        source: reqwest::Error,
    },
    /// The service answered with an error status.
    #[error("the {service} answered {status}{}", kind.as_deref().map(|k| format!(" ({k})")).unwrap_or_default())]
    Status {
        /// Which GitHub service.
        service: &'static str,
        /// The HTTP status code.
        status: u16,
        /// The error kind the service named (`typeKey`, `errorKind` or OAuth `error`).
        kind: Option<String>,
        /// The service's own message, shortened.
        message: String,
    },
    /// The response could not be read.
    #[error("the {service} sent a response that could not be read")]
    Decode {
        /// Which GitHub service.
        service: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The service answered with something the protocol does not allow.
    #[error("the {service} sent an unexpected response: {what}")]
    Protocol {
        /// Which GitHub service.
        service: &'static str,
        /// What was wrong.
        what: String,
    },
    /// The service's answer was larger than the runner reads (32 MiB).
    #[error("the {service} sent an answer larger than {limit} bytes")]
    TooLarge {
        /// Which GitHub service.
        service: &'static str,
        /// The limit.
        limit: usize,
    },
    /// A cryptographic step failed (key generation, signing, decryption).
    #[error("could not {0}")]
    Crypto(&'static str),
    /// The runner's local configuration is missing or invalid.
    #[error("the runner configuration is invalid: {0}")]
    Config(String),
    /// A local file could not be read or written.
    #[error("could not access {path}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The live log websocket could not be written.
    #[error("the live log connection failed")]
    Feed {
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A job message could not be understood.
    #[error("the job message is invalid: {0}")]
    JobMessage(String),
    /// The runner-service loop failed (the queue, the engine).
    #[error("the runner service failed")]
    Service(#[source] Box<solstice_core::ServiceError>),
}

impl GithubError {
    /// Whether retrying later may succeed (network errors, 5xx, 429, 408).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::Feed { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            _ => false,
        }
    }

    /// Whether the runner's credentials were refused (401, OAuth `invalid_client`).
    pub fn is_auth(&self) -> bool {
        match self {
            Self::Status { status, kind, .. } => *status == 401 || kind.as_deref() == Some("invalid_client"),
            _ => false,
        }
    }

    /// The HTTP status, for a [`GithubError::Status`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The error kind the service named, for a [`GithubError::Status`].
    pub fn kind(&self) -> Option<&str> {
        match self {
            Self::Status { kind, .. } => kind.as_deref(),
            _ => None,
        }
    }

    /// Whether the service's error kind or message contains `needle` (case-insensitive).
    pub fn mentions(&self, needle: &str) -> bool {
        let needle = needle.to_ascii_lowercase();
        match self {
            Self::Status { kind, message, .. } => {
                kind.as_deref().is_some_and(|k| k.to_ascii_lowercase().contains(&needle))
                    || message.to_ascii_lowercase().contains(&needle)
            }
            _ => false,
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io { path: path.display().to_string(), source }
    }
}

impl From<GithubError> for solstice_core::SourceError {
    fn from(e: GithubError) -> Self {
        if e.is_transient() {
            Self::Unavailable(Box::new(e))
        } else if e.is_auth() {
            Self::Unauthorized(Some(Box::new(e)))
        } else {
            Self::Other { message: "the GitHub runner protocol failed".to_owned(), source: Some(Box::new(e)) }
        }
    }
}
