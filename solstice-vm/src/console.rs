//! The guest's serial console: recorded on the host with a size cap, and followed into
//! the job log while the machine boots.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use solstice_core::{LineSplitter, LogSink, LogStream};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often the console file is read.
const POLL: Duration = Duration::from_millis(100);

/// Tails the console file QEMU writes into a [`LogSink`], inside a collapsible
/// `##[group]` section, and reports when a ready marker line appears.
///
/// QEMU writes the serial console to a file (kept until the machine is destroyed, for
/// post-mortem reading); this task follows that file. Stop it before steps run, so boot
/// output and step output do not interleave.
#[derive(Debug)]
pub struct ConsoleTail {
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    ready: watch::Receiver<bool>,
}

impl ConsoleTail {
    /// Starts following `path` (which may not exist yet), sending lines to `sink` under a
    /// group titled `title`.
    pub fn start(path: PathBuf, sink: LogSink, title: String, marker: Option<String>) -> Self {
        let stop = CancellationToken::new();
        let (ready_tx, ready) = watch::channel(false);
        let token = stop.clone();
        let task = tokio::spawn(async move {
            sink.send(LogStream::System, format!("##[group]{title}")).await;
            let mut offset = 0u64;
            // Splits lines in one pass and cuts an endless one at 64 KiB (issue 16).
            let mut lines = LineSplitter::new();
            loop {
                let stopping = token.is_cancelled();
                if let Ok(mut file) = tokio::fs::File::open(&path).await
                    && file.seek(std::io::SeekFrom::Start(offset)).await.is_ok()
                {
                    {
                        let mut chunk = Vec::new();
                        if let Ok(n) = file.read_to_end(&mut chunk).await {
                            offset += n as u64;
                            // Serial consoles send CR LF and sometimes bare CRs; keep lines only.
                            let cleaned: Vec<u8> = chunk.into_iter().filter(|b| *b != b'\r' && *b != 0).collect();
                            for line in lines.push(&cleaned) {
                                if marker.as_deref().is_some_and(|m| line.contains(m)) {
                                    let _ = ready_tx.send(true);
                                }
                                sink.send(LogStream::System, line).await;
                            }
                        }
                    }
                }
                if stopping {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = token.cancelled() => {}
                }
            }
            if let Some(line) = lines.finish() {
                sink.send(LogStream::System, line).await;
            }
            sink.send(LogStream::System, "##[endgroup]").await;
        });
        Self { stop, task: Some(task), ready }
    }

    /// Whether the ready marker has been seen.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Reads what is left, closes the group and stops.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ConsoleTail {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// How much of a guest's serial console is kept on the host.
///
/// The first [`head_bytes`](Self::head_bytes) go to `console.log` (boot diagnostics read
/// it, and the start of a boot is what explains a failure); after that a notice line, and
/// the rest goes to `console.tail.log`, which is moved to `console.tail.log.1` (replacing
/// the previous one) each time it reaches [`tail_bytes`](Self::tail_bytes). A guest can
/// therefore never make its console take more than `head + 2 × tail` bytes on the host,
/// however much it prints, and the last `tail` to `2 × tail` bytes are always kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleLimits {
    /// The bytes kept from the start. Default: 8 MiB.
    pub head_bytes: u64,
    /// The size at which the tail file is rotated. Default: 8 MiB.
    pub tail_bytes: u64,
}

impl Default for ConsoleLimits {
    fn default() -> Self {
        Self { head_bytes: 8 * 1024 * 1024, tail_bytes: 8 * 1024 * 1024 }
    }
}

/// The console file with its cap: see [`ConsoleLimits`].
#[derive(Debug)]
struct CappedLog {
    limits: ConsoleLimits,
    head: tokio::fs::File,
    head_written: u64,
    tail_path: PathBuf,
    tail: Option<tokio::fs::File>,
    tail_written: u64,
}

impl CappedLog {
    async fn create(path: &Path, limits: ConsoleLimits) -> std::io::Result<Self> {
        let head = private_file(path).await?;
        let tail_path = path.with_file_name(format!("{}.tail.log", path.file_stem().and_then(|s| s.to_str()).unwrap_or("console")));
        Ok(Self { limits, head, head_written: 0, tail_path, tail: None, tail_written: 0 })
    }

    async fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let head_room = self.limits.head_bytes.saturating_sub(self.head_written);
        if head_room > 0 {
            let n = data.len().min(usize::try_from(head_room).unwrap_or(usize::MAX));
            self.head.write_all(&data[..n]).await?;
            self.head_written += n as u64;
            data = &data[n..];
            if self.head_written == self.limits.head_bytes {
                let notice = format!(
                    "\n[solstice: the console passed {} bytes; what follows is in {} (the last {} to {} bytes are kept)]\n",
                    self.limits.head_bytes,
                    self.tail_path.file_name().and_then(|n| n.to_str()).unwrap_or("the tail file"),
                    self.limits.tail_bytes,
                    2 * self.limits.tail_bytes,
                );
                self.head.write_all(notice.as_bytes()).await?;
                self.head.flush().await?;
            }
        }
        while !data.is_empty() {
            if self.tail.is_none() || self.tail_written >= self.limits.tail_bytes {
                if self.tail.take().is_some() {
                    let mut previous = self.tail_path.clone().into_os_string();
                    previous.push(".1");
                    tokio::fs::rename(&self.tail_path, previous).await?;
                }
                self.tail = Some(private_file(&self.tail_path).await?);
                self.tail_written = 0;
            }
            let room = self.limits.tail_bytes.max(1) - self.tail_written;
            let n = data.len().min(usize::try_from(room).unwrap_or(usize::MAX));
            if let Some(tail) = &mut self.tail {
                tail.write_all(&data[..n]).await?;
            }
            self.tail_written += n as u64;
            data = &data[n..];
        }
        Ok(())
    }
}

