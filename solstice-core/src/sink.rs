//! Where a step's or a machine's output lines go while they are produced.

use tokio::sync::mpsc;

use crate::LogStream;

/// One line of output, before masking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    /// Which stream it came from.
    pub stream: LogStream,
    /// The line without its terminator.
    pub line: String,
}

/// A bounded channel end that executors and hypervisors write output lines into.
///
/// It is bounded on purpose: a step that prints faster than the forge accepts logs is
/// slowed down instead of growing memory. Cloning is cheap.
#[derive(Debug, Clone)]
pub struct LogSink {
    tx: mpsc::Sender<OutputLine>,
}

impl LogSink {
    /// A sink and the receiver that reads it, holding at most `capacity` lines in flight.
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<OutputLine>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Self { tx }, rx)
    }

    /// Sends one line, waiting while the reader is behind.
    ///
    /// A line sent after the reader has gone is dropped: that only happens once the
    /// engine stopped listening to the job, when nobody could see it anyway.
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled send has not sent the line.
    pub async fn send(&self, stream: LogStream, line: impl Into<String>) {
        let line = OutputLine { stream, line: line.into() };
        if self.tx.send(line).await.is_err() {
            tracing::trace!("log line sent after its reader closed");
        }
    }

    /// Splits `chunk` into lines and sends the complete ones; returns the unfinished rest.
    ///
    /// Executors that read output in arbitrary chunks keep the returned tail and prepend
    /// it to the next chunk, so no line is split or lost. Invalid UTF-8 is replaced.
    pub async fn send_chunk(&self, stream: LogStream, pending: &mut Vec<u8>, chunk: &[u8]) {
        pending.extend_from_slice(chunk);
        while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = pending.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.send(stream, String::from_utf8_lossy(&line).into_owned()).await;
        }
    }

    /// Sends what is left in `pending` as a last line, if anything.
    pub async fn flush(&self, stream: LogStream, pending: &mut Vec<u8>) {
        if !pending.is_empty() {
            let line = String::from_utf8_lossy(pending).into_owned();
            pending.clear();
            self.send(stream, line).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_are_split_into_whole_lines() {
        let (sink, mut rx) = LogSink::channel(16);
        let mut pending = Vec::new();
        sink.send_chunk(LogStream::Stdout, &mut pending, b"one\ntw").await;
        sink.send_chunk(LogStream::Stdout, &mut pending, b"o\r\nthree").await;
        sink.flush(LogStream::Stdout, &mut pending).await;
        drop(sink);
        let mut lines = Vec::new();
        while let Some(l) = rx.recv().await {
            lines.push(l.line);
        }
        assert_eq!(lines, ["one", "two", "three"]);
    }
}
