//! GitHub's `${{ }}` expression language: lexer, parser, evaluator and templates.

mod error;
mod eval;
mod lexer;
mod number;
mod parser;
mod template;
mod value;

use serde::Serialize;

pub use error::{ExpressionError, ExpressionErrorKind};
pub(crate) use lexer::is_legal_identifier;
pub(crate) use number::{format_number, is_decimal_literal};
pub(crate) use value::number_to_json;
pub(crate) use template::{TemplatePart, split_template};

use eval::Scope;
use parser::{Node, Parser};
use value::eq_ignore_case;

/// The named-values (contexts) GitHub defines for workflows, plus the aliases of `github`
/// that Forgejo and Gitea define ([`GITHUB_CONTEXT_ALIASES`]), so that a workflow written for
/// those forges reads too. Expressions may reference these whether or not the caller supplies
/// them; a missing context evaluates to `null`.
pub const STANDARD_CONTEXTS: &[&str] = &[
    "github", "forge", "gitea", "env", "vars", "secrets", "matrix", "strategy", "runner", "job", "jobs", "steps",
    "needs", "inputs",
];

/// Other names of the `github` context: Forgejo documents `forge` as an alias of `github`
/// (<https://forgejo.org/docs/latest/user/actions/reference/#forge>), and Gitea's runner
/// also answers to `gitea`. Wherever `github` is known, these hold the same value unless
/// given on their own.
pub const GITHUB_CONTEXT_ALIASES: &[&str] = &["forge", "gitea"];

/// The outcome so far of the job (or of the steps before the current one), which the status
/// functions `success()`, `failure()`, `cancelled()` and `always()` look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum JobStatus {
    /// Nothing has failed and the job was not cancelled.
    #[default]
    Success,
    /// A previous step (or a needed job) failed.
    Failure,
    /// The job was cancelled.
    Cancelled,
    /// A needed job (or one further up the `needs` chain) was skipped and none failed:
    /// `success()`, `failure()` and `cancelled()` are all false, so a job-level `if:`
    /// without `always()` skips the job too. GitHub's docs: "a failure or skip applies to
    /// all jobs in the dependency chain", and `failure()` "returns true if any ancestor job
    /// fails" (not when one was skipped).
    Skipped,
}

/// The kind of an expression result, as named in GitHub's conformance data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub enum ValueKind {
    /// `null`.
    Null,
    /// `true` or `false`.
    Boolean,
    /// A double-precision number.
    Number,
    /// A string.
    String,
    /// An array.
    Array,
    /// An object.
    Object,
}

/// The result of evaluating an expression: its kind and its value as JSON.
///
/// Serializes as `{"kind": "Number", "value": 42}`, the shape `solstice workflow eval`
/// prints. Non-finite numbers have kind `Number` and the value `"NaN"`, `"Infinity"` or
/// `"-Infinity"` (JSON has no such numbers).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct EvaluatedValue {
    /// What kind of value this is.
    pub kind: ValueKind,
    /// The value.
    pub value: serde_json::Value,
}

/// Computes `hashFiles()` for the evaluator. Implemented by whatever can see the job's files
/// (the step executor); the translator never has one, so `hashFiles` stays a run-time
/// expression.
pub trait FileHasher {
    /// Returns the SHA-256 hex digest GitHub's `hashFiles(patterns...)` would produce for the
    /// workspace, or an empty string when no file matches.
    ///
    /// # Errors
    /// Any I/O error reading the files.
    fn hash_files(&self, patterns: &[String]) -> std::io::Result<String>;
}

/// A parsed expression, ready to be evaluated any number of times.
///
/// ```
/// use solstice_workflow::{Expression, JobStatus};
/// let expr = Expression::parse("format('{0}-{1}', matrix.os, matrix.version)")?;
/// let contexts = serde_json::json!({"matrix": {"os": "illumos", "version": 2}});
/// let contexts = contexts.as_object().expect("an object");
/// assert_eq!(expr.evaluate(contexts, JobStatus::Success)?.value, "illumos-2");
/// # Ok::<(), solstice_workflow::ExpressionError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Expression {
    text: String,
    root: Option<Node>,
}

impl Expression {
    /// Parses `text` (without `${{ }}`), allowing the [`STANDARD_CONTEXTS`].
    ///
    /// # Errors
    /// A lexing or parsing [`ExpressionError`] with GitHub's message and position.
    pub fn parse(text: &str) -> Result<Expression, ExpressionError> {
        Self::parse_with_contexts(text, STANDARD_CONTEXTS)
    }

