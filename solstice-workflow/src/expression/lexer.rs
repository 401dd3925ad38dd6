//! The expression lexer: turns expression text into tokens on demand, GitHub's way.
//!
//! Positions are 1-based character (not byte) offsets, as in GitHub's messages.

use super::error::{ExpressionError, ExpressionErrorKind};
use super::number::parse_js_number;

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TokenKind {
    StartGroup,
    EndGroup,
    StartIndex,
    EndIndex,
    Separator,
    Dereference,
    Wildcard,
    Not,
    Equal,
    NotEqual,
    Less,
    LessEqual,
    Greater,
    GreaterEqual,
    And,
    Or,
    Null,
    Boolean(bool),
    Number(f64),
    String(String),
    PropertyName(String),
    NamedValue(String),
    Function(String),
}

/// One token with its source text and 1-based character position.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub(crate) kind: TokenKind,
    pub(crate) raw: String,
    pub(crate) position: usize,
}

/// A lazy lexer; the parser pulls tokens one at a time so that errors surface in source order.
pub(crate) struct Lexer<'a> {
    expression: &'a str,
    chars: Vec<char>,
    index: usize,
    last: Option<TokenKind>,
}

fn is_boundary(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | '[' | ')' | ']' | ',' | '.' | '!' | '>' | '<' | '=' | '&' | '|')
}

