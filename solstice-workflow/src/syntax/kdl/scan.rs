//! A lexical pass over KDL text before the `kdl` crate parses it.
//!
//! The `kdl` parser recurses once per nested `{` block and once per `*` or `/` inside a
//! `/* */` comment, so a few hundred of either overflow the stack of a test thread (measured
//! with kdl 6.7.1: about 60 nested blocks on a 2 MiB stack in a debug build). A broken
//! workflow must never crash the translator, so this pass, which follows KDL 2.0's rules for
//! strings and comments without recursing:
//!
//! * blanks out comments (each byte becomes a space, so byte offsets and spans stay valid and
//!   the parser sees plain whitespace, which is what a comment means in KDL);
//! * measures the nesting of `{` blocks and refuses documents nested deeper than
//!   [`MAX_DEPTH`];
//! * notices text whose strings it cannot follow exactly (an unclosed string, a newline in a
//!   single-line string, a quote glued to other text, a bad escape). Those documents are
//!   invalid KDL anyway; they reach the parser only when a crude bound (every `{`, `*` and
//!   `/` counted as one level) shows the parser cannot recurse deeply, otherwise the scanner's
//!   own finding is the error.

use std::borrow::Cow;

/// Deepest nesting of `{` blocks accepted. A workflow needs at most five
/// (`job { matrix { include { key { - ... } } } }`).
pub(super) const MAX_DEPTH: usize = 16;

/// Inputs whose crude recursion bound stays below this are safe to hand to the parser as they
/// are.
const CRUDE_LIMIT: usize = 16;

/// Why the scanner refused a document: a byte offset and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    pub(super) offset: usize,
    pub(super) message: String,
}

/// The KDL 2.0 newlines (`\r\n` is handled by the caller as `\r` then `\n`).
pub(super) fn is_newline(c: char) -> bool {
    matches!(c, '\r' | '\n' | '\u{85}' | '\u{0B}' | '\u{0C}' | '\u{2028}' | '\u{2029}')
}

fn is_space(c: char) -> bool {
    matches!(
        c,
        '\t' | ' ' | '\u{A0}' | '\u{1680}' | '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
    )
}

fn is_disallowed(c: char) -> bool {
    matches!(
        c,
        '\u{0}'..='\u{8}' | '\u{E}'..='\u{1F}' | '\u{7F}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}'
    )
}

/// Characters after which a string may start: whitespace, newlines, `=`, `(`, `)`, `{`, `;`
/// and the `-` of a slashdash.
fn may_precede_string(prev: Option<char>, before_prev: Option<char>) -> bool {
    match prev {
        None => true,
        Some(c) if is_space(c) || is_newline(c) => true,
        Some('=' | '(' | ')' | '{' | ';') => true,
        Some('-') => before_prev == Some('/'),
        _ => false,
    }
}

struct Scanner<'s> {
    src: &'s str,
    i: usize,
    blanks: Vec<(usize, usize)>,
}

