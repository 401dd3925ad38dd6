//! The loader: file, environment overrides, checks; errors placed where the value came
//! from.

use std::path::Path;

use serde::de::DeserializeOwned;

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("could not read {path}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, does not match the schema, or holds a bad value.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// An environment override has a bad value.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// A value that came from no file and no variable (a default, or a key of a file
    /// that the check could not locate) is bad.
    #[error("{key}: {message}")]
    Value {
        /// The key, dotted (`queue.url`).
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// How the text of an environment variable becomes a TOML value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvValue {
    /// The text as a string, verbatim.
    Text,
    /// Comma-separated strings, each trimmed; empty items are dropped.
    List,
    /// A TOML value (`8`, `true`, `2.5`, `["a", "b"]`); text that is not one is taken
    /// as a string, so the schema decides whether that is acceptable.
    Toml,
}

/// One environment variable that overrides one key of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvOverride {
    /// The variable, e.g. `SOLSTICE_CAPACITY`.
    pub var: &'static str,
    /// The key it sets, dotted for nested tables (`queue.url`).
    pub key: &'static str,
    /// How its text is read.
    pub value: EnvValue,
}

impl EnvOverride {
    /// A variable taken verbatim as a string.
    pub const fn text(var: &'static str, key: &'static str) -> Self {
        Self { var, key, value: EnvValue::Text }
    }

    /// A variable holding a comma-separated list of strings.
    pub const fn list(var: &'static str, key: &'static str) -> Self {
        Self { var, key, value: EnvValue::List }
    }

    /// A variable holding a TOML value (numbers, booleans, arrays).
    pub const fn toml(var: &'static str, key: &'static str) -> Self {
        Self { var, key, value: EnvValue::Toml }
    }

    fn parse(&self, raw: &str) -> toml::Value {
        match self.value {
            EnvValue::Text => toml::Value::String(raw.to_owned()),
            EnvValue::List => toml::Value::Array(
                raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| toml::Value::String(s.to_owned())).collect(),
            ),
            EnvValue::Toml => toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        }
    }
}

/// A value a check found wrong: the key (dotted) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadValue {
    /// The key, dotted (`metrics.listen`).
    pub key: String,
    /// What is wrong, without the key (`is not an address like 127.0.0.1:9464`).
    pub message: String,
}

impl BadValue {
    /// A bad value of `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { key: key.into(), message: message.into() }
    }
}

/// A loaded configuration and where its keys came from.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    value: T,
    /// The file's name and text, when there was a file.
    file: Option<(String, String)>,
    /// Keys set by the environment, and by which variable.
    from_env: Vec<(&'static str, &'static str)>,
}

impl<T> Loaded<T> {
    /// The configuration.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The configuration, without its origins.
    pub fn into_value(self) -> T {
        self.value
    }

    /// The same origins for a value derived from this one (its keys unchanged).
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Loaded<U> {
        Loaded { value: f(self.value), file: self.file, from_env: self.from_env }
    }

    /// The file it was read from, if any.
    pub fn file(&self) -> Option<&str> {
        self.file.as_ref().map(|(name, _)| name.as_str())
    }

    /// Runs `check` and turns the value it finds bad into an error placed where that
    /// value came from (see [`Loaded::error_at`]).
    ///
    /// # Errors
    /// The located error of the first bad value.
    pub fn check(self, check: impl FnOnce(&T) -> Result<(), BadValue>) -> Result<Self, ConfigError> {
        match check(&self.value) {
            Ok(()) => Ok(self),
            Err(bad) => Err(self.error_at(&bad.key, &bad.message)),
        }
    }

    /// An error about `key` (dotted): [`ConfigError::Env`] naming the variable if the
    /// environment set it, [`ConfigError::Invalid`] at the value's line and column if
    /// the file did, [`ConfigError::Value`] otherwise.
    pub fn error_at(&self, key: &str, message: &str) -> ConfigError {
        if let Some((_, var)) = self.from_env.iter().rev().find(|(k, _)| *k == key) {
            return ConfigError::Env { var: (*var).to_owned(), message: format!("{key}: {message}") };
        }
        if let Some((name, text)) = &self.file
            && let Some(offset) = value_offset(text, key)
        {
            let (line, column) = line_column(text, offset);
            return ConfigError::Invalid { path: name.clone(), line, column, message: format!("{key}: {message}") };
        }
        ConfigError::Value { key: key.to_owned(), message: message.to_owned() }
    }
}

