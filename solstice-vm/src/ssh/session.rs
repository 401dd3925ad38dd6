//! One SSH connection to a machine, with host key verification and SFTP.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use russh::ChannelMsg;
use russh::client::{self, Handle};
use russh::keys::{PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags};
use solstice_core::{LogSink, LogStream, SshAccess};
use tokio::io::AsyncWriteExt;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

/// What went wrong over SSH.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshError {
    /// The TCP connection or the SSH handshake failed.
    #[error("could not connect to {addr}")]
    Connect {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: russh::Error,
    },
    /// The connection attempt took too long.
    #[error("SSH to {addr} did not answer within {timeout:?}")]
    Timeout {
        /// The address.
        addr: std::net::SocketAddr,
        /// The time waited.
        timeout: Duration,
    },
    /// The server's host key is not the one the machine was given.
    #[error("the SSH server at {addr} presented an unexpected host key")]
    HostKeyMismatch {
        /// The address.
        addr: std::net::SocketAddr,
    },
    /// The server refused our key.
    #[error("the SSH server at {addr} refused the key for user {user}")]
    Auth {
        /// The address.
        addr: std::net::SocketAddr,
        /// The user.
        user: String,
    },
    /// A key could not be parsed.
    #[error("invalid SSH key")]
    Key(#[source] russh::keys::Error),
    /// A channel operation failed.
    #[error("SSH channel operation `{operation}` failed")]
    Channel {
        /// What was being done.
        operation: &'static str,
        /// The cause.
        #[source]
        source: russh::Error,
    },
    /// An SFTP operation failed.
    #[error("SFTP {operation} of {path} failed")]
    Sftp {
        /// What was being done.
        operation: &'static str,
        /// The remote path.
        path: String,
        /// The cause.
        #[source]
        source: russh_sftp::client::error::Error,
    },
    /// Reading a local file or process for upload failed.
    #[error("could not read {what} for upload")]
    Local {
        /// What.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl SshError {
    /// Whether the server might simply not be up yet (worth retrying while booting).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::Timeout { .. })
    }
}

#[derive(Debug)]
struct HostKeyCheck {
    expected: PublicKey,
    mismatch: Arc<std::sync::atomic::AtomicBool>,
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let ok = matches!(key, PublicKeyOrCertificate::PublicKey { key, .. } if key.key_data() == self.expected.key_data());
        if !ok {
            self.mismatch.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(ok)
    }
}

/// An authenticated SSH connection to one machine. Cloning is cheap.
#[derive(Clone)]
pub struct SshSession {
    inner: Arc<Inner>,
}

struct Inner {
    handle: Handle<HostKeyCheck>,
    sftp: OnceCell<SftpSession>,
    addr: std::net::SocketAddr,
}

impl std::fmt::Debug for SshSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshSession").field("addr", &self.inner.addr).finish_non_exhaustive()
    }
}

/// What an exec'd command produced, collected.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecOutput {
    /// The exit status; `None` if it died of a signal or the channel closed without one.
    pub exit_code: Option<i32>,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
}

impl SshSession {
    /// Connects once, checks the host key against `access.host_key` and logs in with
    /// `access.client_key`.
    ///
    /// # Errors
    /// [`SshError`]: connection, timeout, host key mismatch, refused key.
    pub async fn connect(access: &SshAccess, timeout: Duration) -> Result<Self, SshError> {
        let expected = PublicKey::from_openssh(&access.host_key).map_err(|e| SshError::Key(e.into()))?;
        let key = russh::keys::decode_secret_key(access.client_key.expose(), None).map_err(SshError::Key)?;
        let mismatch = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handler = HostKeyCheck { expected, mismatch: mismatch.clone() };
        let config = Arc::new(client::Config {
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 8,
            nodelay: true,
            ..client::Config::default()
        });
        let addr = access.addr;
        let attempt = async {
            let mut handle = client::connect(config, addr, handler).await.map_err(|e| {
                if mismatch.load(std::sync::atomic::Ordering::SeqCst) {
                    SshError::HostKeyMismatch { addr }
                } else {
                    SshError::Connect { addr, source: e }
                }
            })?;
            let auth = handle
                .authenticate_publickey(&access.user, PrivateKeyWithHashAlg::new(Arc::new(key), None))
                .await
                .map_err(|e| SshError::Connect { addr, source: e })?;
            if !auth.success() {
                return Err(SshError::Auth { addr, user: access.user.clone() });
            }
            Ok(handle)
        };
        let handle = tokio::time::timeout(timeout, attempt).await.map_err(|_| SshError::Timeout { addr, timeout })??;
        Ok(Self { inner: Arc::new(Inner { handle, sftp: OnceCell::new(), addr }) })
    }

