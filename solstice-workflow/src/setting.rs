//! `timeout-minutes` and `continue-on-error` whose value is known only while the job runs
//! (`${{ steps.x.outputs.y }}`, `${{ fromJSON(env.T) }}`): one rule, used by the planner for
//! what it can resolve and by the engine for the rest.
//!
//! GitHub's runner evaluates both with the contexts of the moment and then asserts the
//! type: a number for `timeout-minutes`, a boolean for `continue-on-error`, with no
//! coercion (actions/runner `PipelineTemplateConverter.ConvertToStepTimeout` →
//! `AssertNumber`, `ConvertToStepContinueOnError` → `AssertBoolean`).

use serde_json::{Map, Value};

use crate::expression::{ExpressionError, TemplatePart, split_template};
use crate::plan::value_text;

/// Why a run-time `timeout-minutes` or `continue-on-error` has no usable value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingError {
    /// The expression could not be evaluated.
    #[error("`{setting}` could not be evaluated")]
    Expression {
        /// `timeout-minutes` or `continue-on-error`.
        setting: &'static str,
        /// Why.
        #[source]
        source: ExpressionError,
    },
    /// `timeout-minutes` is not a number of minutes.
    #[error("`timeout-minutes` must be a number of minutes, not '{0}'")]
    NotMinutes(String),
    /// `continue-on-error` is not a boolean.
    #[error("`continue-on-error` must be a boolean (true or false), not '{0}'")]
    NotBoolean(String),
}

/// Evaluates a setting as written: exactly one `${{ }}` keeps the value's type (a number
/// stays a number), anything else is text with its expressions substituted.
fn evaluate(text: &str, setting: &'static str, contexts: &Map<String, Value>) -> Result<Value, SettingError> {
    let wrap = |source| SettingError::Expression { setting, source };
    if let [TemplatePart::Expression { text: inner, .. }] = split_template(text).map_err(wrap)?.as_slice() {
        return crate::evaluate_expression(inner, contexts).map(|v| v.value).map_err(wrap);
    }
    crate::interpolate(text, contexts).map(Value::String).map_err(wrap)
}

/// Evaluates a run-time `timeout-minutes` (as kept in [`crate::StepPlan::timeout_minutes_expression`]
/// or [`crate::JobPlan::timeout_minutes_expression`]) against `contexts`: `Some(minutes)`, a
/// fraction rounded up as the planner does, or `None` for 0 (the runner arms no timeout
/// unless the value is above 0, actions/runner `StepsRunner.RunStepAsync`).
///
/// ```
/// let contexts = serde_json::json!({"env": {"T": "7"}});
/// let contexts = contexts.as_object().expect("an object");
/// assert_eq!(solstice_workflow::timeout_minutes_at_run_time("${{ fromJSON(env.T) }}", contexts)?, Some(7));
/// assert!(solstice_workflow::timeout_minutes_at_run_time("${{ env.T }}", contexts).is_err(), "a string is not a number");
/// # Ok::<(), solstice_workflow::SettingError>(())
/// ```
///
/// # Errors
/// [`SettingError::Expression`] when it cannot be evaluated, [`SettingError::NotMinutes`]
/// when the value is not a number of minutes (a string, even `'5'`, is not: GitHub asserts a
/// number).
pub fn timeout_minutes_at_run_time(text: &str, contexts: &Map<String, Value>) -> Result<Option<u64>, SettingError> {
    let value = evaluate(text, "timeout-minutes", contexts)?;
    match value.as_f64() {
        Some(n) if n.is_finite() && n > 0.0 => Ok(Some(n.ceil() as u64)),
        Some(0.0) => Ok(None),
        _ => Err(SettingError::NotMinutes(value_text(&value))),
    }
}

/// Evaluates a run-time `continue-on-error` against `contexts`.
///
/// ```
/// let contexts = serde_json::json!({"matrix": {"experimental": true}});
/// let contexts = contexts.as_object().expect("an object");
/// assert!(solstice_workflow::continue_on_error_at_run_time("${{ matrix.experimental }}", contexts)?);
/// assert!(solstice_workflow::continue_on_error_at_run_time("${{ 'yes' }}", contexts).is_err());
/// # Ok::<(), solstice_workflow::SettingError>(())
/// ```
///
/// # Errors
/// [`SettingError::Expression`] when it cannot be evaluated, [`SettingError::NotBoolean`]
/// when the value is not a boolean (GitHub asserts a boolean; the string `'true'` is not one).
pub fn continue_on_error_at_run_time(text: &str, contexts: &Map<String, Value>) -> Result<bool, SettingError> {
    match evaluate(text, "continue-on-error", contexts)? {
        Value::Bool(b) => Ok(b),
        other => Err(SettingError::NotBoolean(value_text(&other))),
    }
}
