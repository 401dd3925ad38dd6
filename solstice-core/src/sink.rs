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

    /// Sends the complete lines of what was read from a step's stdout and stderr at one
    /// time (`stdout.1` and `stderr.1`, appended to each stream's unfinished rest), the
    /// `::add-mask::` commands of either stream first.
    ///
    /// Which of two reads from two pipes was written first cannot be known, but a
    /// secret printed after its `::add-mask::` on the other stream must still be masked
    /// (issue 16: `echo ::add-mask::X; echo X >&2` leaked). A reader that, once either
    /// stream has data, also takes what the other one holds, and sends it through here,
    /// registers every mask that was written before the lines read with it; a value
    /// printed before its mask in the same read is masked too, which is the safe side.
    pub async fn send_read_together(&self, stdout: (&mut Vec<u8>, &[u8]), stderr: (&mut Vec<u8>, &[u8])) {
        let mut lines: Vec<OutputLine> = Vec::new();
        for (stream, (pending, chunk)) in [(LogStream::Stdout, stdout), (LogStream::Stderr, stderr)] {
            let before = pending.len();
            pending.extend_from_slice(chunk);
            // Only the new bytes can hold a newline: the rest had none.
            let Some(last_newline) = chunk.iter().rposition(|&b| b == b'\n').map(|at| before + at) else { continue };
            let text: Vec<u8> = pending.drain(..=last_newline).collect();
            for line in text[..last_newline].split(|&b| b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                lines.push(OutputLine { stream, line: String::from_utf8_lossy(line).into_owned() });
            }
        }
        let (masks, others): (Vec<OutputLine>, Vec<OutputLine>) = lines.into_iter().partition(|l| is_add_mask(&l.line));
        for line in masks.into_iter().chain(others) {
            self.send(line.stream, line.line).await;
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

/// Whether `line` is an `::add-mask::` command, in the `::` or the legacy `##[…]` form
/// (names are matched without regard to case, as the runner does).
fn is_add_mask(line: &str) -> bool {
    let line = line.trim_start().to_ascii_lowercase();
    line.starts_with("::add-mask::") || line.contains("##[add-mask]")
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

    #[tokio::test]
    async fn masks_read_together_go_first_and_lines_stay_whole() {
        let (sink, mut rx) = LogSink::channel(16);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        sink.send_read_together((&mut out, b"a\n::add-mask::x\npart"), (&mut err, b"x\r\n::ADD-MASK::y\n")).await;
        sink.send_read_together((&mut out, b"ial\n"), (&mut err, b"")).await;
        drop(sink);
        let mut lines = Vec::new();
        while let Some(l) = rx.recv().await {
            lines.push((l.stream, l.line));
        }
        use LogStream::{Stderr, Stdout};
        let expected = [(Stdout, "::add-mask::x"), (Stderr, "::ADD-MASK::y"), (Stdout, "a"), (Stderr, "x"), (Stdout, "partial")];
        assert_eq!(lines, expected.map(|(s, l)| (s, l.to_owned())));
    }
}
