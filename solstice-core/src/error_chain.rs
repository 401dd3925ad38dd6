//! Errors as one line for logs.

/// An error and its causes, joined by `: ` — the form log lines and forge messages use,
/// since a job log has no place for a multi-line chain.
///
/// ```
/// let io = std::io::Error::other("disk full");
/// let text = solstice_core::support::error_chain(&io);
/// assert_eq!(text, "disk full");
/// ```
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
