//! The Connect protocol's unary wire format, without I/O: codecs, procedure paths,
//! error codes and error bodies. The client ([`crate::ForgejoClient`]) and test servers
//! share it.

use serde::{Deserialize, Serialize};
use serde::de::DeserializeOwned;

/// The header that carries the Connect protocol version (`1`).
pub const PROTOCOL_VERSION_HEADER: &str = "connect-protocol-version";
/// The header that carries the caller's deadline in milliseconds.
pub const TIMEOUT_HEADER: &str = "connect-timeout-ms";
/// The runner's UUID header.
pub const RUNNER_UUID_HEADER: &str = "x-runner-uuid";
/// The runner's secret token header.
pub const RUNNER_TOKEN_HEADER: &str = "x-runner-token";
/// The header naming one logical fetch attempt (Forgejo ≥ 15 recovers lost answers by it).
pub const REQUEST_KEY_HEADER: &str = "x-runner-request-key";

/// The RPCs of Forgejo's runner protocol, with their paths under `/api/actions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Procedure {
    /// `ping.v1.PingService/Ping` (unauthenticated).
    Ping,
    /// `runner.v1.RunnerService/Register` (registration token in the body).
    Register,
    /// `runner.v1.RunnerService/Declare`.
    Declare,
    /// `runner.v1.RunnerService/FetchTask`.
    FetchTask,
    /// `runner.v1.RunnerService/FetchSingleTask` (Forgejo ≥ 15).
    FetchSingleTask,
    /// `runner.v1.RunnerService/UpdateTask`.
    UpdateTask,
    /// `runner.v1.RunnerService/UpdateLog`.
    UpdateLog,
}

impl Procedure {
    /// Every procedure.
    pub const ALL: [Procedure; 7] = [
        Self::Ping,
        Self::Register,
        Self::Declare,
        Self::FetchTask,
        Self::FetchSingleTask,
        Self::UpdateTask,
        Self::UpdateLog,
    ];

    /// The path relative to `<instance>/api/actions`, with a leading `/`.
    pub fn path(self) -> &'static str {
        match self {
            Self::Ping => "/ping.v1.PingService/Ping",
            Self::Register => "/runner.v1.RunnerService/Register",
            Self::Declare => "/runner.v1.RunnerService/Declare",
            Self::FetchTask => "/runner.v1.RunnerService/FetchTask",
            Self::FetchSingleTask => "/runner.v1.RunnerService/FetchSingleTask",
            Self::UpdateTask => "/runner.v1.RunnerService/UpdateTask",
            Self::UpdateLog => "/runner.v1.RunnerService/UpdateLog",
        }
    }

    /// The procedure's method name (`FetchTask`).
    pub fn name(self) -> &'static str {
        let path = self.path();
        path.rsplit('/').next().unwrap_or(path)
    }

    /// The procedure served at `path` (relative to `/api/actions`), if any.
    pub fn from_path(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.path() == path)
    }

    /// Whether the call carries the runner's credentials.
    pub fn is_authenticated(self) -> bool {
        !matches!(self, Self::Ping | Self::Register)
    }
}

impl std::fmt::Display for Procedure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a message body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Codec {
    /// Binary protobuf, `application/proto` (what forgejo-runner sends).
    #[default]
    Proto,
    /// Canonical proto3 JSON, `application/json`.
    Json,
}

/// Why a message could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The bytes are not a valid protobuf message of the expected type.
    #[error("invalid protobuf message")]
    Proto(#[from] prost::DecodeError),
    /// The text is not valid proto3 JSON for the expected type.
    #[error("invalid proto3 JSON message")]
    Json(#[from] serde_json::Error),
}

impl Codec {
    /// The codec named by a `Content-Type` value (`application/proto`,
    /// `application/json`, parameters such as `; charset=utf-8` ignored), if supported.
    pub fn from_content_type(value: &str) -> Option<Self> {
        let media = value.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("application/proto") {
            Some(Self::Proto)
        } else if media.eq_ignore_ascii_case("application/json") {
            Some(Self::Json)
        } else {
            None
        }
    }

    /// The `Content-Type` this codec sends.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Proto => "application/proto",
            Self::Json => "application/json",
        }
    }

    /// Encodes a message.
    ///
    /// # Errors
    /// [`CodecError::Json`] if JSON serialization fails (it does not for generated types).
    pub fn encode<M: prost::Message + Serialize>(self, message: &M) -> Result<Vec<u8>, CodecError> {
        match self {
            Self::Proto => Ok(message.encode_to_vec()),
            Self::Json => Ok(serde_json::to_vec(message)?),
        }
    }

    /// Decodes a message; an empty body is the all-default message in both codecs.
    ///
    /// # Errors
    /// [`CodecError`] when the bytes are not a valid message of type `M`.
    pub fn decode<M: prost::Message + Default + DeserializeOwned>(self, bytes: &[u8]) -> Result<M, CodecError> {
        match self {
            Self::Proto => Ok(M::decode(bytes)?),
            Self::Json if bytes.iter().all(u8::is_ascii_whitespace) => Ok(M::default()),
            Self::Json => Ok(serde_json::from_slice(bytes)?),
        }
    }
}

/// A Connect error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // the names are the protocol's
pub enum ConnectCode {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl ConnectCode {
    const ALL: [ConnectCode; 16] = [
        Self::Canceled,
        Self::Unknown,
        Self::InvalidArgument,
        Self::DeadlineExceeded,
        Self::NotFound,
        Self::AlreadyExists,
        Self::PermissionDenied,
        Self::ResourceExhausted,
        Self::FailedPrecondition,
        Self::Aborted,
        Self::OutOfRange,
        Self::Unimplemented,
        Self::Internal,
        Self::Unavailable,
        Self::DataLoss,
        Self::Unauthenticated,
    ];

