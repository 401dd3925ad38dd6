//! What can go wrong talking to Forgejo.

use crate::connect::{CodecError, ConnectCode, Procedure};

/// A failed call to a Forgejo instance.
///
/// Errors never carry the runner token, the registration token or a request body.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForgeError {
    /// The instance URL is not an absolute `http`/`https` URL.
    #[error("invalid Forgejo instance URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The HTTP client could not be built.
    #[error("could not build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// The call needs runner credentials and the client has none.
    #[error("{0} needs runner credentials; register the runner first")]
    NoCredentials(Procedure),
    /// The server answered with a Connect error.
    #[error("Forgejo refused {procedure}: {code}: {message}")]
    Rejected {
        /// The call.
        procedure: Procedure,
        /// The Connect code (from the body, or inferred from the HTTP status).
        code: ConnectCode,
        /// The server's message (may be empty).
        message: String,
    },
    /// The server could not be reached, or the connection broke.
    #[error("could not reach Forgejo for {procedure}")]
    Transport {
        /// The call.
        procedure: Procedure,
        /// The cause (without the URL).
        #[source]
        source: reqwest::Error,
    },
    /// The call did not finish within its deadline.
    #[error("{procedure} timed out")]
    Timeout {
        /// The call.
        procedure: Procedure,
    },
    /// The server answered 200 with something that is not a response of this codec.
    #[error("unexpected answer to {procedure}: {detail}")]
    Protocol {
        /// The call.
        procedure: Procedure,
        /// What was wrong.
        detail: String,
    },
    /// The server's answer was larger than the client reads
    /// ([`crate::ForgejoClientBuilder::max_response_bytes`]).
    #[error("the answer to {procedure} is larger than {limit} bytes")]
    TooLarge {
        /// The call.
        procedure: Procedure,
        /// The limit.
        limit: usize,
    },
    /// A message could not be encoded or the response could not be decoded.
    #[error("could not encode or decode a {procedure} message")]
    Codec {
        /// The call.
        procedure: Procedure,
        /// The cause.
        #[source]
        source: CodecError,
    },
}

impl ForgeError {
    /// The Connect code of a rejected call.
    pub fn code(&self) -> Option<ConnectCode> {
        match self {
            Self::Rejected { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether a retry after a pause may succeed: unreachable server, timeouts,
    /// `unavailable`, `deadline_exceeded`, `resource_exhausted`, `aborted`, `unknown`
    /// and `internal` (Forgejo answers `internal` for database failures).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::Timeout { .. } => true,
            Self::Rejected { code, .. } => matches!(
                code,
                ConnectCode::Unavailable
                    | ConnectCode::DeadlineExceeded
                    | ConnectCode::ResourceExhausted
                    | ConnectCode::Aborted
                    | ConnectCode::Unknown
                    | ConnectCode::Internal
            ),
            _ => false,
        }
    }

    /// Whether the server refused the runner's credentials (`unauthenticated`).
    pub fn is_auth(&self) -> bool {
        self.code() == Some(ConnectCode::Unauthenticated)
    }

    /// Whether the server does not know the procedure (an older Forgejo).
    pub fn is_unimplemented(&self) -> bool {
        self.code() == Some(ConnectCode::Unimplemented)
    }

    /// Whether the server could not be reached at all (or timed out), as opposed to an
    /// answer it gave.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Transport { .. } | Self::Timeout { .. })
            || self.code() == Some(ConnectCode::Unavailable)
    }
}
