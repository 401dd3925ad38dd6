//! QMP framing without I/O: the greeting, commands with ids, and the three kinds of
//! message QEMU sends back (returns, errors, asynchronous events).
//!
//! QMP is JSON objects separated by newlines (QEMU writes one object per line and
//! accepts any whitespace between objects).

use serde_json::{Map, Value, json};

/// One message from QEMU.
#[derive(Debug, Clone, PartialEq)]
pub enum QmpMessage {
    /// The greeting QEMU sends first: `{"QMP": {"version": …, "capabilities": […]}}`.
    Greeting {
        /// `major.minor.micro` of the QEMU binary.
        version: String,
    },
    /// A command succeeded.
    Return {
        /// The id we gave the command, if any.
        id: Option<String>,
        /// The command's result (`{}` for most commands).
        value: Value,
    },
    /// A command failed.
    Error {
        /// The id we gave the command, if any.
        id: Option<String>,
        /// QEMU's error class (`GenericError`, `CommandNotFound`, …).
        class: String,
        /// QEMU's description.
        desc: String,
    },
    /// An asynchronous event (`SHUTDOWN`, `POWERDOWN`, `STOP`, `GUEST_PANICKED`, …).
    Event {
        /// The event name.
        name: String,
        /// The event's data (`{}` when it has none).
        data: Value,
    },
}

/// A line that is not a QMP message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum QmpDecodeError {
    /// The line is not a JSON object.
    #[error("not a JSON object: {0}")]
    NotJson(String),
    /// The object has none of the keys QMP messages have.
    #[error("not a QMP message: {0}")]
    UnknownShape(String),
}

/// Encodes a command with its id as one line (with the newline).
pub fn encode_command(command: &str, arguments: Option<&Value>, id: &str) -> Vec<u8> {
    let mut object = Map::new();
    object.insert("execute".into(), Value::String(command.to_owned()));
    if let Some(arguments) = arguments {
        object.insert("arguments".into(), arguments.clone());
    }
    object.insert("id".into(), Value::String(id.to_owned()));
    let mut line = Value::Object(object).to_string().into_bytes();
    line.push(b'\n');
    line
}

/// Decodes one line from QEMU.
///
/// # Errors
/// [`QmpDecodeError`] when the line is not a QMP message.
pub fn decode_message(line: &str) -> Result<QmpMessage, QmpDecodeError> {
    let value: Value = serde_json::from_str(line.trim()).map_err(|_| QmpDecodeError::NotJson(clip(line)))?;
    let Value::Object(object) = value else {
        return Err(QmpDecodeError::NotJson(clip(line)));
    };
    let id = object.get("id").map(|id| match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    if let Some(greeting) = object.get("QMP") {
        let v = &greeting["version"]["qemu"];
        let version = format!("{}.{}.{}", v["major"], v["minor"], v["micro"]);
        return Ok(QmpMessage::Greeting { version });
    }
    if let Some(value) = object.get("return") {
        return Ok(QmpMessage::Return { id, value: value.clone() });
    }
    if let Some(error) = object.get("error") {
        let text = |key: &str| error.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
        return Ok(QmpMessage::Error { id, class: text("class"), desc: text("desc") });
    }
    if let Some(Value::String(name)) = object.get("event") {
        let data = object.get("data").cloned().unwrap_or_else(|| json!({}));
        return Ok(QmpMessage::Event { name: name.clone(), data });
    }
    Err(QmpDecodeError::UnknownShape(clip(line)))
}

fn clip(line: &str) -> String {
    line.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_return_error_and_event_decode() {
        let greeting = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian"}, "capabilities": ["oob"]}}"#;
        assert_eq!(decode_message(greeting), Ok(QmpMessage::Greeting { version: "7.2.22".into() }));
        assert_eq!(
            decode_message(r#"{"return": {"status": "running", "running": true}, "id": "3"}"#),
            Ok(QmpMessage::Return { id: Some("3".into()), value: json!({"status": "running", "running": true}) })
        );
        assert_eq!(
            decode_message(r#"{"id": "4", "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}"#),
            Ok(QmpMessage::Error {
                id: Some("4".into()),
                class: "CommandNotFound".into(),
                desc: "The command nope has not been found".into()
            })
        );
        assert_eq!(
            decode_message(r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}"#),
            Ok(QmpMessage::Event { name: "SHUTDOWN".into(), data: json!({"guest": true, "reason": "guest-shutdown"}) })
        );
        assert_eq!(
            decode_message(r#"{"event": "POWERDOWN", "timestamp": {}}"#),
            Ok(QmpMessage::Event { name: "POWERDOWN".into(), data: json!({}) })
        );
    }

    #[test]
    fn junk_is_rejected() {
        assert!(matches!(decode_message("hello"), Err(QmpDecodeError::NotJson(_))));
        assert!(matches!(decode_message("[1]"), Err(QmpDecodeError::NotJson(_))));
        assert!(matches!(decode_message(r#"{"x": 1}"#), Err(QmpDecodeError::UnknownShape(_))));
    }

    #[test]
    fn commands_carry_their_id_and_arguments() {
        let line = encode_command("human-monitor-command", Some(&json!({"command-line": "info kvm"})), "7");
        let text = String::from_utf8(line).unwrap_or_default();
        assert!(text.ends_with('\n'));
        let value: Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(value, json!({"execute": "human-monitor-command", "arguments": {"command-line": "info kvm"}, "id": "7"}));
        let bare: Value = serde_json::from_slice(&encode_command("quit", None, "1")).unwrap_or_default();
        assert_eq!(bare, json!({"execute": "quit", "id": "1"}));
    }
}
