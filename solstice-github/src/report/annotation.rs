//! Annotations (`::error`, `::warning`, `::notice`) as GitHub wants them: timeline
//! issues on the classic path, run-service annotations on the broker path.
//!
//! The engine parses the commands and sends each annotation as a
//! [`solstice_core::JobEventKind::Annotation`] right before the `##[error]message` line
//! that shows it; the reporter only remembers where that line is.

use solstice_core::AnnotationLevel;

/// The run service's annotation level for a level.
fn annotation_level(level: AnnotationLevel) -> &'static str {
    match level {
        AnnotationLevel::Error => "failure",
        AnnotationLevel::Warning => "warning",
        _ => "notice",
    }
}

/// One annotation and where it is in its step's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Annotation {
    /// What the engine reported.
    pub reported: solstice_core::Annotation,
    /// 1-based line of the step's log that shows it (`##[error]message`).
    pub log_line: usize,
}

impl Annotation {
    /// A timeline `Issue` (classic path); `data` values are strings, as in .NET's
    /// `Dictionary<string, string>`.
    pub fn issue(&self) -> serde_json::Value {
        let mut data = serde_json::Map::new();
        let a = &self.reported;
        let mut put = |key: &str, value: Option<String>| {
            if let Some(v) = value {
                data.insert(key.to_owned(), serde_json::Value::String(v));
            }
        };
        put("file", a.file.clone());
        put("line", a.line.map(|n| n.to_string()));
        put("endLine", a.end_line.map(|n| n.to_string()));
        put("col", a.col.map(|n| n.to_string()));
        put("endColumn", a.end_col.map(|n| n.to_string()));
        put("title", a.title.clone());
        put("logFileLineNumber", Some(self.log_line.to_string()));
        serde_json::json!({
            "type": a.level.as_str(), "category": if a.file.is_some() { "Code" } else { "General" }, "message": a.message,
            "isInfrastructureIssue": null, "data": data,
        })
    }

    /// A run-service annotation (`completejob`): a missing line is the log line, a
    /// missing end is the start.
    pub fn run_annotation(&self, step_number: usize) -> serde_json::Value {
        let a = &self.reported;
        let start = a.line.unwrap_or(self.log_line as u64);
        let start_col = a.col.unwrap_or(0);
        serde_json::json!({
            "level": annotation_level(a.level), "message": a.message, "title": a.title.clone().unwrap_or_default(),
            "path": a.file.clone().unwrap_or_default(), "startLine": start, "endLine": a.end_line.unwrap_or(start),
            "startColumn": start_col, "endColumn": a.end_col.unwrap_or(start_col), "stepNumber": step_number,
            "isInfrastructureIssue": false, "rawDetails": "",
        })
    }
}
