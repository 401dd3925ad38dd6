//! Splitting text into literal parts and `${{ }}` expressions.

use super::error::{ExpressionError, ExpressionErrorKind};

/// A piece of a template string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TemplatePart<'a> {
    /// Text copied as is.
    Literal(&'a str),
    /// The trimmed text of one `${{ }}`; `offset` is the number of characters before it in
    /// the whole template (for error positions).
    Expression { text: &'a str, offset: usize },
}

/// Splits `text` at each `${{ ... }}`. The closing `}}` is searched outside single-quoted
/// strings, as GitHub does, so `${{ '}}' }}` is one expression.
pub(crate) fn split_template(text: &str) -> Result<Vec<TemplatePart<'_>>, ExpressionError> {
    let mut parts = Vec::new();
    let mut rest = 0;
    while let Some(found) = text[rest..].find("${{") {
        let open = rest + found;
        if open > rest {
            parts.push(TemplatePart::Literal(&text[rest..open]));
        }
        let body_start = open + 3;
        let bytes = text.as_bytes();
        let mut i = body_start;
        let mut in_string = false;
        let mut close = None;
        while i < bytes.len() {
            match bytes[i] {
                b'\'' => in_string = !in_string,
                b'}' if !in_string && bytes.get(i + 1) == Some(&b'}') => {
                    close = Some(i);
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        let Some(close) = close else {
            return Err(ExpressionError::new(
                ExpressionErrorKind::Parsing,
                "The expression is not closed. An unescaped ${{ sequence was found, but the closing }} sequence was not found.",
                Some(text[..open].chars().count() + 1),
            ));
        };
        let raw = &text[body_start..close];
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(ExpressionError::new(
                ExpressionErrorKind::Parsing,
                "An expression was expected",
                Some(text[..open].chars().count() + 1),
            ));
        }
        let leading = raw.len() - raw.trim_start().len();
        let offset = text[..body_start + leading].chars().count();
        parts.push(TemplatePart::Expression { text: trimmed, offset });
        rest = close + 2;
    }
    if rest < text.len() {
        parts.push(TemplatePart::Literal(&text[rest..]));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_literals_and_expressions() {
        let parts = split_template("a ${{ x }} b").expect("splits");
        assert_eq!(
            parts,
            vec![
                TemplatePart::Literal("a "),
                TemplatePart::Expression { text: "x", offset: 6 },
                TemplatePart::Literal(" b"),
            ]
        );
    }

    #[test]
    fn unclosed_and_empty_are_errors() {
        split_template("${{ x").expect_err("unclosed");
        split_template("${{ }}").expect_err("empty");
    }
}
