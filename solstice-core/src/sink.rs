//! Where a step's or a machine's output lines go while they are produced.

use tokio::sync::mpsc;

use crate::LogStream;

/// The longest line passed on whole: a longer one (a step printing megabytes without a
/// newline) goes out in pieces of at most this many bytes, split at a character boundary,
/// so neither memory nor the newline search grows with the line (issue 16, item 12).
pub const MAX_LINE_BYTES: usize = 64 * 1024;

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
    /// it to the next chunk, so no line is split or lost. A line longer than
    /// [`MAX_LINE_BYTES`] is sent in pieces of that size. Invalid UTF-8 is replaced.
    pub async fn send_chunk(&self, stream: LogStream, pending: &mut Vec<u8>, chunk: &[u8]) {
        let mut lines = Vec::new();
        split_lines(pending, chunk, &mut lines);
        for line in lines {
            self.send(stream, line).await;
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
            // Only the new bytes are searched, and a line past MAX_LINE_BYTES goes out in
            // pieces (issue 16, item 12).
            let mut texts = Vec::new();
            split_lines(pending, chunk, &mut texts);
            lines.extend(texts.into_iter().map(|line| OutputLine { stream, line }));
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

/// Cuts a byte stream into lines: `\n` ends a line (a `\r` before it is dropped), and a
/// line longer than [`MAX_LINE_BYTES`] is cut into pieces of that size.
///
/// Each byte is looked at once (the unfinished line is never searched again) and at most
/// [`MAX_LINE_BYTES`] plus three bytes are held between chunks, whatever the input.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// An empty splitter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `chunk` and returns the lines (and pieces of over-long lines) it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        split_lines(&mut self.pending, chunk, &mut lines);
        lines
    }

    /// The unfinished last line, if any, emptying the splitter.
    pub fn finish(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            return None;
        }
        let line = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        Some(line)
    }
}

/// Moves the lines `chunk` completes (with what `pending` held before) into `lines`, and
/// keeps the unfinished rest in `pending`.
///
/// `pending` never grows past [`MAX_LINE_BYTES`]: only the new bytes are searched for a
/// newline, and only up to the room left in the current line, so a line without end costs
/// time in proportion to its length and memory in proportion to the cap.
fn split_lines(pending: &mut Vec<u8>, chunk: &[u8], lines: &mut Vec<String>) {
    let mut rest = chunk;
    while !rest.is_empty() {
        let room = MAX_LINE_BYTES.saturating_sub(pending.len());
        // Up to two bytes past the room: a newline (or CR LF) right after a full line ends
        // it, rather than leaving an empty piece behind.
        let window = &rest[..rest.len().min(room + 2)];
        let newline = window.iter().position(|&b| b == b'\n').filter(|&pos| pos <= room || window[room] == b'\r');
        if let Some(pos) = newline {
            pending.extend_from_slice(&window[..pos]);
            rest = &rest[pos + 1..];
            if pending.last() == Some(&b'\r') {
                pending.pop();
            }
            lines.push(String::from_utf8_lossy(pending).into_owned());
            pending.clear();
        } else if window.len() > room {
            pending.extend_from_slice(&window[..room]);
            rest = &rest[room..];
            let end = piece_end(pending, rest[0]);
            lines.push(String::from_utf8_lossy(&pending[..end]).into_owned());
            pending.drain(..end);
        } else {
            pending.extend_from_slice(window);
            rest = &rest[window.len()..];
        }
    }
}

