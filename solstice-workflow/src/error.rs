//! Errors of workflow translation: each names the file, line and column.

use std::fmt;

/// What kind of problem a [`WorkflowError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WorkflowErrorKind {
    /// The text is not valid YAML (or uses a YAML feature workflows do not allow).
    Yaml,
    /// The text is not valid KDL.
    Kdl,
    /// A key, value or shape the workflow syntax does not allow (unknown key, wrong type,
    /// missing `runs-on`, invalid id, unknown or cyclic `needs`).
    Syntax,
    /// An expression that does not lex, parse or evaluate.
    Expression,
    /// Valid on GitHub but not supported by Solstice CI at the job level (`container:`,
    /// `services:`, reusable workflows). An action step Solstice CI cannot run is no error:
    /// it fails when it runs (see [`crate::StepKind::UnsupportedAction`]).
    Unsupported,
    /// The matrix is invalid or expands to too many jobs.
    Matrix,
    /// The file exceeds one of GitHub's limits on workflow files: its size, its nesting, or
    /// the memory of what it reads into (see [`crate::ReadLimits`]).
    Limit,
}

/// One problem in a workflow, at a 1-based line and column of the named file.
///
/// Displays GitHub's way: `ci.yml (Line: 6, Col: 14): The expression is not closed...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct WorkflowError {
    /// What kind of problem this is.
    pub kind: WorkflowErrorKind,
    /// The display name of the workflow file, as given by the caller.
    pub file: String,
    /// 1-based line (0 when the problem concerns the whole file).
    pub line: usize,
    /// 1-based column (0 when the problem concerns the whole file).
    pub column: usize,
    /// What is wrong, in words a workflow author understands.
    pub message: String,
}

impl fmt::Display for WorkflowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{} (Line: {}, Col: {}): {}", self.file, self.line, self.column, self.message)
        }
    }
}

/// Every problem found in a workflow (never empty). Translation reports as many problems as
/// it can find in one pass rather than stopping at the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowErrors {
    errors: Vec<WorkflowError>,
}

impl WorkflowErrors {
    pub(crate) fn new(errors: Vec<WorkflowError>) -> Self {
        WorkflowErrors { errors }
    }

    /// The problems, in source order.
    pub fn errors(&self) -> &[WorkflowError] {
        &self.errors
    }

    /// Consumes self into the list of problems.
    pub fn into_errors(self) -> Vec<WorkflowError> {
        self.errors
    }
}

impl fmt::Display for WorkflowErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for WorkflowErrors {}

/// A source position, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub(crate) struct Pos {
    pub(crate) line: usize,
    pub(crate) column: usize,
}

/// Collects errors for one file.
#[derive(Debug)]
pub(crate) struct Diagnostics {
    pub(crate) file: String,
    pub(crate) errors: Vec<WorkflowError>,
}

impl Diagnostics {
    pub(crate) fn new(file: &str) -> Self {
        Diagnostics { file: file.to_owned(), errors: Vec::new() }
    }

    pub(crate) fn push(&mut self, kind: WorkflowErrorKind, pos: Pos, message: impl Into<String>) {
        self.errors.push(WorkflowError {
            kind,
            file: self.file.clone(),
            line: pos.line,
            column: pos.column,
            message: message.into(),
        });
    }

    pub(crate) fn syntax(&mut self, pos: Pos, message: impl Into<String>) {
        self.push(WorkflowErrorKind::Syntax, pos, message);
    }

    #[cfg(test)]
    pub(crate) fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    pub(crate) fn into_result<T>(mut self, value: T) -> Result<T, WorkflowErrors> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            self.errors.sort_by_key(|e| (e.line == 0, e.line, e.column));
            Err(WorkflowErrors::new(self.errors))
        }
    }
}
