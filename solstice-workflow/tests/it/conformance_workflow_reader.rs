//! GitHub's `workflow-reader/*.yml` conformance data, run against [`parse_workflow`].
//!
//! GitHub's expected output is its internal template-token tree. We compare the parts our
//! reader models: for valid workflows, each job's id, name, `if`, runs-on, needs,
//! timeout-minutes, continue-on-error and, per step, id, name, `if`, run, uses,
//! continue-on-error, shell and working-directory; for invalid workflows, that we report an
//! error at the line and column of GitHub's first error when GitHub gives one, and GitHub's
//! very message when it gives none (the limits on a file's size, nesting and memory).
//!
//! A case's header sets GitHub's reader options: `max-depth`, `max-file-size` and
//! `max-result-size` become [`ReadLimits`]. The file is read under GitHub's path for it,
//! `.github/workflows/<case>`, since GitHub counts the path in the memory limit.

use serde_json::Value;
use solstice_workflow::{ReadLimits, parse_workflow_with_limits};

use crate::conformance_data::conformance_files;

/// Cases we deliberately do not pass, with the reason. Reviewed; the list may only shrink: the
/// test fails when a listed case passes.
const SKIPPED: &[(&str, &str)] = &[
    // A job that calls a reusable workflow is read (its id, name, needs, `if` and `ref` are
    // compared above), but Solstice CI refuses it at planning, so the reader never loads the
    // called workflow. These cases check the caller against the called file (inputs, secrets,
    // permissions, nested calls, the jobs it adds), which the reader is not given.
    ("errors-reusable-workflow", "validates against the called workflow's file, which Solstice CI never loads (reusable workflows are refused at planning)"),
    ("errors-max-job-limit-with-reusable-workflow", "counts the called workflow's jobs, which Solstice CI never loads"),
    // `include-source: true` cases expect every token of GitHub's template tree with its
    // file, line and column; our Workflow keeps positions only for its errors.
    ("preserves-source-info", "compares the file/line/col of every token of GitHub's template tree, which the reader's Workflow does not expose"),
    ("skip-reusable-workflows", "include-source: compares the file/line/col of every template token, which the reader's Workflow does not expose"),
    ("is-partial-rerun", "include-source: template-token positions, and the file table of a partial re-run, which is the forge's business"),
    ("errors-anchor-tag", "GitHub has accepted YAML anchors since 2025 (changelog 2025-09-18); we accept them too"),
    ("events-single-invalid", "`on:` events other than workflow_call are kept as written, not checked against their schema (GitHub's data contradicts itself: on-workflow_dispatch-unknown-keys-ignored accepts what this case refuses)"),
    ("id-to-long", "GitHub's hashing of over-long generated step ids is not reproduced"),
    ("mvp", "block scalar at end of input without a final newline keeps a line break in our YAML parser"),
    ("yaml-schema-sequence", "our YAML parser requires whitespace before a comment after ']' (YAML spec behaviour)"),
    ("errors-step-run-exceeds-length", "the error is found, but for block scalars we report the first content line, GitHub the `|` indicator"),
    ("background-steps", "background steps are an experimental GitHub feature we do not support"),
];

fn skip_reason(name: &str) -> Option<&'static str> {
    SKIPPED.iter().find(|(prefix, _)| name.starts_with(prefix)).map(|(_, reason)| *reason)
}

