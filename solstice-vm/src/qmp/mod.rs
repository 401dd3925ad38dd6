//! A small QMP client: the QEMU Machine Protocol over a Unix socket.
//!
//! We speak QMP ourselves instead of using the `qapi` crate: the framing is a few JSON
//! lines (`qmp/codec.rs`), `qapi`'s generated schema is pinned to one QEMU release (9.1),
//! so events and enum values of newer or older QEMUs may fail to decode, and the crate is
//! only passively maintained. The codec is pure and tested without QEMU; this client is a
//! thin transport over it that adds timeouts.
//!
//! [`crate::QemuHypervisor`] keeps a [`QmpClient`] per machine to stop it in order; use
//! one directly to drive a QEMU you started with [`crate::qemu::QemuProcess`].

pub(crate) mod codec;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;

pub use codec::QmpDecodeError;
pub(crate) use codec::QmpMessage;

/// What went wrong talking to QEMU over QMP.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QmpError {
    /// The socket could not be reached before the deadline.
    #[error("could not connect to the QMP socket {}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The last connection error.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the socket failed.
    #[error("QMP I/O failed during `{command}`")]
    Io {
        /// The command in flight (`greeting` while connecting).
        command: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// QEMU closed the socket (it exited).
    #[error("QEMU closed the QMP socket during `{command}`")]
    Closed {
        /// The command in flight.
        command: String,
    },
    /// No answer came in time.
    #[error("QMP command `{command}` got no answer within {timeout:?}")]
    Timeout {
        /// The command.
        command: String,
        /// The time waited.
        timeout: Duration,
    },
    /// QEMU answered with an error.
    #[error("QMP command `{command}` failed: {class}: {desc}")]
    Command {
        /// The command.
        command: String,
        /// QEMU's error class.
        class: String,
        /// QEMU's description.
        desc: String,
    },
    /// QEMU sent something that is not QMP.
    #[error("QEMU sent a malformed QMP message during `{command}`")]
    Decode {
        /// The command in flight.
        command: String,
        /// What was wrong.
        #[source]
        source: QmpDecodeError,
    },
}

/// An asynchronous QMP event.
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    /// The event name (`SHUTDOWN`, `POWERDOWN`, `GUEST_PANICKED`, …).
    pub name: String,
    /// The event's data.
    pub data: Value,
}

/// A negotiated QMP connection to one QEMU process.
///
/// Commands run one at a time; events that arrive meanwhile are kept and handed out by
/// [`QmpClient::next_event`].
#[derive(Debug)]
pub struct QmpClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_id: u64,
    events: VecDeque<QmpEvent>,
    version: String,
    timeout: Duration,
}

