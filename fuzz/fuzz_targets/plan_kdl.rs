//! The KDL front end and planner must never panic, overflow the stack or hang on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use solstice_workflow::{PlanOptions, plan_kdl_workflow};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let options = PlanOptions::new().os_family("big-box", "illumos");
        let _ = plan_kdl_workflow(text, "fuzz.kdl", &options);
    }
});