pub(crate) fn is_legal_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(expression: &'a str) -> Self {
        Lexer { expression, chars: expression.chars().collect(), index: 0, last: None }
    }

    fn peek_char(&self, offset: usize) -> Option<char> {
        self.chars.get(self.index + offset).copied()
    }

    fn error(&self, raw: &str, position: usize) -> ExpressionError {
        ExpressionError::located(
            ExpressionErrorKind::Lexing,
            format!("Unexpected symbol: '{raw}'"),
            position,
            self.expression,
        )
    }

    /// The next token, `None` at the end of the expression.
    pub(crate) fn next_token(&mut self) -> Result<Option<Token>, ExpressionError> {
        while self.peek_char(0).is_some_and(char::is_whitespace) {
            self.index += 1;
        }
        let Some(c) = self.peek_char(0) else {
            return Ok(None);
        };
        let start = self.index;
        let position = start + 1;
        let simple = |lexer: &mut Self, kind: TokenKind, len: usize| {
            lexer.index += len;
            let raw: String = lexer.chars[start..start + len].iter().collect();
            Token { kind, raw, position }
        };
        let token = match c {
            '(' => simple(self, TokenKind::StartGroup, 1),
            ')' => simple(self, TokenKind::EndGroup, 1),
            '[' => simple(self, TokenKind::StartIndex, 1),
            ']' => simple(self, TokenKind::EndIndex, 1),
            ',' => simple(self, TokenKind::Separator, 1),
            '*' => simple(self, TokenKind::Wildcard, 1),
            '.' => {
                let dereference = matches!(
                    self.last,
                    Some(
                        TokenKind::EndGroup
                            | TokenKind::EndIndex
                            | TokenKind::PropertyName(_)
                            | TokenKind::NamedValue(_)
                            | TokenKind::Wildcard
                    )
                );
                if dereference { simple(self, TokenKind::Dereference, 1) } else { self.read_number()? }
            }
            '!' if self.peek_char(1) == Some('=') => simple(self, TokenKind::NotEqual, 2),
            '!' => simple(self, TokenKind::Not, 1),
            '=' if self.peek_char(1) == Some('=') => simple(self, TokenKind::Equal, 2),
            '<' if self.peek_char(1) == Some('=') => simple(self, TokenKind::LessEqual, 2),
            '<' => simple(self, TokenKind::Less, 1),
            '>' if self.peek_char(1) == Some('=') => simple(self, TokenKind::GreaterEqual, 2),
            '>' => simple(self, TokenKind::Greater, 1),
            '&' if self.peek_char(1) == Some('&') => simple(self, TokenKind::And, 2),
            '|' if self.peek_char(1) == Some('|') => simple(self, TokenKind::Or, 2),
            '\'' => self.read_string()?,
            c if c.is_ascii_digit() || c == '-' || c == '+' => self.read_number()?,
            c if c.is_ascii_alphabetic() || c == '_' => self.read_word(),
            _ => {
                // Unknown symbol: GitHub reports everything up to the next whitespace.
                let mut end = self.index;
                while end < self.chars.len() && !self.chars[end].is_whitespace() {
                    end += 1;
                }
                let raw: String = self.chars[start..end].iter().collect();
                return Err(self.error(&raw, position));
            }
        };
        let token = match token.kind {
            TokenKind::PropertyName(_) | TokenKind::NamedValue(_) | TokenKind::Function(_)
                if !is_legal_identifier(&token.raw) =>
            {
                return Err(self.error(&token.raw, position));
            }
            _ => token,
        };
        self.last = Some(token.kind.clone());
        Ok(Some(token))
    }

    fn read_until_boundary(&mut self, allow_dot: bool) -> String {
        let start = self.index;
        while let Some(c) = self.peek_char(0) {
            if is_boundary(c) && !(allow_dot && c == '.') {
                break;
            }
            self.index += 1;
        }
        self.chars[start..self.index].iter().collect()
    }

    fn read_number(&mut self) -> Result<Token, ExpressionError> {
        let position = self.index + 1;
        let raw = self.read_until_boundary(true);
        match parse_js_number(&raw) {
            Some(n) if !n.is_nan() => Ok(Token { kind: TokenKind::Number(n), raw, position }),
            _ => Err(self.error(&raw, position)),
        }
    }

    fn read_string(&mut self) -> Result<Token, ExpressionError> {
        let start = self.index;
        let position = start + 1;
        self.index += 1;
        let mut value = String::new();
        loop {
            match self.peek_char(0) {
                None => {
                    let raw: String = self.chars[start..].iter().collect();
                    return Err(self.error(&raw, position));
                }
                Some('\'') if self.peek_char(1) == Some('\'') => {
                    value.push('\'');
                    self.index += 2;
                }
                Some('\'') => {
                    self.index += 1;
                    break;
                }
                Some(c) => {
                    value.push(c);
                    self.index += 1;
                }
            }
        }
        let raw: String = self.chars[start..self.index].iter().collect();
        Ok(Token { kind: TokenKind::String(value), raw, position })
    }

    fn read_word(&mut self) -> Token {
        let position = self.index + 1;
        let raw = self.read_until_boundary(false);
        let kind = if self.last == Some(TokenKind::Dereference) {
            TokenKind::PropertyName(raw.clone())
        } else {
            match raw.as_str() {
                "true" => TokenKind::Boolean(true),
                "false" => TokenKind::Boolean(false),
                "null" => TokenKind::Null,
                "NaN" => TokenKind::Number(f64::NAN),
                "Infinity" => TokenKind::Number(f64::INFINITY),
                _ => {
                    let mut i = self.index;
                    while i < self.chars.len() && self.chars[i].is_whitespace() {
                        i += 1;
                    }
                    if self.chars.get(i) == Some(&'(') {
                        TokenKind::Function(raw.clone())
                    } else {
                        TokenKind::NamedValue(raw.clone())
                    }
                }
            }
        };
        Token { kind, raw, position }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<TokenKind> {
        let mut lexer = Lexer::new(text);
        let mut out = Vec::new();
        while let Some(t) = lexer.next_token().expect("lexes") {
            out.push(t.kind);
        }
        out
    }

    #[test]
    fn dot_is_number_at_start_and_dereference_after_names() {
        assert_eq!(kinds(".5"), vec![TokenKind::Number(0.5)]);
        assert_eq!(
            kinds("a.b"),
            vec![
                TokenKind::NamedValue("a".into()),
                TokenKind::Dereference,
                TokenKind::PropertyName("b".into())
            ]
        );
    }

    #[test]
    fn string_escapes_double_quote() {
        assert_eq!(kinds("'a''b'"), vec![TokenKind::String("a'b".into())]);
    }
}
