//! Every case of GitHub's `expressions/*.json` conformance data.

use solstice_workflow::{Expression, JobStatus};

use crate::conformance_data::conformance_files;
use crate::support::json_equal;

/// Cases we deliberately do not pass, as (file, expression, reason). Reviewed; the list may
/// only shrink.
const SKIPPED: &[(&str, &str, &str)] = &[];

#[test]
fn github_expression_conformance() {
    let files = conformance_files("expressions", "json");
    let (mut passed, mut skipped) = (0usize, 0usize);
    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let text = std::fs::read_to_string(file).expect("readable");
        let groups: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).expect("json");
        for (group, cases) in &groups {
            for case in cases.as_array().expect("array of cases") {
                let expr = case["expr"].as_str().expect("expr");
                if SKIPPED.iter().any(|(f, e, _)| *f == name && *e == expr) {
                    skipped += 1;
                    continue;
                }
                let contexts = case.get("contexts").and_then(|c| c.as_object()).cloned().unwrap_or_default();
                let names: Vec<&str> = contexts.keys().map(String::as_str).collect();
                let outcome = Expression::parse_with_contexts(expr, &names)
                    .and_then(|e| e.evaluate(&contexts, JobStatus::Success));
                let ok = match (&outcome, case.get("result"), case.get("err")) {
                    (Ok(value), Some(result), _) => {
                        result["kind"].as_str() == Some(format!("{:?}", value.kind).as_str())
                            && json_equal(&value.value, &result["value"])
                    }
                    (Err(err), None, Some(expected)) => {
                        expected["kind"].as_str() == Some(err.kind().as_str())
                            && err.message().contains(expected["value"].as_str().unwrap_or_default())
                    }
                    _ => false,
                };
                if ok {
                    passed += 1;
                } else {
                    let expected = case.get("result").or_else(|| case.get("err")).cloned();
                    let got = match &outcome {
                        Ok(v) => format!("{:?} {}", v.kind, v.value),
                        Err(e) => format!("{} error: {}", e.kind(), e),
                    };
                    failures.push(format!("{name} [{group}] {expr:?}\n    expected {expected:?}\n    got      {got}"));
                }
            }
        }
    }
    println!(
        "github expression conformance: {passed} passed, {} failed, {skipped} skipped (of {})",
        failures.len(),
        passed + failures.len() + skipped
    );
    assert!(failures.is_empty(), "{} failing cases:\n{}", failures.len(), failures.join("\n"));
}
