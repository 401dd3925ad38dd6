//! Standard output of the subcommands, where a reader that leaves early is normal use.
//!
//! `solstice workflow plan … | head` closes the pipe after ten lines. Rust ignores SIGPIPE,
//! so the next write fails with EPIPE, and `println!` panics on that. Every line goes
//! through [`outln!`] instead, which returns the error; `main` turns a broken pipe into a
//! quiet exit 0, as ripgrep does (its `main` treats `BrokenPipe` as success), rather than
//! 141 (death by SIGPIPE): nothing went wrong that the caller should see. `solstice run`
//! ignores the error instead, so its job still runs to the end and its exit code stays
//! the job's result.

use std::io::Write as _;

/// `println!` that returns an `io::Result` instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write_line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// Writes one line to standard output.
pub(crate) fn write_line(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)?;
    out.write_all(b"\n")?;
    // Line buffering flushes at the newline; flushing here too reports a closed pipe now.
    out.flush()
}

/// Whether `error` comes from writing to a reader that went away.
pub(crate) fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
}
