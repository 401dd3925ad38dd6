//! A task's stored log, in memory or in a file written the way Forgejo writes it
//! (`<time> <content>\n`, time as `2006-01-02T15:04:05.0000000Z`).

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;

use solstice_forgejo::proto::Timestamp;
use time::OffsetDateTime;

/// Forgejo's row limit.
const MAX_ROW: usize = 64 * 1024;

/// One stored log row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    /// The row's time as the runner sent it (seconds, nanoseconds).
    pub time: (i64, i32),
    /// The content (newlines escaped as `\n`, cut at 64 KiB).
    pub content: String,
}

#[derive(Debug)]
pub(crate) enum LogStore {
    Memory(Vec<StoredRow>),
    File { path: PathBuf, writer: Option<BufWriter<std::fs::File>>, count: usize },
}

impl LogStore {
    pub(crate) fn memory() -> Self {
        Self::Memory(Vec::new())
    }

    pub(crate) fn file(path: PathBuf) -> std::io::Result<Self> {
        let file = std::fs::File::create(&path)?;
        Ok(Self::File { path, writer: Some(BufWriter::with_capacity(256 * 1024, file)), count: 0 })
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Memory(rows) => rows.len(),
            Self::File { count, .. } => *count,
        }
    }

    pub(crate) fn push(&mut self, time: Option<Timestamp>, content: &str) {
        let mut content = content.replace('\n', "\\n");
        if content.len() > MAX_ROW {
            let mut cut = MAX_ROW;
            while !content.is_char_boundary(cut) {
                cut -= 1;
            }
            content.truncate(cut);
        }
        let time = time.map(|t| (t.seconds, t.nanos)).unwrap_or_default();
        match self {
            Self::Memory(rows) => rows.push(StoredRow { time, content }),
            Self::File { writer, count, .. } => {
                if let Some(w) = writer {
                    let _ = writeln!(w, "{} {content}", format_time(time));
                }
                *count += 1;
            }
        }
    }

    /// Archiving flushes a file log.
    pub(crate) fn archive(&mut self) {
        if let Self::File { writer, .. } = self
            && let Some(mut w) = writer.take()
        {
            let _ = w.flush();
        }
    }

    pub(crate) fn rows(&mut self) -> Vec<StoredRow> {
        match self {
            Self::Memory(rows) => rows.clone(),
            Self::File { path, writer, .. } => {
                if let Some(w) = writer {
                    let _ = w.flush();
                }
                let Ok(file) = std::fs::File::open(path) else { return Vec::new() };
                std::io::BufReader::new(file)
                    .lines()
                    .map_while(Result::ok)
                    .map(|line| {
                        let (time, content) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                        StoredRow { time: parse_time(time), content: content.to_owned() }
                    })
                    .collect()
            }
        }
    }
}

fn format_time((seconds, nanos): (i64, i32)) -> String {
    let at = OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let (y, mo, d) = (at.year(), u8::from(at.month()), at.day());
    let (h, mi, s) = (at.hour(), at.minute(), at.second());
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:07}Z", nanos.max(0) / 100)
}

fn parse_time(text: &str) -> (i64, i32) {
    let format = time::format_description::well_known::Rfc3339;
    OffsetDateTime::parse(text, &format)
        .map(|t| (t.unix_timestamp(), i32::try_from(t.nanosecond()).unwrap_or(0)))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_like_forgejo_and_read_back() {
        assert_eq!(format_time((1_772_359_200, 100_000_000)), "2026-03-01T10:00:00.1000000Z");
        assert_eq!(parse_time("2026-03-01T10:00:00.1000000Z"), (1_772_359_200, 100_000_000));
    }
}