/// Where a full piece ends so that no UTF-8 character is cut in two: before the first byte
/// of the character `next` continues, if it continues one.
fn piece_end(piece: &[u8], next: u8) -> usize {
    let is_continuation = |b: u8| b & 0xc0 == 0x80;
    if !is_continuation(next) {
        return piece.len();
    }
    // A UTF-8 character is at most four bytes: its first byte is among the last three.
    match piece.iter().rev().take(3).position(|&b| !is_continuation(b)) {
        Some(back) => piece.len() - back - 1,
        None => piece.len(),
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

    async fn collect(mut rx: mpsc::Receiver<OutputLine>) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(l) = rx.recv().await {
            lines.push(l.line);
        }
        lines
    }

    #[tokio::test]
    async fn chunks_are_split_into_whole_lines() {
        let (sink, rx) = LogSink::channel(16);
        let mut pending = Vec::new();
        sink.send_chunk(LogStream::Stdout, &mut pending, b"one\ntw").await;
        sink.send_chunk(LogStream::Stdout, &mut pending, b"o\r\nthree").await;
        sink.flush(LogStream::Stdout, &mut pending).await;
        drop(sink);
        assert_eq!(collect(rx).await, ["one", "two", "three"]);
    }

    /// Issue 16, item 12: a 1 MiB line without a newline, fed in uneven chunks, comes out as
    /// sixteen 64 KiB pieces in order with nothing lost, and the splitter never holds more
    /// than one piece. (GitHub's runner cuts live-console lines too, at 1024 characters:
    /// actions/runner src/Runner.Common/JobServerQueue.cs; the 64 KiB piece is the issue's.)
    #[tokio::test]
    async fn issue_16_a_long_line_comes_out_in_64_kib_pieces() {
        let line: Vec<u8> = (0..1024 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
        let (sink, rx) = LogSink::channel(64);
        let mut pending = Vec::new();
        for chunk in line.chunks(7_919) {
            sink.send_chunk(LogStream::Stdout, &mut pending, chunk).await;
            assert!(pending.len() <= MAX_LINE_BYTES, "{} bytes held", pending.len());
        }
        sink.send_chunk(LogStream::Stdout, &mut pending, b"\nnext\n").await;
        drop(sink);
        let lines = collect(rx).await;
        assert_eq!(lines.len(), 17, "sixteen pieces and the next line");
        assert!(lines[..16].iter().all(|l| l.len() == MAX_LINE_BYTES));
        assert_eq!(lines[..16].concat().as_bytes(), &line[..]);
        assert_eq!(lines[16], "next");
    }

    /// Issue 16, item 12, on the path the executors take: reads of both streams together
    /// cut an endless stdout line into 64 KiB pieces while stderr lines pass whole.
    #[tokio::test]
    async fn issue_16_reads_together_cut_a_long_line_too() {
        let (sink, rx) = LogSink::channel(64);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let chunk = vec![b'o'; 16 * 1024];
        for _ in 0..64 {
            sink.send_read_together((&mut out, &chunk), (&mut err, b"")).await;
            assert!(out.len() <= MAX_LINE_BYTES, "{} bytes held", out.len());
        }
        sink.send_read_together((&mut out, b"\n"), (&mut err, b"e\n")).await;
        drop(sink);
        let lines = collect(rx).await;
        assert_eq!(lines.len(), 17, "{:?}", lines.iter().map(String::len).collect::<Vec<_>>());
        assert_eq!(lines.iter().filter(|l| l.len() == MAX_LINE_BYTES).count(), 16);
        assert!(lines.contains(&"e".to_owned()));
    }

    #[test]
    fn a_line_of_exactly_the_cap_is_one_line_and_pieces_keep_characters_whole() {
        let mut splitter = LineSplitter::new();
        let full = "x".repeat(MAX_LINE_BYTES);
        assert_eq!(splitter.push(format!("{full}\r\n").as_bytes()), [full]);
        // 'é' is two bytes; one byte short of the cap the next one would straddle it.
        let text = format!("{}é{}", "y".repeat(MAX_LINE_BYTES - 1), "z".repeat(10));
        let mut pieces = Vec::new();
        for byte in text.as_bytes() {
            pieces.extend(splitter.push(std::slice::from_ref(byte)));
        }
        pieces.extend(splitter.finish());
        assert_eq!(pieces.len(), 2, "{:?}", pieces.iter().map(String::len).collect::<Vec<_>>());
        assert_eq!(pieces[0], "y".repeat(MAX_LINE_BYTES - 1));
        assert_eq!(pieces.concat(), text);
        assert_eq!(splitter.finish(), None);
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
