//! The error type of the expression language.

/// Which stage of expression processing failed.
///
/// These are the kinds GitHub's own conformance data uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExpressionErrorKind {
    /// The text contains a symbol that is not part of the language (`@`, an unclosed string, a
    /// malformed number).
    Lexing,
    /// The tokens do not form an expression (a missing operand, an unknown function or
    /// named-value, a wrong number of arguments, nesting deeper than 50).
    Parsing,
    /// The expression is well formed but could not be evaluated (an invalid `format` string,
    /// bad JSON given to `fromJSON`, a memory limit).
    Evaluation,
}

impl ExpressionErrorKind {
    /// The lowercase name GitHub's conformance data uses: `lexing`, `parsing` or `evaluation`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExpressionErrorKind::Lexing => "lexing",
            ExpressionErrorKind::Parsing => "parsing",
            ExpressionErrorKind::Evaluation => "evaluation",
        }
    }
}

impl std::fmt::Display for ExpressionErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An expression could not be lexed, parsed or evaluated.
///
/// The message follows GitHub's wording (for example
/// `Unexpected symbol: '2'. Located at position 3 within expression: 1 2`) so that users
/// see the same text on Solstice CI as on GitHub. [`ExpressionError::kind`] tells the stage,
/// [`ExpressionError::position`] the 1-based character position within the expression when
/// one is known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExpressionError {
    kind: ExpressionErrorKind,
    message: String,
    position: Option<usize>,
}

impl ExpressionError {
    pub(crate) fn new(kind: ExpressionErrorKind, message: impl Into<String>, position: Option<usize>) -> Self {
        ExpressionError { kind, message: message.into(), position }
    }

    /// An error with GitHub's "Located at position N within expression: TEXT" suffix.
    pub(crate) fn located(
        kind: ExpressionErrorKind,
        what: impl std::fmt::Display,
        position: usize,
        expression: &str,
    ) -> Self {
        ExpressionError {
            kind,
            message: format!("{what}. Located at position {position} within expression: {expression}"),
            position: Some(position),
        }
    }

    pub(crate) fn evaluation(message: impl Into<String>) -> Self {
        ExpressionError::new(ExpressionErrorKind::Evaluation, message, None)
    }

    /// The stage that failed.
    pub fn kind(&self) -> ExpressionErrorKind {
        self.kind
    }

    /// The 1-based character position within the expression, when the error has one.
    pub fn position(&self) -> Option<usize> {
        self.position
    }

    /// The message, GitHub's wording.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Shifts the position by `offset` characters (used when the expression was cut out of a
    /// larger template such as `echo ${{ expr }}`).
    pub(crate) fn with_position_offset(mut self, offset: usize) -> Self {
        self.position = self.position.map(|p| p + offset);
        self
    }
}