    /// Parses `text` allowing exactly the named-values in `names` (case-insensitive); any other
    /// name is an "Unrecognized named-value" error, as on GitHub where each workflow key
    /// allows its own set of contexts.
    ///
    /// # Errors
    /// A lexing or parsing [`ExpressionError`].
    pub fn parse_with_contexts<S: AsRef<str>>(text: &str, names: &[S]) -> Result<Expression, ExpressionError> {
        let allowed = |name: &str| names.iter().any(|n| eq_ignore_case(n.as_ref(), name));
        let root = Parser::new(text, &allowed).parse()?;
        Ok(Expression { text: text.to_owned(), root })
    }

    /// The expression text as given.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Evaluates the expression against `contexts` (a JSON object keyed by context name).
    ///
    /// # Errors
    /// An evaluation [`ExpressionError`] (invalid `format` string, bad `fromJSON` input,
    /// `hashFiles` without a [`FileHasher`], memory limit).
    pub fn evaluate(
        &self,
        contexts: &serde_json::Map<String, serde_json::Value>,
        status: JobStatus,
    ) -> Result<EvaluatedValue, ExpressionError> {
        self.evaluate_inner(contexts, status, None, |v| EvaluatedValue { kind: v.kind(), value: v.to_json() })
    }

    /// Like [`Expression::evaluate`], with a [`FileHasher`] for `hashFiles()`.
    ///
    /// # Errors
    /// As [`Expression::evaluate`], plus a failing hasher.
    pub fn evaluate_with_hasher(
        &self,
        contexts: &serde_json::Map<String, serde_json::Value>,
        status: JobStatus,
        hasher: &dyn FileHasher,
    ) -> Result<EvaluatedValue, ExpressionError> {
        self.evaluate_inner(contexts, status, Some(hasher), |v| EvaluatedValue { kind: v.kind(), value: v.to_json() })
    }