/// Line and column (1-based, the column in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The byte offset of the value of a dotted key in a TOML text.
fn value_offset(text: &str, key: &str) -> Option<usize> {
    let document = toml::de::DeTable::parse(text).ok()?;
    let mut parts = key.split('.');
    let first = parts.next()?;
    let mut value = document.get_ref().get(first)?;
    for part in parts {
        value = value.get_ref().as_table()?.get(part)?;
    }
    Some(value.span().start)
}

fn toml_error(text: &str, name: &str, error: &toml::de::Error) -> ConfigError {
    let (line, column) = error.span().map_or((1, 1), |span| line_column(text, span.start));
    ConfigError::Invalid { path: name.to_owned(), line, column, message: error.message().trim_end().to_owned() }
}

/// Deserializes a TOML text; `name` names it in errors. No environment overrides.
///
/// # Errors
/// [`ConfigError::Invalid`] with the line and column of the first problem.
pub fn parse<T: DeserializeOwned>(text: &str, name: &str) -> Result<Loaded<T>, ConfigError> {
    load_str(text, name, &[], |_| None)
}

/// Deserializes a TOML text, then applies the `overrides` whose variable `env` returns.
/// `name` names the text in errors.
///
/// # Errors
/// [`ConfigError::Invalid`] for the text, [`ConfigError::Env`] for a variable whose
/// value does not fit the schema.
pub fn load_str<T: DeserializeOwned>(
    text: &str,
    name: &str,
    overrides: &[EnvOverride],
    env: impl Fn(&str) -> Option<String>,
) -> Result<Loaded<T>, ConfigError> {
    // Deserialize the text itself first: its errors carry spans.
    let mut value: T = toml::from_str(text).map_err(|e| toml_error(text, name, &e))?;
    let mut from_env = Vec::new();
    let mut table: Option<toml::Table> = None;
    for o in overrides {
        let Some(raw) = env(o.var) else { continue };
        let table = match &mut table {
            Some(table) => table,
            None => table.insert(toml::from_str(text).map_err(|e| toml_error(text, name, &e))?),
        };
        set(table, o.key, o.parse(&raw)).map_err(|message| ConfigError::Env { var: o.var.to_owned(), message })?;
        // One variable at a time, so a bad value is blamed on its own variable.
        value = toml::Value::Table(table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Env { var: o.var.to_owned(), message: e.message().trim_end().to_owned() })?;
        from_env.push((o.key, o.var));
    }
    Ok(Loaded { value, file: Some((name.to_owned(), text.to_owned())), from_env })
}

/// Reads `path` (when given; without a file every key has its default), deserializes
/// it, then applies the `overrides` whose variable `env` returns. Binaries pass
/// `|name| std::env::var(name).ok()` as `env`; tests pass a map.
///
/// # Errors
/// [`ConfigError::Read`], [`ConfigError::Invalid`] for the file, [`ConfigError::Env`]
/// for a variable.
pub fn load<T: DeserializeOwned>(
    path: Option<&Path>,
    overrides: &[EnvOverride],
    env: impl Fn(&str) -> Option<String>,
) -> Result<Loaded<T>, ConfigError> {
    match path {
        Some(path) => {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: name.clone(), source })?;
            load_str(&text, &name, overrides, env)
        }
        None => {
            let mut loaded = load_str("", "(no configuration file)", overrides, env)?;
            loaded.file = None;
            Ok(loaded)
        }
    }
}

