//! The services' diagnostics: `tracing` to stderr, as text for people or JSON lines
//! for a log collector, chosen the same way in every binary.

use std::str::FromStr;

/// How log lines are written: `text` or `json`, in a file as on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, with the span fields (job id, machine) as keys.
    Json,
}

/// The name given is neither `text` nor `json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log format `{0}` (expected `text` or `json`)")]
pub struct UnknownLogFormat(String);

impl FromStr for LogFormat {
    type Err = UnknownLogFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(UnknownLogFormat(s.to_owned())),
        }
    }
}

/// Installs the global `tracing` subscriber: `filter` is an `EnvFilter` directive
/// (`info`, `solstice_core=debug,warn`; an empty or invalid one means `fallback`), lines
/// go to stderr so that stdout stays the program's output. Call it once, first thing in
/// `main`; a second call does nothing.
pub fn init_logging(filter: &str, fallback: &str, format: LogFormat) {
    // An empty directive is a valid filter that shows errors only: treat it as unset.
    let filter = Some(filter.trim())
        .filter(|f| !f.is_empty())
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(fallback));
    // Colours only for a terminal: a journal or a file gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    // try_init: a test harness or an embedding program may have installed one already.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_by_name_and_others_are_refused() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!(" Text ".parse::<LogFormat>(), Ok(LogFormat::Text));
        let err = "yaml".parse::<LogFormat>().expect_err("unknown");
        assert_eq!(err.to_string(), "unknown log format `yaml` (expected `text` or `json`)");
    }
}