type Anomaly = (usize, &'static str);

impl Scanner<'_> {
    fn peek(&self) -> Option<char> {
        self.src[self.i..].chars().next()
    }

    fn starts_with(&self, s: &str) -> bool {
        self.src[self.i..].starts_with(s)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.i += c.len_utf8();
        Some(c)
    }

    fn line_comment(&mut self) {
        let start = self.i;
        while let Some(c) = self.peek() {
            if is_newline(c) {
                break;
            }
            self.i += c.len_utf8();
        }
        self.blanks.push((start, self.i));
    }

    fn block_comment(&mut self) -> Result<(), Anomaly> {
        let start = self.i;
        self.i += 2;
        let mut nesting = 1usize;
        while nesting > 0 {
            if self.starts_with("*/") {
                self.i += 2;
                nesting -= 1;
            } else if self.starts_with("/*") {
                self.i += 2;
                nesting += 1;
            } else if self.bump().is_none() {
                return Err((start, "this /* comment is never closed with */"));
            }
        }
        self.blanks.push((start, self.i));
        Ok(())
    }

    fn newline(&mut self) {
        if self.bump() == Some('\r') && self.peek() == Some('\n') {
            self.bump();
        }
    }

    /// After a backslash in a quoted string (the backslash is consumed).
    fn escape(&mut self, start: usize) -> Result<(), Anomaly> {
        const BAD: &str = "this string has an invalid escape: after \\ only \\ \" b f n r t s u{...} or whitespace may follow";
        match self.peek() {
            Some('\\' | '"' | 'b' | 'f' | 'n' | 'r' | 't' | 's') => {
                self.bump();
                Ok(())
            }
            Some('u') => {
                self.bump();
                if self.bump() != Some('{') {
                    return Err((start, BAD));
                }
                let digits = self.src[self.i..].chars().take_while(char::is_ascii_hexdigit).count();
                let valid = (1..=6).contains(&digits)
                    && u32::from_str_radix(&self.src[self.i..self.i + digits], 16).ok().and_then(char::from_u32).is_some();
                self.i += digits;
                if !valid || self.bump() != Some('}') {
                    return Err((start, BAD));
                }
                Ok(())
            }
            Some(c) if is_space(c) || is_newline(c) => {
                while let Some(c) = self.peek() {
                    if !(is_space(c) || is_newline(c)) {
                        break;
                    }
                    self.bump();
                }
                Ok(())
            }
            _ => Err((start, BAD)),
        }
    }

    /// The body of a multi-line string, from just after its opening quotes. `close` is `"""`
    /// plus the raw string's hashes; `quoted` strings have escapes.
    fn multi_line(&mut self, start: usize, close: &str, quoted: bool) -> Result<(), Anomaly> {
        if !self.peek().is_some_and(is_newline) {
            return Err((start, "a multi-line string's opening \"\"\" must be followed by a newline"));
        }
        self.newline();
        let mut body_lines = Vec::new();
        let prefix_end;
        let prefix_start;
        loop {
            let line_start = self.i;
            let ws = self.src[self.i..].chars().take_while(|c| is_space(*c)).map(char::len_utf8).sum::<usize>();
            if self.src[self.i + ws..].starts_with(close) {
                prefix_start = line_start;
                prefix_end = line_start + ws;
                self.i += ws + close.len();
                break;
            }
            body_lines.push(line_start);
            loop {
                if self.starts_with(close) || (quoted && self.starts_with("\"\"\"")) {
                    return Err((self.i, "a multi-line string's closing \"\"\" must stand on its own line"));
                }
                match self.peek() {
                    None => return Err((start, "this multi-line string is never closed with \"\"\" on a line of its own")),
                    Some(c) if is_newline(c) => {
                        self.newline();
                        break;
                    }
                    Some('\\') if quoted => {
                        self.bump();
                        self.escape(start)?;
                    }
                    Some(c) if is_disallowed(c) => return Err((self.i, "a control character is not allowed here")),
                    Some(_) => {
                        self.bump();
                    }
                }
            }
        }
        let prefix = &self.src[prefix_start..prefix_end];
        for line_start in body_lines {
            let line = &self.src[line_start..];
            let blank = line.chars().take_while(|c| !is_newline(*c)).all(is_space);
            if !blank && !line.starts_with(prefix) {
                return Err((line_start, "every line of a multi-line string must start with the same whitespace as the line of its closing \"\"\""));
            }
        }
        Ok(())
    }

    fn quoted_string(&mut self) -> Result<(), Anomaly> {
        let start = self.i;
        if self.starts_with("\"\"\"") {
            self.i += 3;
            return self.multi_line(start, "\"\"\"", true);
        }
        self.i += 1;
        loop {
            match self.bump() {
                None => return Err((start, "this string is never closed with \"")),
                Some('"') => return Ok(()),
                Some('\\') => self.escape(start)?,
                Some(c) if is_newline(c) => {
                    return Err((start, "this string is not closed before the end of the line; close it with \" or write a multi-line string between \"\"\" lines"));
                }
                Some(c) if is_disallowed(c) => return Err((self.i - c.len_utf8(), "a control character is not allowed here")),
                Some(_) => {}
            }
        }
    }

    /// At `#`: a raw string when the hashes are followed by a quote, else a keyword.
    fn raw_string(&mut self) -> Result<bool, Anomaly> {
        let start = self.i;
        let hashes = self.src[self.i..].chars().take_while(|c| *c == '#').count();
        if !self.src[self.i + hashes..].starts_with('"') {
            return Ok(false);
        }
        self.i += hashes;
        let hash_text = "#".repeat(hashes);
        if self.starts_with("\"\"\"") {
            self.i += 3;
            let close = format!("\"\"\"{hash_text}");
            self.multi_line(start, &close, false)?;
            return Ok(true);
        }
        self.i += 1;
        let close = format!("\"{hash_text}");
        loop {
            if self.starts_with(&close) {
                self.i += close.len();
                return Ok(true);
            }
            match self.bump() {
                None => return Err((start, "this raw string is never closed")),
                Some(c) if is_newline(c) => return Err((start, "this raw string is not closed before the end of the line")),
                Some(c) if is_disallowed(c) => return Err((self.i - c.len_utf8(), "a control character is not allowed here")),
                Some(_) => {}
            }
        }
    }
}

