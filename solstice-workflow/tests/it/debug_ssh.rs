//! The debug-SSH opt-in: an env variable in YAML (which GitHub's own workflow validation
//! accepts), `debug-ssh #true` in KDL, and never on by default.

use solstice_workflow::{DEBUG_SSH_ENV, PlanOptions, plan_kdl_workflow, plan_workflow};

fn yaml_flags(yaml: &str) -> Vec<(String, bool)> {
    let plan = plan_workflow(yaml, "ci.yml", &PlanOptions::new()).expect("plans");
    plan.jobs.iter().map(|j| (j.name.clone(), j.debug_ssh)).collect()
}

#[test]
fn yaml_opts_in_with_the_env_variable_at_workflow_or_job_level() {
    assert_eq!(DEBUG_SSH_ENV, "SOLSTICE_DEBUG_SSH");
    let yaml = "on: push\njobs:\n  plain:\n    runs-on: tiny-linux\n    steps:\n      - run: 'true'\n  on:\n    runs-on: tiny-linux\n    env:\n      SOLSTICE_DEBUG_SSH: true\n    steps:\n      - run: 'true'\n  quoted:\n    runs-on: tiny-linux\n    env:\n      SOLSTICE_DEBUG_SSH: 'TRUE'\n    steps:\n      - run: 'true'\n  off:\n    runs-on: tiny-linux\n    env:\n      SOLSTICE_DEBUG_SSH: 'false'\n    steps:\n      - run: 'true'\n  runtime:\n    runs-on: tiny-linux\n    env:\n      SOLSTICE_DEBUG_SSH: ${{ github.event.inputs.debug }}\n    steps:\n      - run: 'true'\n";
    let flags = yaml_flags(yaml);
    let expected: Vec<(String, bool)> =
        [("plain", false), ("on", true), ("quoted", true), ("off", false), ("runtime", false)]
            .into_iter()
            .map(|(n, f)| (n.to_owned(), f))
            .collect();
    assert_eq!(flags, expected);

    // Workflow level, overridden by one job; a matrix value resolves at planning time.
    let yaml = "on: push\nenv:\n  SOLSTICE_DEBUG_SSH: 1\njobs:\n  a:\n    runs-on: tiny-linux\n    steps:\n      - run: 'true'\n  b:\n    runs-on: tiny-linux\n    env:\n      SOLSTICE_DEBUG_SSH: 0\n    steps:\n      - run: 'true'\n  m:\n    runs-on: tiny-linux\n    strategy:\n      matrix:\n        debug: [true, false]\n    env:\n      SOLSTICE_DEBUG_SSH: ${{ matrix.debug }}\n    steps:\n      - run: 'true'\n";
    let flags = yaml_flags(yaml);
    assert_eq!(flags.iter().map(|(_, f)| *f).collect::<Vec<_>>(), [true, false, true, false], "{flags:?}");
}

#[test]
fn kdl_opts_in_with_a_debug_ssh_node() {
    let kdl = "on \"push\"\njob \"a\" {\n    runs-on \"tiny-linux\"\n    debug-ssh #true\n    steps {\n        run \"make\"\n    }\n}\njob \"b\" {\n    runs-on \"tiny-linux\"\n    steps {\n        run \"make\"\n    }\n}\n";
    let plan = plan_kdl_workflow(kdl, "workflow.kdl", &PlanOptions::new()).expect("plans");
    let flags: Vec<bool> = plan.jobs.iter().map(|j| j.debug_ssh).collect();
    assert_eq!(flags, [true, false]);
    assert_eq!(plan.jobs[0].env.get(DEBUG_SSH_ENV).and_then(|v| v.as_str()), Some("true"));

    // Workflow level, switched off again by one job.
    let kdl = "on \"push\"\ndebug-ssh #true\njob \"a\" {\n    runs-on \"tiny-linux\"\n    steps {\n        run \"make\"\n    }\n}\njob \"b\" {\n    runs-on \"tiny-linux\"\n    debug-ssh #false\n    steps {\n        run \"make\"\n    }\n}\n";
    let plan = plan_kdl_workflow(kdl, "workflow.kdl", &PlanOptions::new()).expect("plans");
    assert_eq!(plan.jobs.iter().map(|j| j.debug_ssh).collect::<Vec<_>>(), [true, false]);

    let bad = "on \"push\"\njob \"a\" {\n    runs-on \"tiny-linux\"\n    debug-ssh \"yes\"\n    steps {\n        run \"make\"\n    }\n}\n";
    let errors = plan_kdl_workflow(bad, "workflow.kdl", &PlanOptions::new()).expect_err("a string is refused").to_string();
    assert!(errors.contains("workflow.kdl (Line: 4, Col: 15): 'debug-ssh' must be #true or #false"), "{errors}");
}

#[test]
fn the_opt_in_does_not_show_in_plans_without_it() {
    let plan = plan_workflow("on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: 'true'\n", "ci.yml", &PlanOptions::new())
        .expect("plans");
    let json = serde_json::to_string(&plan).expect("json");
    assert!(!json.contains("debug_ssh"), "{json}");
}