impl QmpClient {
    /// Connects to `path`, retrying until `deadline` (QEMU creates the socket shortly
    /// after it starts), reads the greeting and leaves capabilities negotiation mode.
    ///
    /// # Errors
    /// [`QmpError::Connect`] when the socket never accepted; other variants when the
    /// greeting or negotiation failed.
    ///
    /// # Cancel safety
    /// Not cancel safe: a cancelled call leaves no usable client (nothing leaks).
    pub async fn connect(path: &Path, deadline: Duration) -> Result<Self, QmpError> {
        let until = Instant::now() + deadline;
        let mut delay = Duration::from_millis(10);
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(stream) => break stream,
                Err(e) if Instant::now() >= until => {
                    return Err(QmpError::Connect { path: path.to_path_buf(), source: e });
                }
                Err(_) => {
                    tokio::time::sleep(delay.min(until.saturating_duration_since(Instant::now()))).await;
                    delay = (delay * 2).min(Duration::from_millis(200));
                }
            }
        };
        let (read, write) = stream.into_split();
        let mut client = Self {
            reader: BufReader::new(read),
            writer: write,
            next_id: 0,
            events: VecDeque::new(),
            version: String::new(),
            timeout: deadline.max(Duration::from_secs(5)),
        };
        let greeting = tokio::time::timeout(client.timeout, client.read_message("greeting"))
            .await
            .map_err(|_| QmpError::Timeout { command: "greeting".into(), timeout: client.timeout })??;
        match greeting {
            QmpMessage::Greeting { version } => client.version = version,
            _ => {
                return Err(QmpError::Decode {
                    command: "greeting".into(),
                    source: QmpDecodeError::UnknownShape("expected the QMP greeting".into()),
                });
            }
        }
        client.execute("qmp_capabilities", None).await?;
        Ok(client)
    }

    /// The QEMU version from the greeting (`7.2.22`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Runs a command and returns its result.
    ///
    /// # Errors
    /// [`QmpError::Command`] when QEMU rejects it; I/O, timeout and closed-socket errors.
    ///
    /// # Cancel safety
    /// Not cancel safe: a cancelled command may still run in QEMU, and its answer would be
    /// skipped by the next command (answers are matched by id).
    pub async fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        self.next_id += 1;
        let id = self.next_id.to_string();
        let line = codec::encode_command(command, arguments.as_ref(), &id);
        let timeout = self.timeout;
        let exchange = async {
            self.writer
                .write_all(&line)
                .await
                .map_err(|e| QmpError::Io { command: command.to_owned(), source: e })?;
            loop {
                match self.read_message(command).await? {
                    QmpMessage::Return { id: Some(got), value } if got == id => return Ok(value),
                    QmpMessage::Error { id: Some(got), class, desc } if got == id => {
                        return Err(QmpError::Command { command: command.to_owned(), class, desc });
                    }
                    QmpMessage::Event { name, data } => self.events.push_back(QmpEvent { name, data }),
                    other => tracing::debug!(?other, "skipping a QMP answer to an earlier command"),
                }
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| QmpError::Timeout { command: command.to_owned(), timeout })?
    }

    /// `query-status`: the run state (`running`, `paused`, `shutdown`, …).
    ///
    /// # Errors
    /// As [`QmpClient::execute`].
    pub async fn query_status(&mut self) -> Result<String, QmpError> {
        let value = self.execute("query-status", None).await?;
        Ok(value.get("status").and_then(Value::as_str).unwrap_or("unknown").to_owned())
    }

    /// `system_powerdown`: presses the virtual power button (ACPI).
    ///
    /// # Errors
    /// As [`QmpClient::execute`].
    pub async fn system_powerdown(&mut self) -> Result<(), QmpError> {
        self.execute("system_powerdown", None).await.map(drop)
    }

    /// `quit`: QEMU exits at once. Reads until QEMU closes the socket, so the command
    /// is not lost by closing too early.
    ///
    /// # Errors
    /// As [`QmpClient::execute`]; a socket closed before the answer counts as success.
    pub async fn quit(&mut self) -> Result<(), QmpError> {
        match self.execute("quit", None).await {
            Ok(_) | Err(QmpError::Closed { .. }) => {}
            Err(e) => return Err(e),
        }
        let drain = async {
            let mut line = String::new();
            while matches!(self.reader.read_line(&mut line).await, Ok(n) if n > 0) {
                line.clear();
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
        Ok(())
    }

    /// The next asynchronous event, waiting at most `timeout`; `None` when none came.
    ///
    /// # Errors
    /// [`QmpError::Closed`] when QEMU exited; I/O errors.
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled wait loses no event that was already read.
    pub async fn next_event(&mut self, timeout: Duration) -> Result<Option<QmpEvent>, QmpError> {
        if let Some(event) = self.events.pop_front() {
            return Ok(Some(event));
        }
        let until = Instant::now() + timeout;
        loop {
            let message = match tokio::time::timeout_at(until, self.read_message("event")).await {
                Err(_) => return Ok(None),
                Ok(message) => message?,
            };
            if let QmpMessage::Event { name, data } = message {
                return Ok(Some(QmpEvent { name, data }));
            }
        }
    }

    async fn read_message(&mut self, command: &str) -> Result<QmpMessage, QmpError> {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self
                .reader
                .read_line(&mut line)
                .await
                .map_err(|e| QmpError::Io { command: command.to_owned(), source: e })?;
            if n == 0 {
                return Err(QmpError::Closed { command: command.to_owned() });
            }
            if line.trim().is_empty() {
                continue;
            }
            let message = codec::decode_message(&line)
                .map_err(|e| QmpError::Decode { command: command.to_owned(), source: e })?;
            if let QmpMessage::Event { name, .. } = &message {
                tracing::debug!(event = %name, "QMP event");
            }
            return Ok(message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A scripted QMP server on a socket: answers each command by name.
    async fn fake_qemu(listener: UnixListener) {
        let Ok((stream, _)) = listener.accept().await else { return };
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let greeting = r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}"#;
        let _ = write.write_all(format!("{greeting}\n").as_bytes()).await;
        while let Ok(Some(line)) = lines.next_line().await {
            let request: Value = serde_json::from_str(&line).unwrap_or_default();
            let id = request["id"].clone();
            let reply = match request["execute"].as_str() {
                Some("qmp_capabilities") => serde_json::json!({"return": {}, "id": id}).to_string(),
                Some("query-status") => format!(
                    "{}\n{}",
                    serde_json::json!({"event": "RESUME", "timestamp": {}}),
                    serde_json::json!({"return": {"status": "running", "running": true}, "id": id})
                ),
                Some("quit") => {
                    let _ = write
                        .write_all(format!("{}\n", serde_json::json!({"return": {}, "id": id})).as_bytes())
                        .await;
                    // QEMU closes the socket when it exits.
                    return;
                }
                _ => serde_json::json!({"error": {"class": "CommandNotFound", "desc": "nope"}, "id": id}).to_string(),
            };
            let _ = write.write_all(format!("{reply}\n").as_bytes()).await;
        }
    }

    #[tokio::test]
    async fn negotiates_runs_commands_and_keeps_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let server = tokio::spawn(fake_qemu(listener));
        let mut client = QmpClient::connect(&path, Duration::from_secs(5)).await.expect("connect");
        assert_eq!(client.version(), "7.2.0");
        assert_eq!(client.query_status().await.expect("status"), "running");
        let event = client.next_event(Duration::from_millis(10)).await.expect("event");
        assert_eq!(event.map(|e| e.name).as_deref(), Some("RESUME"));
        match client.execute("nope", None).await {
            Err(QmpError::Command { class, .. }) => assert_eq!(class, "CommandNotFound"),
            other => panic!("expected a command error, got {other:?}"),
        }
        client.quit().await.expect("quit");
        server.await.expect("server");
    }

    #[tokio::test]
    async fn a_missing_socket_fails_after_the_deadline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let started = std::time::Instant::now();
        let result = QmpClient::connect(&dir.path().join("none.sock"), Duration::from_millis(300)).await;
        assert!(matches!(result, Err(QmpError::Connect { .. })), "{result:?}");
        assert!(started.elapsed() >= Duration::from_millis(250));
    }
}
