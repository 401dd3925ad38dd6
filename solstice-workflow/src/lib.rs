//! Pure translation of GitHub Actions workflows into job plans.
//!
//! `solstice-workflow` turns GitHub Actions YAML and the `.solstice/workflow.kdl` dialect
//! into job plans, and evaluates GitHub's `${{ }}` expression language. It does no I/O.
#![warn(missing_docs, missing_debug_implementations)]

mod expression;

pub use expression::{
    EvaluatedValue, Expression, ExpressionError, ExpressionErrorKind, FileHasher, JobStatus, STANDARD_CONTEXTS,
    ValueKind, evaluate_condition, evaluate_expression, interpolate, interpolate_with_hasher,
};
