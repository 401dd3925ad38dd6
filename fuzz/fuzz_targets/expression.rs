//! The expression lexer, parser, evaluator and template splitter must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use solstice_workflow::{JobStatus, evaluate_condition, evaluate_expression, interpolate};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let contexts = serde_json::json!({
            "github": {"ref": "refs/heads/main", "event": {"labels": [{"name": "bug"}]}},
            "matrix": {"os": "omnios", "n": 3}
        });
        let contexts = contexts.as_object().cloned().unwrap_or_default();
        let _ = evaluate_expression(text, &contexts);
        let _ = evaluate_condition(text, &contexts, JobStatus::Failure);
        let _ = interpolate(text, &contexts);
    }
});