/// Prepares `source` for the `kdl` parser: comments blanked, nesting bounded.
pub(super) fn prepare(source: &str) -> Result<Cow<'_, str>, Refusal> {
    let mut s = Scanner { src: source, i: 0, blanks: Vec::new() };
    let mut depth = 0usize;
    let mut prev: Option<char> = None;
    let mut before_prev: Option<char> = None;
    let anomaly: Anomaly = loop {
        let Some(c) = s.peek() else {
            break (usize::MAX, "");
        };
        let at = s.i;
        match c {
            '/' if s.starts_with("//") => {
                s.line_comment();
                before_prev = prev;
                prev = Some(' ');
                continue;
            }
            '/' if s.starts_with("/*") => {
                if let Err(a) = s.block_comment() {
                    break a;
                }
                // A comment is whitespace to KDL.
                before_prev = prev;
                prev = Some(' ');
                continue;
            }
            '"' => {
                if !may_precede_string(prev, before_prev) {
                    break (at, "a string must be separated from the text before it by a space");
                }
                if let Err(a) = s.quoted_string() {
                    break a;
                }
            }
            '#' => match s.raw_string() {
                Ok(true) if !may_precede_string(prev, before_prev) => {
                    break (at, "a string must be separated from the text before it by a space");
                }
                Ok(true) => {}
                Ok(false) => {
                    s.bump();
                }
                Err(a) => break a,
            },
            '{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(Refusal {
                        offset: at,
                        message: format!("blocks are nested more than {MAX_DEPTH} deep; a workflow needs far fewer"),
                    });
                }
                s.bump();
            }
            '}' => {
                depth = depth.saturating_sub(1);
                s.bump();
            }
            c if is_disallowed(c) && !(c == '\u{FEFF}' && at == 0) => break (at, "a control character is not allowed here"),
            _ => {
                s.bump();
            }
        }
        before_prev = prev;
        prev = s.src[..s.i].chars().next_back();
    };
    if anomaly.0 != usize::MAX {
        let crude = source.chars().filter(|c| *c == '{').count()
            + 2 * source.chars().filter(|c| matches!(c, '*' | '/')).count();
        if crude <= CRUDE_LIMIT {
            return Ok(Cow::Borrowed(source));
        }
        return Err(Refusal { offset: anomaly.0, message: anomaly.1.to_owned() });
    }
    if s.blanks.is_empty() {
        return Ok(Cow::Borrowed(source));
    }
    let mut out = String::with_capacity(source.len());
    let mut last = 0;
    for (start, end) in s.blanks {
        out.push_str(&source[last..start]);
        out.extend(std::iter::repeat_n(' ', end - start));
        last = end;
    }
    out.push_str(&source[last..]);
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_become_spaces_of_the_same_length() {
        let src = "a 1 // note é\nb /* x /* y */ é */ 2\n";
        let out = prepare(src).expect("valid");
        assert_eq!(out.len(), src.len());
        assert_eq!(out, "a 1           \nb                    2\n");
    }

    #[test]
    fn strings_are_not_comments() {
        let src = "run \"echo // not a comment /* nor this\" r=#\"a \" /* b\"#\n";
        assert_eq!(prepare(src).expect("valid"), src);
        let ml = "run \"\"\"\n  echo \"{{{\" \\\"\"\" done\n  \"\"\"\n";
        assert_eq!(prepare(ml).expect("valid"), ml);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!("{}{}", "a {".repeat(MAX_DEPTH + 1), "}".repeat(MAX_DEPTH + 1));
        let refusal = prepare(&deep).expect_err("too deep");
        assert_eq!(refusal.offset, 2 + 3 * MAX_DEPTH);
        let ok = format!("{}{}", "a {".repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH));
        prepare(&ok).expect("deep enough");
    }

    #[test]
    fn braces_hidden_behind_a_broken_string_are_bounded() {
        // The parser would not read `x"` as a string; the scanner must not trust its own
        // reading of the quotes and refuses instead.
        let tricky = format!("a x\"{}\"\n", " b {".repeat(100));
        let refusal = prepare(&tricky).expect_err("refused");
        assert_eq!(refusal.offset, 3);
        // A small broken document goes to the parser, which reports it in its own words.
        assert_eq!(prepare("a x\"b\"").expect("small"), "a x\"b\"");
    }

    #[test]
    fn comment_recursion_is_blanked() {
        let stars = format!("/*{}*/ a 1", "*".repeat(10_000));
        let out = prepare(&stars).expect("valid");
        assert!(out.trim_start().starts_with("a 1"));
    }

    /// What the scanner lets through still parses on a 2 MiB stack (a test thread's), in
    /// the debug build where frames are largest: the worst documents at the limits.
    #[test]
    fn documents_at_the_limits_parse_on_a_small_stack() {
        let n = MAX_DEPTH.max(CRUDE_LIMIT);
        let worst = [
            format!("{}{}", "a {".repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH)),
            "a {".repeat(MAX_DEPTH),
            format!("a x\"{}\"\n", " b {".repeat(CRUDE_LIMIT)),
            format!("a \"\n{}", "b {".repeat(CRUDE_LIMIT)),
            format!("{}{}", "/*".repeat(n / 2), "*/".repeat(n / 2)),
            format!("/*{}*/ a", "*".repeat(10_000)),
        ];
        for text in worst {
            let parsed = std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || prepare(&text).map(|t| ::kdl::KdlDocument::parse_v2(&t).is_ok()))
                .expect("thread")
                .join();
            assert!(parsed.is_ok(), "the parser panicked");
        }
    }
}