    /// The code's wire name (`invalid_argument`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Canceled => "canceled",
            Self::Unknown => "unknown",
            Self::InvalidArgument => "invalid_argument",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::NotFound => "not_found",
            Self::AlreadyExists => "already_exists",
            Self::PermissionDenied => "permission_denied",
            Self::ResourceExhausted => "resource_exhausted",
            Self::FailedPrecondition => "failed_precondition",
            Self::Aborted => "aborted",
            Self::OutOfRange => "out_of_range",
            Self::Unimplemented => "unimplemented",
            Self::Internal => "internal",
            Self::Unavailable => "unavailable",
            Self::DataLoss => "data_loss",
            Self::Unauthenticated => "unauthenticated",
        }
    }

    /// The code with this wire name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The HTTP status a server answers with for this code.
    pub fn http_status(self) -> u16 {
        match self {
            Self::Canceled => 499,
            Self::Unknown | Self::Internal | Self::DataLoss => 500,
            Self::InvalidArgument | Self::FailedPrecondition | Self::OutOfRange => 400,
            Self::DeadlineExceeded => 504,
            Self::NotFound => 404,
            Self::AlreadyExists | Self::Aborted => 409,
            Self::PermissionDenied => 403,
            Self::ResourceExhausted => 429,
            Self::Unimplemented => 501,
            Self::Unavailable => 503,
            Self::Unauthenticated => 401,
        }
    }

    /// The code a client infers from an HTTP status when the body is not a Connect error.
    pub fn from_http_status(status: u16) -> Self {
        match status {
            400 => Self::Internal,
            401 => Self::Unauthenticated,
            403 => Self::PermissionDenied,
            404 => Self::Unimplemented,
            429 | 502 | 503 | 504 => Self::Unavailable,
            _ => Self::Unknown,
        }
    }
}

impl std::fmt::Display for ConnectCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct ErrorBody {
    code: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    message: String,
}

/// The JSON body of a Connect error response (always JSON, whatever the request codec).
pub fn error_body(code: ConnectCode, message: &str) -> Vec<u8> {
    let body = ErrorBody { code: code.as_str().to_owned(), message: message.to_owned() };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The code and message of a non-200 response: from its JSON body if it is a Connect
/// error, otherwise inferred from the HTTP status.
pub fn parse_error(status: u16, body: &[u8]) -> (ConnectCode, String) {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) => match ConnectCode::parse(&parsed.code) {
            Some(code) => (code, parsed.message),
            None => (ConnectCode::from_http_status(status), parsed.message),
        },
        Err(_) => (ConnectCode::from_http_status(status), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::runner::v1 as pb;

    #[test]
    fn content_types_select_a_codec() {
        assert_eq!(Codec::from_content_type("application/proto"), Some(Codec::Proto));
        assert_eq!(Codec::from_content_type("application/json; charset=utf-8"), Some(Codec::Json));
        assert_eq!(Codec::from_content_type("text/plain"), None);
        assert_eq!(Codec::from_content_type("application/grpc"), None);
    }

    #[test]
    fn empty_bodies_are_default_messages_in_both_codecs() {
        for codec in [Codec::Proto, Codec::Json] {
            let m: pb::FetchTaskRequest = codec.decode(b"").expect("empty body");
            assert_eq!(m, pb::FetchTaskRequest::default());
        }
        assert!(prost::Message::encode_to_vec(&pb::UpdateLogResponse::default()).is_empty());
    }

    #[test]
    fn json_uses_canonical_proto3_names_and_int64_strings() {
        let m = pb::FetchTaskRequest { tasks_version: 42, task_capacity: Some(2) };
        let text = String::from_utf8(Codec::Json.encode(&m).expect("encode")).expect("utf-8");
        assert_eq!(text, r#"{"tasksVersion":"42","taskCapacity":"2"}"#);
        let back: pb::FetchTaskRequest =
            Codec::Json.decode(br#"{"tasks_version":42,"taskCapacity":"2"}"#).expect("decode");
        assert_eq!(back, m);
        let state = pb::TaskState { id: 7, result: pb::Result::Success as i32, ..Default::default() };
        let text = String::from_utf8(Codec::Json.encode(&state).expect("encode")).expect("utf-8");
        assert_eq!(text, r#"{"id":"7","result":"RESULT_SUCCESS"}"#);
    }

    #[test]
    fn error_bodies_round_trip_and_statuses_map_both_ways() {
        let body = error_body(ConnectCode::Unauthenticated, "unregistered runner");
        assert_eq!(parse_error(401, &body), (ConnectCode::Unauthenticated, "unregistered runner".into()));
        assert_eq!(parse_error(404, b"404 page not found").0, ConnectCode::Unimplemented);
        assert_eq!(parse_error(503, b"").0, ConnectCode::Unavailable);
        assert_eq!(parse_error(400, b"").0, ConnectCode::Internal);
        for code in ConnectCode::ALL {
            assert_eq!(ConnectCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(ConnectCode::AlreadyExists.http_status(), 409);
        assert_eq!(ConnectCode::Canceled.http_status(), 499);
    }

    #[test]
    fn procedures_know_their_paths() {
        assert_eq!(Procedure::FetchTask.path(), "/runner.v1.RunnerService/FetchTask");
        assert_eq!(Procedure::FetchTask.name(), "FetchTask");
        assert_eq!(Procedure::from_path("/ping.v1.PingService/Ping"), Some(Procedure::Ping));
        assert_eq!(Procedure::from_path("/runner.v1.RunnerService/fetchtask"), None);
        assert!(!Procedure::Register.is_authenticated());
        assert!(Procedure::UpdateLog.is_authenticated());
    }
}
