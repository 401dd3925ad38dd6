//! Broken input must never panic: random text through every front end (a stable-toolchain
//! companion to the cargo-fuzz targets in `fuzz/`).

use proptest::prelude::*;
use solstice_workflow::{
    JobStatus, PlanOptions, evaluate_condition, evaluate_expression, interpolate, plan_kdl_workflow, plan_workflow,
};

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

    /// Arbitrary text, heavy in KDL's structural characters (blocks, quotes, raw-string
    /// hashes, comments, escapes), after an optional valid prefix.
    #[test]
    fn kdl_never_panics(text in "(job \"[a-z]{1,3}\" \\{\n  runs-on \"omnios\" \"linux\"\n)?[ a-z0-9=#\"{};/*\\\\\n()$.-]{0,160}") {
        let options = PlanOptions::new().os_family("omnios", "illumos");
        let _ = plan_kdl_workflow(&text, "fuzz.kdl", &options);
    }

    /// Valid-looking structure with random nesting depth and content.
    #[test]
    fn kdl_nesting_never_overflows(depth in 0usize..400, fill in "[ a\"#/*{}]{0,8}") {
        let text = format!("{}{fill}{}", "a {".repeat(depth), "}".repeat(depth));
        let _ = plan_kdl_workflow(&text, "fuzz.kdl", &PlanOptions::new());
        let stars = format!("/*{}*/ job \"a\" {{ }}", fill.repeat(depth));
        let _ = plan_kdl_workflow(&stars, "fuzz.kdl", &PlanOptions::new());
        let quoted = format!("a x\"{}\"\n", " b {".repeat(depth));
        let _ = plan_kdl_workflow(&quoted, "fuzz.kdl", &PlanOptions::new());
    }
}
