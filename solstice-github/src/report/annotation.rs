//! Workflow commands that make annotations: `::error`, `::warning` and `::notice`, with
//! optional `file`, `line`, `endLine`, `col`, `endColumn` and `title` properties.
//!
//! `::error file=src/app.rs,line=3,col=5,title=Oops::it broke` becomes an annotation on
//! the step that printed it, and the log shows `##[error]it broke` in its place. Data is
//! unescaped as the official runner does (`%25`, `%0D`, `%0A`; in properties also `%3A`
//! and `%2C`).

/// An annotation's severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Error,
    Warning,
    Notice,
}

impl Level {
    /// The timeline `Issue.type` and the log prefix (`##[error]`).
    pub fn issue_type(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Notice => "notice",
        }
    }

    /// The run service's annotation level.
    pub fn annotation_level(self) -> &'static str {
        match self {
            Self::Error => "failure",
            Self::Warning => "warning",
            Self::Notice => "notice",
        }
    }
}

/// One annotation, where it points and where it is in the step's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Annotation {
    pub level: Level,
    pub message: String,
    pub title: Option<String>,
    pub file: Option<String>,
    pub line: Option<u64>,
    pub end_line: Option<u64>,
    pub col: Option<u64>,
    pub end_col: Option<u64>,
    /// 1-based line of the step's log that replaced the command.
    pub log_line: usize,
}

impl Annotation {
    /// A timeline `Issue` (classic path); `data` values are strings, as in .NET's
    /// `Dictionary<string, string>`.
    pub fn issue(&self) -> serde_json::Value {
        let mut data = serde_json::Map::new();
        let mut put = |key: &str, value: Option<String>| {
            if let Some(v) = value {
                data.insert(key.to_owned(), serde_json::Value::String(v));
            }
        };
        put("file", self.file.clone());
        put("line", self.line.map(|n| n.to_string()));
        put("endLine", self.end_line.map(|n| n.to_string()));
        put("col", self.col.map(|n| n.to_string()));
        put("endColumn", self.end_col.map(|n| n.to_string()));
        put("title", self.title.clone());
        put("logFileLineNumber", Some(self.log_line.to_string()));
        serde_json::json!({
            "type": self.level.issue_type(), "category": "General", "message": self.message,
            "isInfrastructureIssue": null, "data": data,
        })
    }

    /// A run-service annotation (`completejob`): a missing line is the log line, a
    /// missing end is the start.
    pub fn run_annotation(&self, step_number: usize) -> serde_json::Value {
        let start = self.line.unwrap_or(self.log_line as u64);
        let start_col = self.col.unwrap_or(0);
        serde_json::json!({
            "level": self.level.annotation_level(), "message": self.message, "title": self.title.clone().unwrap_or_default(),
            "path": self.file.clone().unwrap_or_default(), "startLine": start, "endLine": self.end_line.unwrap_or(start),
            "startColumn": start_col, "endColumn": self.end_col.unwrap_or(start_col), "stepNumber": step_number,
            "isInfrastructureIssue": false, "rawDetails": "",
        })
    }
}

fn unescape(text: &str, property: bool) -> String {
    let mut out = text.replace("%0D", "\r").replace("%0A", "\n");
    if property {
        out = out.replace("%3A", ":").replace("%2C", ",");
    }
    out.replace("%25", "%")
}

/// Reads an annotation command; `None` for any other line. `log_line` is left 0.
pub(crate) fn parse(line: &str) -> Option<Annotation> {
    let rest = line.trim_start().strip_prefix("::")?;
    let (head, message) = rest.split_once("::")?;
    let (command, properties) = match head.split_once(' ') {
        Some((c, p)) => (c, p),
        None => (head, ""),
    };
    let level = match command {
        "error" => Level::Error,
        "warning" => Level::Warning,
        "notice" => Level::Notice,
        _ => return None,
    };
    let mut a = Annotation {
        level,
        message: unescape(message.trim_end_matches(['\r', '\n']), false),
        title: None,
        file: None,
        line: None,
        end_line: None,
        col: None,
        end_col: None,
        log_line: 0,
    };
    for pair in properties.split(',').filter(|p| !p.trim().is_empty()) {
        let Some((key, value)) = pair.split_once('=') else { continue };
        let value = unescape(value.trim(), true);
        let number = value.parse().ok();
        match key.trim() {
            "title" => a.title = Some(value),
            "file" => a.file = Some(value),
            "line" => a.line = number,
            "endLine" => a.end_line = number,
            "col" => a.col = number,
            "endColumn" => a.end_col = number,
            _ => {}
        }
    }
    Some(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_with_and_without_properties() {
        let a = parse("::error file=src/a%2Cb.rs,line=3,col=5,endColumn=9,title=Bad%3A thing::it broke%0Asecond 100%25").expect("error");
        assert_eq!(a.level, Level::Error);
        assert_eq!(a.message, "it broke\nsecond 100%");
        assert_eq!(a.file.as_deref(), Some("src/a,b.rs"));
        assert_eq!(a.title.as_deref(), Some("Bad: thing"));
        assert_eq!((a.line, a.end_line, a.col, a.end_col), (Some(3), None, Some(5), Some(9)));
        let w = parse("  ::warning::careful").expect("warning");
        assert_eq!((w.level, w.message.as_str(), w.file), (Level::Warning, "careful", None));
        assert_eq!(parse("::notice file=README.md::fyi").map(|n| n.level), Some(Level::Notice));
    }

    #[test]
    fn other_lines_are_not_annotations() {
        for line in ["echo ::error::x", "::set-output name=a::b", "::error no closing", "##[error]x", ""] {
            assert_eq!(parse(line), None, "{line}");
        }
    }
}