    fn evaluate_inner<T>(
        &self,
        contexts: &serde_json::Map<String, serde_json::Value>,
        status: JobStatus,
        hasher: Option<&dyn FileHasher>,
        finish: impl FnOnce(&value::Value<'_>) -> T,
    ) -> Result<T, ExpressionError> {
        let scope = Scope::new(contexts, status, hasher);
        let result = match &self.root {
            Some(root) => scope.eval(root)?,
            None => value::Value::Null,
        };
        Ok(finish(&result))
    }

    /// Evaluates and converts the result to a string the way GitHub substitutes `${{ }}` in
    /// text: `null` is empty, booleans `true`/`false`, numbers GitHub-formatted, arrays and
    /// objects as indented JSON.
    fn evaluate_to_string(
        &self,
        contexts: &serde_json::Map<String, serde_json::Value>,
        hasher: Option<&dyn FileHasher>,
    ) -> Result<String, ExpressionError> {
        self.evaluate_inner(contexts, JobStatus::Success, hasher, |v| match v {
            value::Value::Array(_) | value::Value::Object(_) => {
                let mut out = String::new();
                eval::write_json(v, 0, &mut out);
                out
            }
            other => other.to_display_string().into_owned(),
        })
    }

    /// Evaluates to a boolean with GitHub's truthiness.
    fn evaluate_truthy(
        &self,
        contexts: &serde_json::Map<String, serde_json::Value>,
        status: JobStatus,
    ) -> Result<bool, ExpressionError> {
        self.evaluate_inner(contexts, status, None, |v| v.truthy())
    }

    /// The named-values (contexts) the expression references, lowercased, without duplicates,
    /// in order of appearance.
    pub fn referenced_contexts(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(root) = &self.root {
            visit(root, &mut |node| {
                if let Node::NamedValue(name) = node {
                    let name = name.to_ascii_lowercase();
                    if !out.contains(&name) {
                        out.push(name);
                    }
                }
            });
        }
        out
    }

    /// The functions the expression calls, in GitHub's canonical spelling
    /// (`startsWith`, `toJSON`, ...), without duplicates.
    pub fn called_functions(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if let Some(root) = &self.root {
            visit(root, &mut |node| {
                if let Node::Call(name, _) = node
                    && !out.contains(name)
                {
                    out.push(*name);
                }
            });
        }
        out
    }

    /// Whether the expression calls `success()`, `failure()`, `cancelled()` or `always()`.
    /// An `if:` that does not is implicitly `success() && (...)`.
    pub fn uses_status_function(&self) -> bool {
        self.called_functions().iter().any(|f| matches!(*f, "success" | "failure" | "cancelled" | "always"))
    }
}

fn visit<'n>(node: &'n Node, f: &mut dyn FnMut(&'n Node)) {
    f(node);
    match node {
        Node::Index(a, b) | Node::Binary(_, a, b) => {
            visit(a, f);
            visit(b, f);
        }
        Node::Wildcard(a) | Node::Not(a) => visit(a, f),
        Node::And(items) | Node::Or(items) | Node::Call(_, items) => {
            for item in items {
                visit(item, f);
            }
        }
        Node::Null | Node::Boolean(_) | Node::Number(_) | Node::String(_) | Node::NamedValue(_) => {}
    }
}

/// Names allowed in an expression evaluated against `contexts`: the standard contexts plus
/// whatever the caller supplied.
fn allowed_names(contexts: &serde_json::Map<String, serde_json::Value>) -> Vec<&str> {
    let mut names: Vec<&str> = STANDARD_CONTEXTS.to_vec();
    names.extend(contexts.keys().map(String::as_str));
    names
}

/// Evaluates one expression (without `${{ }}`) against `contexts`, allowing the standard
/// contexts and any key of `contexts`. This is what `solstice workflow eval` runs.
///
/// # Errors
/// A lexing, parsing or evaluation [`ExpressionError`].
pub fn evaluate_expression(
    expression: &str,
    contexts: &serde_json::Map<String, serde_json::Value>,
) -> Result<EvaluatedValue, ExpressionError> {
    Expression::parse_with_contexts(expression, &allowed_names(contexts))?.evaluate(contexts, JobStatus::Success)
}

/// Strips one surrounding `${{ }}` from a condition, if the whole text is exactly one
/// expression.
pub(crate) fn strip_condition(condition: &str) -> Option<&str> {
    let trimmed = condition.trim();
    let inner = trimmed.strip_prefix("${{")?.strip_suffix("}}")?;
    match split_template(trimmed) {
        Ok(parts) if parts.len() == 1 && matches!(parts[0], TemplatePart::Expression { .. }) => Some(inner.trim()),
        _ => None,
    }
}

/// Evaluates a step or job `if:` condition.
///
/// `condition` may be written with or without a surrounding `${{ }}`; empty means
/// `success()`. The status functions `success()`, `failure()`, `always()` and `cancelled()`
/// look at `status`; a condition that calls none of them is implicitly
/// `success() && (condition)`, as on GitHub. `contexts` is a JSON object with any of the keys
/// `github`, `env`, `vars`, `secrets`, `matrix`, `strategy`, `runner`, `job`, `steps`,
/// `needs`, `inputs`.
///
/// ```
/// use solstice_workflow::{evaluate_condition, JobStatus};
/// let contexts = serde_json::json!({"github": {"ref": "refs/heads/main"}});
/// let contexts = contexts.as_object().expect("an object");
/// assert!(evaluate_condition("github.ref == 'refs/heads/main'", contexts, JobStatus::Success)?);
/// assert!(!evaluate_condition("${{ github.ref == 'refs/heads/main' }}", contexts, JobStatus::Failure)?);
/// assert!(evaluate_condition("failure()", contexts, JobStatus::Failure)?);
/// # Ok::<(), solstice_workflow::ExpressionError>(())
/// ```
///
/// # Errors
/// A lexing, parsing or evaluation [`ExpressionError`].
pub fn evaluate_condition(
    condition: &str,
    contexts: &serde_json::Map<String, serde_json::Value>,
    status: JobStatus,
) -> Result<bool, ExpressionError> {
    let text = match strip_condition(condition) {
        Some(inner) => inner.to_owned(),
        None if condition.contains("${{") => {
            // Text mixed with expressions: GitHub substitutes, then tests the string.
            let text = interpolate(condition, contexts)?;
            return Ok(status == JobStatus::Success && !text.is_empty());
        }
        None => condition.trim().to_owned(),
    };
    if text.is_empty() {
        return Ok(status == JobStatus::Success);
    }
    let expr = Expression::parse_with_contexts(&text, &allowed_names(contexts))?;
    let value = expr.evaluate_truthy(contexts, status)?;
    if expr.uses_status_function() { Ok(value) } else { Ok(status == JobStatus::Success && value) }
}

/// Replaces every `${{ expr }}` in `text` with the evaluated value converted to a string
/// GitHub's way: `null` becomes the empty string, booleans `true`/`false`, numbers
/// GitHub-formatted (`3`, `0.5`, `1E+15`), arrays and objects indented JSON.
///
/// ```
/// use solstice_workflow::interpolate;
/// let contexts = serde_json::json!({"steps": {"build": {"outputs": {"version": "1.2"}}}});
/// let contexts = contexts.as_object().expect("an object");
/// assert_eq!(interpolate("v${{ steps.build.outputs.version }}", contexts)?, "v1.2");
/// # Ok::<(), solstice_workflow::ExpressionError>(())
/// ```
///
/// # Errors
/// An [`ExpressionError`] for an unclosed or empty `${{ }}` or any expression that fails.
pub fn interpolate(
    text: &str,
    contexts: &serde_json::Map<String, serde_json::Value>,
) -> Result<String, ExpressionError> {
    interpolate_with(text, contexts, None)
}

/// Like [`interpolate`], with a [`FileHasher`] so `hashFiles()` can be evaluated.
///
/// # Errors
/// As [`interpolate`].
pub fn interpolate_with_hasher(
    text: &str,
    contexts: &serde_json::Map<String, serde_json::Value>,
    hasher: &dyn FileHasher,
) -> Result<String, ExpressionError> {
    interpolate_with(text, contexts, Some(hasher))
}

fn interpolate_with(
    text: &str,
    contexts: &serde_json::Map<String, serde_json::Value>,
    hasher: Option<&dyn FileHasher>,
) -> Result<String, ExpressionError> {
    if !text.contains("${{") {
        return Ok(text.to_owned());
    }
    let names = allowed_names(contexts);
    let mut out = String::with_capacity(text.len());
    for part in split_template(text)? {
        match part {
            TemplatePart::Literal(s) => out.push_str(s),
            TemplatePart::Expression { text: expr, offset } => {
                let parsed =
                    Expression::parse_with_contexts(expr, &names).map_err(|e| e.with_position_offset(offset))?;
                out.push_str(&parsed.evaluate_to_string(contexts, hasher)?);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(json: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        json.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn implicit_success_applies_without_status_function() {
        let c = ctx(serde_json::json!({}));
        assert_eq!(evaluate_condition("true", &c, JobStatus::Failure), Ok(false));
        assert_eq!(evaluate_condition("always()", &c, JobStatus::Failure), Ok(true));
        assert_eq!(evaluate_condition("failure() || true", &c, JobStatus::Failure), Ok(true));
        assert_eq!(evaluate_condition("", &c, JobStatus::Success), Ok(true));
        assert_eq!(evaluate_condition("  ", &c, JobStatus::Cancelled), Ok(false));
        assert_eq!(evaluate_condition("cancelled()", &c, JobStatus::Cancelled), Ok(true));
        assert_eq!(evaluate_condition("${{ success() }}", &c, JobStatus::Success), Ok(true));
        for condition in ["", "success()", "failure()", "cancelled()", "true", "failure() || cancelled()"] {
            assert_eq!(evaluate_condition(condition, &c, JobStatus::Skipped), Ok(false), "{condition}");
        }
        assert_eq!(evaluate_condition("always()", &c, JobStatus::Skipped), Ok(true));
    }

    #[test]
    fn interpolation_formats_values() {
        let c = ctx(serde_json::json!({"matrix": {"n": 2.5, "b": true, "a": [1], "z": null}}));
        assert_eq!(
            interpolate("${{ matrix.n }} ${{ matrix.b }} [${{ matrix.z }}] ${{ matrix.a }}", &c),
            Ok("2.5 true [] [\n  1\n]".to_owned())
        );
        assert_eq!(interpolate("no expressions", &c), Ok("no expressions".to_owned()));
        assert_eq!(interpolate("${{ '}}' }}", &c), Ok("}}".to_owned()));
    }

    #[test]
    fn errors_carry_kind_and_position() {
        let c = ctx(serde_json::json!({}));
        let err = interpolate("echo ${{ 1 2 }}", &c).expect_err("fails");
        assert_eq!(err.kind(), ExpressionErrorKind::Parsing);
        assert!(err.position().is_some());
        let err = evaluate_condition("github.x == @", &c, JobStatus::Success).expect_err("fails");
        assert_eq!(err.kind(), ExpressionErrorKind::Lexing);
        assert_eq!(err.position(), Some(13));
    }

    #[test]
    fn hash_files_needs_a_hasher() {
        struct Fixed;
        impl FileHasher for Fixed {
            fn hash_files(&self, patterns: &[String]) -> std::io::Result<String> {
                Ok(format!("hash:{}", patterns.join("|")))
            }
        }
        let c = ctx(serde_json::json!({}));
        let err = interpolate("${{ hashFiles('**/Cargo.lock') }}", &c).expect_err("no hasher");
        assert_eq!(err.kind(), ExpressionErrorKind::Evaluation);
        assert_eq!(
            interpolate_with_hasher("${{ hashFiles('a', 'b') }}", &c, &Fixed),
            Ok("hash:a|b".to_owned())
        );
    }
}