    /// Connects with retries every `interval` until `deadline` passes or `cancel` fires.
    /// Only transient failures are retried; a wrong host key or a refused key is final.
    ///
    /// # Errors
    /// The last [`SshError`]; [`SshError::Timeout`] when the deadline passed.
    pub async fn connect_with_retry(
        access: &SshAccess,
        deadline: Duration,
        interval: Duration,
        cancel: &CancellationToken,
    ) -> Result<Self, SshError> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            // dropbear forks per connection and TCG guests are slow: give each try time.
            let attempt_timeout = left.min(Duration::from_secs(10));
            let result = tokio::select! {
                r = Self::connect(access, attempt_timeout) => r,
                _ = cancel.cancelled() => return Err(SshError::Timeout { addr: access.addr, timeout: deadline }),
            };
            match result {
                Ok(session) => return Ok(session),
                Err(e) if e.is_transient() && tokio::time::Instant::now() + interval < until => {
                    tracing::trace!(error = %e, "SSH not ready yet");
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        _ = cancel.cancelled() => return Err(SshError::Timeout { addr: access.addr, timeout: deadline }),
                    }
                }
                Err(e) if e.is_transient() => return Err(SshError::Timeout { addr: access.addr, timeout: deadline }),
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.inner.handle.is_closed()
    }

    /// Runs `command` and collects its output.
    ///
    /// # Errors
    /// [`SshError::Channel`].
    pub async fn exec(&self, command: &str) -> Result<ExecOutput, SshError> {
        let mut channel = self.open().await?;
        channel.exec(true, command).await.map_err(|e| SshError::Channel { operation: "exec", source: e })?;
        let mut out = ExecOutput::default();
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, .. } => out.stderr.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => out.exit_code = i32::try_from(exit_status).ok(),
                _ => {}
            }
        }
        Ok(out)
    }

    /// Runs `command`, streaming stdout and stderr line by line into `sink` as they
    /// come. Returns the exit code, or `None` when `cancel` fired (the caller kills the
    /// remote processes) or the command died of a signal.
    ///
    /// # Errors
    /// [`SshError::Channel`].
    pub async fn exec_streaming(
        &self,
        command: &str,
        sink: &LogSink,
        cancel: &CancellationToken,
    ) -> Result<Option<i32>, SshError> {
        let mut channel = self.open().await?;
        channel.exec(true, command).await.map_err(|e| SshError::Channel { operation: "exec", source: e })?;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut code = None;
        loop {
            let msg = tokio::select! {
                msg = channel.wait() => msg,
                _ = cancel.cancelled() => {
                    let _ = channel.close().await;
                    code = None;
                    break;
                }
            };
            // What else has arrived already is taken with it, and both streams' data go
            // to the sink together, `::add-mask::` commands first
            // (`LogSink::send_read_together`): a mask on one stream covers a value the
            // SSH server forwarded after it on the other.
            let mut batch = vec![msg];
            while !matches!(batch.last(), Some(None)) {
                match channel.wait().now_or_never() {
                    Some(next) => batch.push(next),
                    None => break,
                }
            }
            let (mut read_out, mut read_err) = (Vec::new(), Vec::new());
            let mut closed = false;
            for msg in batch {
                match msg {
                    Some(ChannelMsg::Data { data }) => read_out.extend_from_slice(&data),
                    Some(ChannelMsg::ExtendedData { data, .. }) => read_err.extend_from_slice(&data),
                    Some(ChannelMsg::ExitStatus { exit_status }) => code = i32::try_from(exit_status).ok(),
                    Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                        tracing::debug!(?signal_name, "remote command died of a signal");
                        code = None;
                    }
                    Some(_) => {}
                    None => closed = true,
                }
            }
            if !read_out.is_empty() || !read_err.is_empty() {
                sink.send_read_together((&mut out, &read_out), (&mut err, &read_err)).await;
            }
            if closed {
                break;
            }
        }
        sink.flush(LogStream::Stdout, &mut out).await;
        sink.flush(LogStream::Stderr, &mut err).await;
        Ok(code)
    }

    /// Runs `command` with `input` streamed to its standard input (then EOF), and
    /// collects its output.
    ///
    /// # Errors
    /// [`SshError::Channel`], or [`SshError::Local`] when `input` fails.
    pub async fn exec_with_input(
        &self,
        command: &str,
        mut input: impl tokio::io::AsyncRead + Unpin,
    ) -> Result<ExecOutput, SshError> {
        let mut channel = self.open().await?;
        channel.exec(true, command).await.map_err(|e| SshError::Channel { operation: "exec", source: e })?;
        let mut writer = channel.make_writer();
        tokio::io::copy(&mut input, &mut writer)
            .await
            .map_err(|e| SshError::Local { what: "the upload stream".into(), source: e })?;
        let _ = writer.shutdown().await;
        drop(writer);
        channel.eof().await.map_err(|e| SshError::Channel { operation: "eof", source: e })?;
        let mut out = ExecOutput::default();
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, .. } => out.stderr.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => out.exit_code = i32::try_from(exit_status).ok(),
                _ => {}
            }
        }
        Ok(out)
    }

    async fn open(&self) -> Result<russh::Channel<client::Msg>, SshError> {
        self.inner
            .handle
            .channel_open_session()
            .await
            .map_err(|e| SshError::Channel { operation: "open session", source: e })
    }

    async fn sftp(&self) -> Result<&SftpSession, SshError> {
        self.inner
            .sftp
            .get_or_try_init(|| async {
                let channel = self.open().await?;
                channel
                    .request_subsystem(true, "sftp")
                    .await
                    .map_err(|e| SshError::Channel { operation: "sftp subsystem", source: e })?;
                SftpSession::new(channel.into_stream())
                    .await
                    .map_err(|e| SshError::Sftp { operation: "start", path: String::new(), source: e })
            })
            .await
    }

    /// Writes `data` to `path` over SFTP and sets its mode (e.g. `0o755` for scripts).
    ///
    /// # Errors
    /// [`SshError::Sftp`].
    pub async fn upload(&self, path: &str, data: &[u8], mode: u32) -> Result<(), SshError> {
        let sftp = self.sftp().await?;
        let sftp_error = |operation| move |e| SshError::Sftp { operation, path: path.to_owned(), source: e };
        let attributes = FileAttributes { permissions: Some(mode), ..FileAttributes::empty() };
        let mut file = sftp
            .open_with_flags_and_attributes(path, OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE, attributes)
            .await
            .map_err(sftp_error("open"))?;
        file.write_all(data)
            .await
            .map_err(|e| SshError::Sftp { operation: "write", path: path.to_owned(), source: e.into() })?;
        file.shutdown()
            .await
            .map_err(|e| SshError::Sftp { operation: "close", path: path.to_owned(), source: e.into() })?;
        // The server applies its umask at creation; set the mode explicitly.
        let attributes = FileAttributes { permissions: Some(mode), ..FileAttributes::empty() };
        sftp.set_metadata(path, attributes).await.map_err(sftp_error("chmod"))?;
        Ok(())
    }

    /// Creates a directory over SFTP; an existing directory is fine.
    ///
    /// # Errors
    /// [`SshError::Sftp`] when it neither exists nor can be created.
    pub async fn create_dir_all(&self, path: &str) -> Result<(), SshError> {
        let sftp = self.sftp().await?;
        let mut current = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            current.push('/');
            current.push_str(part);
            if sftp.try_exists(current.clone()).await.unwrap_or(false) {
                continue;
            }
            if let Err(e) = sftp.create_dir(current.clone()).await
                && !sftp.try_exists(current.clone()).await.unwrap_or(false)
            {
                return Err(SshError::Sftp { operation: "mkdir", path: current, source: e });
            }
        }
        Ok(())
    }

    /// Reads a whole file over SFTP.
    ///
    /// # Errors
    /// [`SshError::Sftp`].
    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>, SshError> {
        let sftp = self.sftp().await?;
        sftp.read(path).await.map_err(|e| SshError::Sftp { operation: "read", path: path.to_owned(), source: e })
    }
}
