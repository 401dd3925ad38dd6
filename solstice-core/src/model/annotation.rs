use serde::{Deserialize, Serialize};

/// How serious an [`Annotation`] is: the workflow command that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AnnotationLevel {
    /// `::error`.
    Error,
    /// `::warning`.
    Warning,
    /// `::notice`.
    Notice,
}

impl AnnotationLevel {
    /// The command's name, which is also GitHub's log tag (`##[error]`) and timeline
    /// issue type: `error`, `warning` or `notice`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Notice => "notice",
        }
    }
}

/// A message a step attached to its run with `::error`, `::warning` or `::notice`
/// (or that the engine made for it, e.g. for a command it refused), optionally pointing
/// at a place in a file.
///
/// The engine sends it as a [`crate::JobEventKind::Annotation`] right before the log
/// line(s) `##[level]message` that show it, secrets masked. Forges with annotations
/// (GitHub) show it on the run; the others show only the log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Annotation {
    /// Its severity.
    pub level: AnnotationLevel,
    /// The message; may span several lines.
    pub message: String,
    /// The `title` property.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The `file` property, relative to the workspace when it was inside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The `line` property (1-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// The `endLine` property.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_line: Option<u64>,
    /// The `col` property (1-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub col: Option<u64>,
    /// The `endColumn` property.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_col: Option<u64>,
}

impl Annotation {
    /// An annotation with just a level and a message.
    pub fn new(level: AnnotationLevel, message: impl Into<String>) -> Self {
        Self { level, message: message.into(), title: None, file: None, line: None, end_line: None, col: None, end_col: None }
    }
}
