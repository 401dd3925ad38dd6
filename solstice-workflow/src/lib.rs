//! Pure translation of GitHub Actions workflows into job plans.
//!
//! `solstice-workflow` turns GitHub Actions YAML into job plans and evaluates GitHub's
//! `${{ }}` expression language. It does no I/O and needs no async runtime: input is text
//! plus a display name used in error messages.
//!
//! # Brief overview
//!
//! * [`plan_workflow`] reads a workflow and returns a [`WorkflowPlan`]: one [`JobPlan`] per
//!   job and matrix combination, each with its [`StepPlan`]s (a `run` script with its full
//!   shell command line, or the built-in checkout). [`PlanOptions`] supplies contexts known
//!   at translation time (`github`, `vars`, `inputs`, ...).
//! * It works in two stages: [`parse_workflow`] decodes and validates the YAML as GitHub's
//!   reader does, giving a [`Workflow`]; [`plan_parsed`] expands matrices, resolves shells,
//!   defaults and env, and rejects the job-level features Solstice CI cannot run
//!   (`container:`, `services:`, reusable workflows). A `uses:` step other than
//!   `actions/checkout` becomes a [`StepKind::UnsupportedAction`] step that fails if it runs.
//! * Solstice CI's KDL dialect (`.solstice/workflow.kdl`, documented in
//!   `docs/workflow-kdl.md`) adds per-OS [`Setup`] scripts and jobs fanned out over several
//!   images: [`parse_kdl_workflow`] reads it into the same [`Workflow`], [`plan_kdl_workflow`]
//!   plans it, and [`plan_any`] picks the format from the file name ([`WorkflowFormat`]).
//!   [`label_os_family`] and [`PlanOptions::os_family`] decide which setup scripts a job gets.
//! * Errors are [`WorkflowErrors`]: every problem found, each a [`WorkflowError`] with file,
//!   line, column and a message a workflow author understands.
//! * The expression language: [`evaluate_condition`] for `if:`, [`interpolate`] for text
//!   with `${{ }}`, [`evaluate_expression`] and [`Expression`] for single expressions. What
//!   needs the job's files (`hashFiles`) comes through a [`FileHasher`].
//!
//! The plan's JSON shape (what `solstice workflow plan` prints) is documented in
//! `docs/workflow-plan.md`.
//!
//! # Planning a workflow
//!
//! ```
//! use solstice_workflow::{plan_workflow, PlanOptions, StepKind};
//!
//! let source = r#"
//! on: push
//! jobs:
//!   build:
//!     runs-on: ${{ matrix.os }}
//!     strategy:
//!       matrix:
//!         os: [omnios, freebsd]
//!     steps:
//!       - uses: actions/checkout@v4
//!       - run: make test
//!         shell: bash
//! "#;
//! let plan = plan_workflow(source, "ci.yml", &PlanOptions::new())?;
//! assert_eq!(plan.jobs.len(), 2);
//! assert_eq!(plan.jobs[0].name, "build (omnios)");
//! assert_eq!(plan.jobs[0].runs_on, ["omnios"]);
//! assert_eq!(plan.jobs[0].steps[0].kind, StepKind::Checkout);
//! assert_eq!(plan.jobs[0].steps[1].shell.as_deref(), Some("bash --noprofile --norc -eo pipefail {0}"));
//!
//! // An action Solstice CI cannot run yet is a step that fails if it runs, not an error.
//! let node = "on: push\njobs:\n  x:\n    runs-on: linux\n    steps:\n      - uses: actions/setup-node@v4\n";
//! let plan = plan_workflow(node, "ci.yml", &PlanOptions::new())?;
//! assert_eq!(plan.jobs[0].steps[0].kind, StepKind::UnsupportedAction);
//!
//! let broken = "on: push\njobs:\n  x:\n    runs-on: linux\n    steps:\n      - uses: setup-node\n";
//! let errors = plan_workflow(broken, "ci.yml", &PlanOptions::new()).expect_err("malformed uses");
//! assert_eq!((errors.errors()[0].line, errors.errors()[0].column), (6, 15));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Optional features
//!
//! None: the crate has no cargo features.
#![warn(missing_docs, missing_debug_implementations)]

mod action_ref;
mod dialect;
mod error;
mod expression;
mod inputs;
mod os;
mod pending;
mod plan;
mod setting;
mod syntax;

pub use action_ref::{ActionReference, ActionReferenceError};
pub use error::{WorkflowError, WorkflowErrorKind, WorkflowErrors};
pub use plan::{
    ActionPlan, CheckoutPlan, DEBUG_SSH_ENV, DEFAULT_SHELL, DEFAULT_TIMEOUT_MINUTES, JobPlan, MAX_MATRIX_JOBS, PlanOptions, StepKind, StepPlan, Submodules,
    WorkflowPlan, debug_ssh_requested, plan_parsed, plan_workflow,
};
pub use inputs::{InputError, RunInputs, has_trigger, run_inputs};
pub use pending::PendingJob;
pub use setting::{SettingError, continue_on_error_at_run_time, timeout_minutes_at_run_time};
pub use syntax::{
    Job, ReadLimits, RunDefaults, RunsOn, Setup, Step, Strategy, Workflow, parse_kdl_workflow, parse_workflow,
    parse_workflow_with_limits,
};

pub use dialect::{WorkflowFormat, plan_any, plan_kdl_workflow};
pub use os::{OS_FAMILIES, label_os_family};

pub use expression::{
    EvaluatedValue, Expression, ExpressionError, ExpressionErrorKind, FileHasher, GITHUB_CONTEXT_ALIASES, JobStatus,
    STANDARD_CONTEXTS,
    ValueKind, evaluate_condition, evaluate_expression, interpolate, interpolate_with_hasher,
};
