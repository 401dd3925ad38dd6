//! The forms a secret can take in a log: the value itself and what GitHub's runner calls
//! its "value encoders" (`src/Sdk/DTLogging/Logging/ValueEncoders.cs`, registered in
//! `src/Runner.Common/HostContext.cs`): base64 at the three byte alignments, the
//! expression-, JSON-, URI- and XML-escaped forms and the value without its double quotes.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

/// A trimmed base64 form shorter than this is not registered: a secret of a byte or two
/// would otherwise mask every occurrence of one or two common letters.
const MIN_TRIMMED_BASE64: usize = 6;

/// The parts of `value` registered on their own: the value, and when it is multi-line
/// each line (split at `\r` and `\n`, as a bare CR starts a new line on a terminal and
/// in a forge's log view); each also without surrounding whitespace (a shell drops a
/// trailing space or newline as easily as it keeps it) and without ANSI escape
/// sequences (a log viewer renders `a\e[1mb` as `ab`).
pub(super) fn parts(value: &str) -> Vec<String> {
    let mut parts = vec![value.to_owned()];
    if value.contains(['\r', '\n']) {
        parts.extend(value.split(['\r', '\n']).map(str::to_owned));
    }
    let trimmed: Vec<String> = parts.iter().map(|p| p.trim().to_owned()).collect();
    parts.extend(trimmed);
    let plain: Vec<String> = parts.iter().filter(|p| p.contains('\x1b')).map(|p| strip_ansi(p)).collect();
    parts.extend(plain.iter().map(|p| p.trim().to_owned()));
    parts.extend(plain);
    parts.retain(|p| !p.trim().is_empty());
    parts.sort();
    parts.dedup();
    parts
}

/// Every form of one part to look for in a line: the part, then its encodings.
pub(super) fn encodings(part: &str) -> Vec<String> {
    let mut forms = vec![part.to_owned()];
    let bytes = part.as_bytes();
    for shift in 0..3 {
        // `Base64StringEscape` and `Base64StringEscapeShift1/2`: the value encoded from
        // its first, second or third byte, so that whatever precedes it in the encoded
        // text, one of the three lines up with base64's 3-byte groups.
        let shifted = bytes.get(shift..).filter(|rest| !rest.is_empty()).unwrap_or(bytes);
        forms.push(STANDARD.encode(shifted));
        // The runner's forms end with padding, which is not there when more text follows
        // the secret, and the last character also carries bits of what follows; keep
        // only the characters made of the value's bits alone.
        let whole_chars = shifted.len() * 8 / 6;
        let unpadded = STANDARD_NO_PAD.encode(shifted);
        if whole_chars >= MIN_TRIMMED_BASE64 {
            forms.push(unpadded[..whole_chars].to_owned());
        }
    }
    // `ExpressionStringEscape`: a `'` doubled, as inside an expression's string literal.
    forms.push(part.replace('\'', "''"));
    // `JsonStringEscape`: the JSON string without its quotes.
    if let Ok(json) = serde_json::to_string(part) {
        forms.push(json[1..json.len() - 1].to_owned());
    }
    forms.push(uri_data_escape(part));
    forms.push(xml_data_escape(part));
    // `TrimDoubleQuotes`: a quoted value longer than 8 characters, without its quotes.
    if part.len() > 8 && part.starts_with('"') && part.ends_with('"') {
        forms.push(part[1..part.len() - 1].to_owned());
    }
    forms.retain(|f| !f.trim().is_empty());
    forms.sort();
    forms.dedup();
    forms
}

/// .NET's `Uri.EscapeDataString`: every byte of the UTF-8 form but RFC 3986's unreserved
/// characters as `%XX`, upper-case.
fn uri_data_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            escaped.push(char::from(byte));
        } else {
            escaped.push_str(&format!("%{byte:02X}"));
        }
    }
    escaped
}

/// .NET's `SecurityElement.Escape`: the five XML special characters as entities.
fn xml_data_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            '&' => escaped.push_str("&amp;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// `text` without ANSI escape sequences: CSI (`ESC [ … final`), OSC (`ESC ] … BEL` or
/// `ESC \`) and two-character escapes.
pub(super) fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            plain.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                // Parameters and intermediates, then one final byte in `@`..`~`.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    plain
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values from .NET: `Uri.EscapeDataString("a b/c+d")` is `a%20b%2Fc%2Bd`,
    // `SecurityElement.Escape("<a&'\">")` is `&lt;a&amp;&apos;&quot;&gt;`.
    #[test]
    fn escapes_match_dotnet() {
        assert_eq!(uri_data_escape("a b/c+d~é"), "a%20b%2Fc%2Bd~%C3%A9");
        assert_eq!(xml_data_escape("<a&'\">"), "&lt;a&amp;&apos;&quot;&gt;");
    }

    #[test]
    fn ansi_sequences_are_removed() {
        assert_eq!(strip_ansi("a\x1b[1;31mb\x1b[0mc\x1b]0;title\x07d\x1b]8;;x\x1b\\e"), "abcde");
    }

    #[test]
    fn trimmed_base64_keeps_only_whole_characters() {
        // base64("secret1") is "c2VjcmV0MQ==": 7 bytes carry 9 whole characters.
        let forms = encodings("secret1");
        assert!(forms.contains(&"c2VjcmV0MQ==".to_owned()));
        assert!(forms.contains(&"c2VjcmV0M".to_owned()));
        // Shifted by one: base64("ecret1") is "ZWNyZXQx"; by two: base64("cret1") is "Y3JldDE=".
        assert!(forms.contains(&"ZWNyZXQx".to_owned()));
        assert!(forms.contains(&"Y3JldD".to_owned()));
    }
}
