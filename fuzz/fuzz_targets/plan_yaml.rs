//! The YAML front end and planner must never panic or hang on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use solstice_workflow::{PlanOptions, plan_workflow};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = plan_workflow(text, "fuzz.yml", &PlanOptions::new());
    }
});