/// Sets a dotted key in a table, creating the tables on its way.
fn set(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<(), String> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap_or(key);
    let mut table = table;
    for part in parts {
        let entry = table.entry(part.to_owned()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(format!("cannot set {key}: `{part}` in the file is not a table")),
        };
    }
    table.insert(last.to_owned(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        name: String,
        capacity: usize,
        labels: Vec<String>,
        queue: Queue,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Queue {
        url: String,
    }

    const ENV: &[EnvOverride] = &[
        EnvOverride::text("S_NAME", "name"),
        EnvOverride::toml("S_CAPACITY", "capacity"),
        EnvOverride::list("S_LABELS", "labels"),
        EnvOverride::text("S_QUEUE_URL", "queue.url"),
    ];

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn schema_errors_name_the_line_and_column() {
        let err = parse::<Sample>("capacity = 2\n\n[queue]\nurll = \"x\"\n", "o.toml").expect_err("unknown key");
        let text = err.to_string();
        assert!(text.starts_with("o.toml:4:1: "), "{text}");
        assert!(text.contains("unknown field `urll`"), "{text}");
        let err = parse::<Sample>("name = \"é\"\ncapacity = \"two\"\n", "o.toml").expect_err("wrong type");
        assert!(err.to_string().starts_with("o.toml:2:12: invalid type"), "{err}");
        let err = parse::<Sample>("labels = [\"a\",\n", "o.toml").expect_err("syntax");
        assert!(err.to_string().starts_with("o.toml:1:15: unclosed array"), "{err}");
    }

    #[test]
    fn overrides_win_and_a_bad_one_is_blamed_on_its_variable() {
        let text = "name = \"file\"\ncapacity = 1\n";
        let loaded = load_str::<Sample>(
            text,
            "o.toml",
            ENV,
            env(&[("S_CAPACITY", "8"), ("S_LABELS", "host, linux-host,"), ("S_QUEUE_URL", "amqp://x")]),
        )
        .expect("valid");
        let value = loaded.value();
        assert_eq!((value.name.as_str(), value.capacity), ("file", 8));
        assert_eq!(value.labels, ["host", "linux-host"]);
        assert_eq!(value.queue.url, "amqp://x");
        let err = load_str::<Sample>(text, "o.toml", ENV, env(&[("S_NAME", "ok"), ("S_CAPACITY", "many")])).expect_err("nan");
        assert!(err.to_string().starts_with("environment variable S_CAPACITY: invalid type"), "{err}");
        // Text overrides stay strings even when they look like numbers.
        let loaded = load_str::<Sample>("", "o.toml", ENV, env(&[("S_NAME", "42")])).expect("valid");
        assert_eq!(loaded.value().name, "42");
    }

    #[test]
    fn checks_are_placed_at_the_value_the_variable_or_the_key() {
        let check = |s: &Sample| if s.queue.url.is_empty() { Err(BadValue::new("queue.url", "is empty")) } else { Ok(()) };
        let err = parse::<Sample>("capacity = 1\n[queue]\n  url = \"\"\n", "o.toml").expect("parses").check(check).expect_err("empty");
        assert_eq!(err.to_string(), "o.toml:3:9: queue.url: is empty");
        let err = parse::<Sample>("queue.url = \"\"\n", "o.toml").expect("parses").check(check).expect_err("empty");
        assert_eq!(err.to_string(), "o.toml:1:13: queue.url: is empty");
        let err = load_str::<Sample>("[queue]\nurl = \"x\"\n", "o.toml", ENV, env(&[("S_QUEUE_URL", "")]))
            .expect("parses")
            .check(check)
            .expect_err("empty");
        assert_eq!(err.to_string(), "environment variable S_QUEUE_URL: queue.url: is empty");
        let err = load::<Sample>(None, ENV, |_| None).expect("defaults").check(check).expect_err("empty default");
        assert_eq!(err.to_string(), "queue.url: is empty");
    }

    #[test]
    fn a_missing_file_is_a_read_error_naming_it() {
        let err = load::<Sample>(Some(Path::new("/nonexistent/solstice.toml")), ENV, |_| None).expect_err("missing");
        assert_eq!(err.to_string(), "could not read /nonexistent/solstice.toml");
    }

    #[test]
    fn columns_count_characters_and_offsets_past_the_end_are_clamped() {
        assert_eq!(line_column("ab\nçd = 1", 5), (2, 2));
        assert_eq!(line_column("x", 99), (1, 2));
    }
}