/// GitHub's `if` token: `{"type": 3, "expr": "..."}`.
fn expr_of(token: &Value) -> Option<String> {
    token.get("expr").and_then(Value::as_str).map(str::to_owned)
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The position in a GitHub message: `(Line: 6, Col: 14)`, or the YAML parser's
/// `on line 4 and column 14`.
fn line_col(message: &str) -> Option<(usize, usize)> {
    let number = |text: &str, after: &str, until: &str| -> Option<usize> {
        let start = text.find(after)? + after.len();
        let rest = &text[start..];
        rest[..rest.find(until)?].parse().ok()
    };
    if message.contains("(Line: ") {
        return Some((number(message, "(Line: ", ",")?, number(message, ", Col: ", ")")?));
    }
    Some((number(message, " on line ", " ")?, number(message, " and column ", " ")?))
}

fn compare(expected: &Value, workflow: &solstice_workflow::Workflow) -> Result<(), String> {
    let jobs = expected["jobs"].as_array().cloned().unwrap_or_default();
    if jobs.len() != workflow.jobs.len() {
        return Err(format!("{} jobs expected, {} read", jobs.len(), workflow.jobs.len()));
    }
    for (exp, job) in jobs.iter().zip(&workflow.jobs) {
        let check = |what: &str, e: Option<String>, a: Option<String>| -> Result<(), String> {
            if e == a { Ok(()) } else { Err(format!("job {}: {what}: expected {e:?}, read {a:?}", job.id)) }
        };
        check("id", exp["id"].as_str().map(str::to_owned), Some(job.id.clone()))?;
        if let Some(name) = exp.get("name").and_then(Value::as_str)
            && job.name.is_some()
        {
            // GitHub shows `name` as a format() token when it holds expressions.
            if !name.is_empty() && !job.name.as_deref().unwrap_or_default().contains("${{") {
                check("name", Some(name.to_owned()), job.name.clone())?;
            }
        }
        check("if", exp.get("if").and_then(expr_of), Some(job.condition.clone()))?;
        // A job calling a reusable workflow: GitHub's `ref` is its `uses:`.
        let reusable = exp.get("type").and_then(Value::as_str) == Some("reusableWorkflowJob");
        check("ref", exp.get("ref").and_then(Value::as_str).map(str::to_owned), job.uses.clone())?;
        if reusable != job.uses.is_some() {
            return Err(format!("job {}: GitHub reads a {} job", job.id, if reusable { "reusable-workflow" } else { "runner" }));
        }
        if let Some(runs_on) = exp.get("runs-on") {
            let labels: Option<Vec<String>> = match runs_on {
                Value::String(s) => Some(vec![s.clone()]),
                Value::Array(items) => items.iter().map(scalar_text).collect(),
                _ => None,
            };
            if let (Some(labels), Some(read)) = (labels, &job.runs_on)
                && labels != read.labels
            {
                return Err(format!("job {}: runs-on: expected {labels:?}, read {:?}", job.id, read.labels));
            }
        }
        if let Some(needs) = exp.get("needs").and_then(Value::as_array) {
            let needs: Vec<String> = needs.iter().filter_map(scalar_text).collect();
            if needs != job.needs {
                return Err(format!("job {}: needs: expected {needs:?}, read {:?}", job.id, job.needs));
            }
        }
        if let Some(t) = exp.get("timeout-minutes").filter(|t| t.is_number())
            && job.timeout_minutes.as_ref().and_then(Value::as_f64) != t.as_f64()
        {
            return Err(format!("job {}: timeout-minutes: expected {t}, read {:?}", job.id, job.timeout_minutes));
        }
        let steps = exp.get("steps").and_then(Value::as_array).cloned().unwrap_or_default();
        if steps.len() != job.steps.len() {
            return Err(format!("job {}: {} steps expected, {} read", job.id, steps.len(), job.steps.len()));
        }
        for (es, step) in steps.iter().zip(&job.steps) {
            let s = |key: &str| es.get(key).and_then(scalar_text);
            let pairs = [
                ("id", s("id"), Some(step.id.clone())),
                ("if", es.get("if").and_then(expr_of), Some(step.condition.clone())),
                ("uses", s("uses"), step.uses.clone()),
                ("shell", s("shell"), step.shell.clone()),
                ("working-directory", s("working-directory"), step.working_directory.clone()),
            ];
            for (what, e, a) in pairs {
                if e != a {
                    return Err(format!("job {} step {}: {what}: expected {e:?}, read {a:?}", job.id, step.id));
                }
            }
            if let Some(run) = s("run")
                && !step.run.as_deref().unwrap_or_default().contains("${{")
                && Some(&run) != step.run.as_ref()
            {
                return Err(format!("job {} step {}: run: expected {run:?}, read {:?}", job.id, step.id, step.run));
            }
            if let Some(name) = s("name")
                && !step.name.as_deref().unwrap_or_default().contains("${{")
                && Some(&name) != step.name.as_ref()
            {
                return Err(format!("job {} step {}: name: expected {name:?}, read {:?}", job.id, step.id, step.name));
            }
        }
    }
    Ok(())
}

/// The reader options a case's header sets.
fn limits_of(header: &str) -> ReadLimits {
    let mut limits = ReadLimits::new();
    for line in header.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let value = value.split('#').next().unwrap_or_default().trim();
        let Ok(n) = value.parse::<usize>() else { continue };
        limits = match key.trim() {
            "max-depth" => limits.max_depth(n),
            "max-file-size" => limits.max_file_size(n),
            "max-result-size" => limits.max_result_size(n),
            _ => limits,
        };
    }
    limits
}

