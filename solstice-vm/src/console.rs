//! Following the guest's serial console while it boots.

use std::path::PathBuf;
use std::time::Duration;

use solstice_core::{LogSink, LogStream};
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
            let mut pending = Vec::new();
            let mut line_buf = Vec::new();
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
                            pending.extend_from_slice(&cleaned);
                            while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
                                line_buf.clear();
                                line_buf.extend(pending.drain(..=pos));
                                line_buf.pop();
                                let line = String::from_utf8_lossy(&line_buf).into_owned();
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
            sink.flush(LogStream::System, &mut pending).await;
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
}