/// Creates (or truncates) `path` readable by its owner only: the console can show what a
/// job printed, secrets included (issue 16, item 6).
async fn private_file(path: &Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).await
}

/// Records a guest's serial console into a capped file ([`ConsoleLimits`]).
///
/// QEMU does not cap a `file` character device, so the console goes to a Unix socket this
/// recorder listens on (QEMU connects to it as a client when it starts: see
/// [`crate::qemu::VmSpec::console_socket`]) and the recorder writes the file. Dropping the
/// recorder stops it; it also ends when QEMU closes the connection.
#[derive(Debug)]
pub struct ConsoleRecorder {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl ConsoleRecorder {
    /// Listens on `socket` (replacing a stale socket file) and records what QEMU sends
    /// into `log` with `limits`.
    ///
    /// # Errors
    /// When the socket cannot be bound.
    pub fn bind(socket: &Path, log: PathBuf, limits: ConsoleLimits) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(socket);
        let listener = tokio::net::UnixListener::bind(socket)?;
        // bind(2) takes the mode from the umask; the machine's directory is 0700 already,
        // so the moment between bind and chmod opens nothing.
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let result = tokio::select! {
                result = record(listener, &log, limits) => result,
                () = token.cancelled() => Ok(()),
            };
            if let Err(e) = result {
                tracing::warn!(log = %log.display(), error = %e, "recording the guest console failed");
            }
        });
        Ok(Self { stop, task })
    }
}

impl Drop for ConsoleRecorder {
    fn drop(&mut self) {
        self.stop.cancel();
        self.task.abort();
    }
}

async fn record(listener: tokio::net::UnixListener, log: &Path, limits: ConsoleLimits) -> std::io::Result<()> {
    // The file exists from the start, so whoever follows it finds it.
    let mut file = CappedLog::create(log, limits).await?;
    let (mut stream, _) = listener.accept().await?;
    drop(listener);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        file.write(&buf[..n]).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_stream_in_a_group_and_the_marker_is_seen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("console.log");
        let (sink, mut rx) = LogSink::channel(64);
        let tail = ConsoleTail::start(path.clone(), sink, "Boot".into(), Some("sshd started".into()));
        tokio::time::sleep(Duration::from_millis(150)).await;
        std::fs::write(&path, b"SeaBIOS\r\nLinux boo").expect("write");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(!tail.is_ready());
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).expect("open");
        std::io::Write::write_all(&mut file, b"ting\r\nguest: sshd started\r\npartial").expect("append");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(tail.is_ready());
        tail.stop().await;
        let mut lines = Vec::new();
        while let Ok(line) = rx.try_recv() {
            lines.push(line.line);
        }
        assert_eq!(lines, ["##[group]Boot", "SeaBIOS", "Linux booting", "guest: sshd started", "partial", "##[endgroup]"]);
    }

    /// Issue 16, item 13: a guest printing far more than the cap leaves at most
    /// `head + 2 × tail` bytes on the host: the start in `console.log` (which the boot
    /// tail still follows), a notice, and the latest output in the rotated tail files.
    #[tokio::test]
    async fn issue_16_the_console_file_is_capped() {
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("console.log");
        let socket = dir.path().join("console.sock");
        let limits = ConsoleLimits { head_bytes: 64 * 1024, tail_bytes: 32 * 1024 };
        let recorder = ConsoleRecorder::bind(&socket, log.clone(), limits).expect("bind");
        let (sink, mut rx) = LogSink::channel(1024);
        let tail = ConsoleTail::start(log.clone(), sink, "Boot".into(), Some("login:".into()));
        // A fake guest: a boot banner, then 4 MiB of noise, then a last line.
        let mut guest = tokio::net::UnixStream::connect(&socket).await.expect("connect");
        guest.write_all(b"Linux version 6.1\r\nlogin: \r\n").await.expect("write");
        let noise = vec![b'n'; 64 * 1024];
        for _ in 0..64 {
            guest.write_all(&noise).await.expect("write");
        }
        guest.write_all(b"\nlast words\n").await.expect("write");
        drop(guest);
        tokio::time::timeout(Duration::from_secs(10), async {
            while !tail.is_ready() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the boot tail saw the marker");
        // The recorder ends when the guest's side closes.
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut { recorder }.task).await;
        tail.stop().await;

        let head = std::fs::read(&log).expect("console.log");
        let current = std::fs::read(dir.path().join("console.tail.log")).expect("tail");
        let previous = std::fs::read(dir.path().join("console.tail.log.1")).expect("previous tail");
        let total = head.len() + current.len() + previous.len();
        assert!(total as u64 <= limits.head_bytes + 2 * limits.tail_bytes + 256, "{total} bytes kept");
        assert!(head.starts_with(b"Linux version 6.1\r\n"));
        assert!(String::from_utf8_lossy(&head).contains("[solstice: the console passed 65536 bytes"));
        assert!(current.ends_with(b"last words\n"), "the latest output is kept");
        assert_eq!(previous.len() as u64, limits.tail_bytes);
        let mut lines = Vec::new();
        while let Ok(line) = rx.try_recv() {
            lines.push(line.line);
        }
        assert!(lines.iter().any(|l| l == "Linux version 6.1"), "{:?}", &lines[..lines.len().min(3)]);
    }
}
