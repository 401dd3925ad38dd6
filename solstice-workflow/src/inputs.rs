//! The `inputs` of a `workflow_dispatch` or `workflow_call` run, built from what was given
//! and what the workflow declares, as GitHub builds them.
//!
//! GitHub's docs (workflow syntax, `on.workflow_dispatch.inputs` and
//! `on.workflow_call.inputs`; "Contexts", `inputs` context) and REST API ("Create a workflow
//! dispatch event"): an input has a `type` (`boolean`, `number`, `string`, and for dispatch
//! also `choice` and `environment`; `string` when absent), may be `required` and may have a
//! `default`. The `inputs` context keeps the types (a boolean input is a boolean), while a
//! dispatch event's `github.event.inputs` holds every value as a string. A dispatch with an
//! undeclared input is refused ("Unexpected inputs provided"), as is one without a required
//! input that has no default, or with a `choice` outside its `options`.

use serde_json::{Map, Value};

use crate::plan::value_text;

/// Why the inputs given for a run do not fit the workflow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// The workflow is not triggered by the event that takes inputs.
    #[error("the workflow has no `{0}` trigger")]
    NoTrigger(String),
    /// Inputs the workflow does not declare.
    #[error("unexpected inputs provided: {}; the workflow declares {}", .given.join(", "), declared_list(.declared))]
    Unexpected {
        /// The undeclared names given.
        given: Vec<String>,
        /// The names the workflow declares.
        declared: Vec<String>,
    },
    /// A required input without default was not given.
    #[error("the required input '{0}' was not provided")]
    Missing(String),
    /// A `choice` input's value is not one of its options.
    #[error("the input '{name}' must be one of {}, not '{value}'", .options.join(", "))]
    NotAnOption {
        /// The input.
        name: String,
        /// The value given.
        value: String,
        /// Its `options`.
        options: Vec<String>,
    },
    /// A `boolean` or `number` input's value is not of its type.
    #[error("the input '{name}' is a {kind}, not '{value}'")]
    WrongType {
        /// The input.
        name: String,
        /// `boolean` or `number`.
        kind: &'static str,
        /// The value given.
        value: String,
    },
}

fn declared_list(declared: &[String]) -> String {
    if declared.is_empty() { "no inputs".to_owned() } else { declared.join(", ") }
}

/// The inputs of one run.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct RunInputs {
    /// The `inputs` context: every declared input, typed, defaults filled in.
    pub context: Map<String, Value>,
    /// The same values as strings: a dispatch event's `github.event.inputs`.
    pub event_inputs: Map<String, Value>,
}

/// Whether `on` (as written: a name, a list of names or a mapping) lists `event`, and its
/// settings if it is a mapping entry.
fn trigger<'a>(on: &'a Value, event: &str) -> Option<Option<&'a Value>> {
    match on {
        Value::String(name) => (name == event).then_some(None),
        Value::Array(names) => names.iter().any(|n| n.as_str() == Some(event)).then_some(None),
        Value::Object(map) => map.get(event).map(Some),
        _ => None,
    }
}

/// Whether the workflow whose `on:` is `on` (as [`crate::Workflow::on`] keeps it) is
/// triggered by `event`.
///
/// ```
/// let on = serde_json::json!(["push", "workflow_dispatch"]);
/// assert!(solstice_workflow::has_trigger(&on, "workflow_dispatch"));
/// assert!(!solstice_workflow::has_trigger(&on, "pull_request"));
/// ```
pub fn has_trigger(on: &Value, event: &str) -> bool {
    trigger(on, event).is_some()
}

/// Builds the inputs of a `workflow_dispatch` or `workflow_call` run of a workflow whose
/// `on:` is `on` (as [`crate::Workflow::on`] keeps it), from the values `given` (strings, or
/// JSON booleans and numbers as an event payload has them).
///
/// ```
/// use serde_json::json;
/// let on = json!({"workflow_dispatch": {"inputs": {
///     "debug": {"type": "boolean"},
///     "level": {"type": "choice", "options": ["low", "high"], "default": "low"},
/// }}});
/// let given = json!({"debug": "true"});
/// let inputs = solstice_workflow::run_inputs(&on, "workflow_dispatch", given.as_object().expect("an object"))?;
/// assert_eq!(inputs.context["debug"], json!(true));
/// assert_eq!(inputs.context["level"], json!("low"));
/// assert_eq!(inputs.event_inputs["debug"], json!("true"));
/// # Ok::<(), solstice_workflow::InputError>(())
/// ```
///
/// # Errors
/// An [`InputError`] naming the input that does not fit, or [`InputError::NoTrigger`] when
/// the workflow has no such trigger.
pub fn run_inputs(on: &Value, event: &str, given: &Map<String, Value>) -> Result<RunInputs, InputError> {
    let settings = trigger(on, event).ok_or_else(|| InputError::NoTrigger(event.to_owned()))?;
    let declared = settings.and_then(|s| s.get("inputs")).and_then(Value::as_object).cloned().unwrap_or_default();
    let unexpected: Vec<String> = given.keys().filter(|name| !declared.contains_key(*name)).cloned().collect();
    if !unexpected.is_empty() {
        return Err(InputError::Unexpected { given: unexpected, declared: declared.keys().cloned().collect() });
    }
    let mut inputs = RunInputs::default();
    for (name, declaration) in &declared {
        let kind = declaration.get("type").and_then(Value::as_str).unwrap_or("string");
        let required = declaration.get("required").is_some_and(|r| r.as_bool() == Some(true) || r.as_str() == Some("true"));
        let value = match given.get(name).or_else(|| declaration.get("default").filter(|d| !d.is_null())) {
            Some(value) => typed(name, kind, declaration, value)?,
            None if required => return Err(InputError::Missing(name.clone())),
            // An optional input without default: false for a boolean, empty otherwise.
            None if kind == "boolean" => Value::Bool(false),
            None => Value::String(String::new()),
        };
        inputs.event_inputs.insert(name.clone(), Value::String(value_text(&value)));
        inputs.context.insert(name.clone(), value);
    }
    Ok(inputs)
}

