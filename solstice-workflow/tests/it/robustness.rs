//! Broken input must never panic: random text through every front end (a stable-toolchain
//! companion to the cargo-fuzz targets in `fuzz/`).

use proptest::prelude::*;
use solstice_workflow::{JobStatus, PlanOptions, evaluate_condition, evaluate_expression, interpolate, plan_workflow};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn expressions_never_panic(text in "[a-z0-9 .*'()\\[\\],!=<>&|${}-]{0,60}") {
        let contexts = serde_json::json!({"github": {"ref": "x"}, "matrix": {"os": "omnios"}});
        let contexts = contexts.as_object().cloned().unwrap_or_default();
        let _ = evaluate_expression(&text, &contexts);
        let _ = evaluate_condition(&text, &contexts, JobStatus::Success);
        let _ = interpolate(&text, &contexts);
    }

    #[test]
    fn yaml_never_panics(text in "(on: push\njobs:\n  [a-z]{1,3}:\n)?[ a-z:\\-\\[\\]{}'\"#&*!|>\n${}.()]{0,120}") {
        let _ = plan_workflow(&text, "fuzz.yml", &PlanOptions::new());
    }
}