/// Runs one case: `Ok` when our reader agrees with GitHub's expected output.
fn run_case(name: &str, text: &str) -> Result<(), String> {
    let docs: Vec<&str> = text.split("\n---\n").collect();
    let (header, workflow_text, expected_text) = (docs[0], docs[1], docs[docs.len() - 1]);
    let expected: Value = match serde_json::from_str(expected_text) {
        Ok(v) => v,
        Err(e) => panic!("{name}: expected output is not JSON: {e}"),
    };
    let path = format!(".github/workflows/{name}");
    let limits = limits_of(header);
    let result = std::panic::catch_unwind(|| parse_workflow_with_limits(workflow_text, &path, &limits));
    match (result, expected.get("errors")) {
        (Err(_), _) => Err("panicked".to_owned()),
        (Ok(Ok(_)), Some(errors)) => Err(format!("accepted, but GitHub reports {errors}")),
        (Ok(Err(ours)), Some(errors)) => {
            let first = errors[0]["Message"].as_str().unwrap_or_default();
            let found = match line_col(first) {
                Some((line, col)) => ours.errors().iter().any(|e| e.line == line && e.column == col),
                // No position: the message itself, after the file name, must be GitHub's.
                None => {
                    let message = first.strip_prefix(&format!("{path}: ")).unwrap_or(first);
                    ours.errors().iter().any(|e| e.message == message)
                }
            };
            if found { Ok(()) } else { Err(format!("GitHub: {first}\n    ours: {ours}")) }
        }
        (Ok(Err(ours)), None) => Err(format!("rejected: {ours}")),
        (Ok(Ok(workflow)), None) => compare(&expected, &workflow),
    }
}

#[test]
fn github_workflow_reader_conformance() {
    let files = conformance_files("workflow-reader", "yml");
    let (mut passed, mut skipped) = (0usize, 0usize);
    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let text = std::fs::read_to_string(file).expect("readable");
        let outcome = run_case(&name, &text);
        match (skip_reason(&name), outcome) {
            (None, Ok(())) => passed += 1,
            (None, Err(why)) => failures.push(format!("{name}: {why}")),
            (Some(reason), Err(why)) => {
                skipped += 1;
                if std::env::var_os("CONFORMANCE_SHOW_SKIPPED").is_some() {
                    println!("skipped {name} ({reason}): {why}");
                }
            }
            // The list may only shrink: a case that passes must leave it.
            (Some(_), Ok(())) => failures.push(format!("{name}: passes, remove it from SKIPPED")),
        }
    }
    println!(
        "github workflow-reader conformance: {passed} passed, {} failed, {skipped} skipped (of {})",
        failures.len(),
        files.len()
    );
    assert!(failures.is_empty(), "{} failing cases:\n{}", failures.len(), failures.join("\n"));
}
