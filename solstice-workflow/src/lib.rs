//! Pure translation of GitHub Actions workflows into job plans.
//!
//! `solstice-workflow` turns GitHub Actions YAML and the `.solstice/workflow.kdl` dialect
//! into job plans, and evaluates GitHub's `${{ }}` expression language. It does no I/O.
#![warn(missing_docs, missing_debug_implementations)]

mod error;
mod expression;
mod plan;
mod syntax;

pub use error::{WorkflowError, WorkflowErrorKind, WorkflowErrors};
pub use plan::{
    CheckoutPlan, DEFAULT_SHELL, DEFAULT_TIMEOUT_MINUTES, JobPlan, MAX_MATRIX_JOBS, PlanOptions, StepKind, StepPlan, Submodules,
    WorkflowPlan, plan_parsed, plan_workflow,
};
pub use syntax::{Job, RunDefaults, RunsOn, Step, Strategy, Workflow, parse_workflow};

pub use expression::{
    EvaluatedValue, Expression, ExpressionError, ExpressionErrorKind, FileHasher, JobStatus, STANDARD_CONTEXTS,
    ValueKind, evaluate_condition, evaluate_expression, interpolate, interpolate_with_hasher,
};