/// `value` as an input of type `kind`.
fn typed(name: &str, kind: &str, declaration: &Value, value: &Value) -> Result<Value, InputError> {
    let text = value_text(value);
    let wrong = |kind| InputError::WrongType { name: name.to_owned(), kind, value: text.clone() };
    match kind {
        "boolean" => match value {
            Value::Bool(b) => Ok(Value::Bool(*b)),
            _ if text == "true" => Ok(Value::Bool(true)),
            _ if text == "false" => Ok(Value::Bool(false)),
            _ => Err(wrong("boolean")),
        },
        "number" => match value {
            Value::Number(_) => Ok(value.clone()),
            _ => text.trim().parse::<f64>().ok().and_then(serde_json::Number::from_f64).map(Value::Number).ok_or_else(|| wrong("number")),
        },
        "choice" => {
            let options: Vec<String> =
                declaration.get("options").and_then(Value::as_array).into_iter().flatten().map(value_text).collect();
            if options.contains(&text) {
                Ok(Value::String(text))
            } else {
                Err(InputError::NotAnOption { name: name.to_owned(), value: text, options })
            }
        }
        _ => Ok(Value::String(text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn given(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    // GitHub's REST API refuses a dispatch with "Unexpected inputs provided" and one that
    // lacks a required input; the docs' `choice` example limits the value to `options`.
    #[test]
    fn a_dispatch_that_does_not_fit_the_declarations_is_refused_naming_the_input() {
        let on = json!({"workflow_dispatch": {"inputs": {
            "NAME": {"type": "string", "required": true},
            "level": {"type": "choice", "options": ["low", "high"], "required": true, "default": "low"},
            "count": {"type": "number"},
        }}});
        let err = run_inputs(&on, "workflow_dispatch", &given(json!({"SOME_INPUT": "x"}))).expect_err("undeclared");
        assert!(err.to_string().contains("SOME_INPUT"), "{err}");
        let err = run_inputs(&on, "workflow_dispatch", &given(json!({}))).expect_err("missing");
        assert_eq!(err, InputError::Missing("NAME".into()));
        let err = run_inputs(&on, "workflow_dispatch", &given(json!({"NAME": "n", "level": "mid"}))).expect_err("option");
        assert!(err.to_string().contains("'level' must be one of low, high, not 'mid'"), "{err}");
        let err = run_inputs(&on, "workflow_dispatch", &given(json!({"NAME": "n", "count": "many"}))).expect_err("number");
        assert!(err.to_string().contains("'count' is a number"), "{err}");
        let ok = run_inputs(&on, "workflow_dispatch", &given(json!({"NAME": "n", "count": "3"}))).expect("fits");
        assert_eq!(ok.context["count"], json!(3.0));
        assert_eq!(ok.context["level"], json!("low"), "the default of a required input counts as given");
        assert_eq!(run_inputs(&json!("push"), "workflow_dispatch", &Map::new()), Err(InputError::NoTrigger("workflow_dispatch".into())));
    }

    // GitHub's docs: the `inputs` context keeps booleans as booleans, `github.event.inputs`
    // holds strings; an optional boolean that is not given is false.
    #[test]
    fn booleans_are_booleans_in_inputs_and_strings_in_the_event() {
        let on = json!({"workflow_call": {"inputs": {
            "required": {"required": true}, "with_default": {"default": "default"}, "boolean": {"type": "boolean"},
            "flag": {"type": "boolean"},
        }}});
        let inputs = run_inputs(&on, "workflow_call", &given(json!({"required": "r", "boolean": "true"}))).expect("fits");
        assert_eq!(Value::Object(inputs.context), json!({"required": "r", "with_default": "default", "boolean": true, "flag": false}));
        assert_eq!(inputs.event_inputs["boolean"], json!("true"));
        assert_eq!(inputs.event_inputs["flag"], json!("false"));
        let list = run_inputs(&json!(["push", "workflow_dispatch"]), "workflow_dispatch", &Map::new()).expect("no inputs declared");
        assert!(list.context.is_empty());
    }
}
