//! Hostile workflow files (issue 16, item 15): huge, wide, deep or long-chained files are read
//! in bounded time and memory, or refused with GitHub's message. These tests check outcomes;
//! the timings, and that they grow linearly, are in `benches/hostile.rs`.
//!
//! GitHub's limits come from actions/runner's `ParseOptions` (src/Sdk/DTPipelines/Pipelines/
//! ObjectTemplating/ParseOptions.cs: `MaxFileSize` 1 MiB, `MaxDepth` 50) and its messages from
//! `YamlTemplateLoader.LoadFile` and `TemplateMemory` (the errors-max-* cases of GitHub's
//! workflow-reader conformance data).

use solstice_workflow::{PlanOptions, WorkflowErrorKind, parse_workflow, plan_kdl_workflow, plan_workflow};

/// GitHub's `MaxFileSize`, in characters.
const MAX_FILE_SIZE: usize = 1024 * 1024;

/// A key for `i` that YAML reads as a plain string: a letter, then three base-36 digits.
fn key(i: usize) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let letter = char::from(b'a' + u8::try_from(i / (36 * 36 * 36)).expect("fewer than 26 * 36^3 keys"));
    let d = |n: usize| char::from(DIGITS[n % 36]);
    format!("{letter}{}{}{}", d(i / (36 * 36)), d(i / 36), d(i))
}

/// A workflow whose `env:` has `n` keys, one per line.
fn env_workflow(n: usize) -> String {
    let mut text = String::from("on: push\nenv:\n");
    for i in 0..n {
        text.push_str("  ");
        text.push_str(&key(i));
        text.push_str(": v\n");
    }
    text.push_str("jobs:\n  a:\n    runs-on: linux\n    steps:\n      - run: echo\n");
    text
}

#[test]
fn a_one_mebibyte_workflow_of_100k_env_keys_is_refused_for_its_memory() {
    // 100,000 keys fit in 1 MiB of YAML, but not in GitHub's 10 MiB for the tree read from it
    // (110 bytes per `key: v` pair by GitHub's reckoning): refused where the limit is crossed.
    let text = env_workflow(100_000);
    assert!(text.len() > 1_000_000 && text.len() <= MAX_FILE_SIZE, "{} bytes", text.len());
    let errors = plan_workflow(&text, "wide.yml", &PlanOptions::new()).expect_err("over the memory limit");
    let error = &errors.errors()[0];
    assert_eq!((error.kind, error.message.as_str()), (WorkflowErrorKind::Limit, "Maximum object size exceeded"));
    assert!(error.line > 90_000 && error.line < 100_000, "{error}");
    // 80,000 keys are within every limit, and all of them reach the plan.
    let plan = plan_workflow(&env_workflow(80_000), "wide.yml", &PlanOptions::new()).expect("within GitHub's limits");
    assert_eq!(plan.jobs[0].env.len(), 80_000);
    assert_eq!(plan.jobs[0].env.get(&key(79_999)).and_then(|v| v.as_str()), Some("v"));
}

#[test]
fn a_file_over_one_mebibyte_is_refused_with_githubs_message() {
    let mut text = String::from("on: push\njobs:\n  a:\n    runs-on: linux\n    steps:\n      - run: echo\n");
    let padding = MAX_FILE_SIZE + 1 - text.len();
    text.push('#');
    text.push_str(&"x".repeat(padding - 1));
    assert_eq!(text.len(), MAX_FILE_SIZE + 1);
    let errors = plan_workflow(&text, "big.yml", &PlanOptions::new()).expect_err("over the limit");
    let error = &errors.errors()[0];
    assert_eq!(errors.errors().len(), 1);
    assert_eq!(error.kind, WorkflowErrorKind::Limit);
    assert_eq!(error.to_string(), "big.yml: The maximum file size of 1048576 characters has been exceeded");
    // One character fewer is read.
    text.pop();
    plan_workflow(&text, "big.yml", &PlanOptions::new()).expect("at the limit");
}

#[test]
fn the_kdl_dialect_has_the_same_file_size_limit() {
    // One line of many nodes, the shape that was slowest to read.
    let mut text = String::from("on \"push\"; job \"a\" { runs-on \"linux\"; steps { run \"echo\"; }; }; ");
    while text.len() <= MAX_FILE_SIZE {
        text.push_str("env A=\"v\"; ");
    }
    let errors = plan_kdl_workflow(&text, "big.kdl", &PlanOptions::new()).expect_err("over the limit");
    assert_eq!(errors.errors()[0].kind, WorkflowErrorKind::Limit);
    assert_eq!(errors.errors()[0].message, "The maximum file size of 1048576 characters has been exceeded");
}

#[test]
fn a_single_line_kdl_file_reports_columns_in_characters() {
    // 2,000 nodes on one line, then an unknown one after non-ASCII text: its column counts
    // characters, not bytes.
    let mut text = String::from("on \"push\"; env E=\"ééé\"; ");
    for _ in 0..2_000 {
        text.push_str("env A=\"v\"; ");
    }
    let column = text.chars().count() + 1;
    text.push_str("bogus 1; job \"a\" { runs-on \"linux\"; steps { run \"echo\"; }; }");
    let errors = plan_kdl_workflow(&text, "line.kdl", &PlanOptions::new()).expect_err("unknown node");
    let error = &errors.errors()[0];
    assert_eq!((error.line, error.column), (1, column), "{error}");
}

#[test]
fn nesting_deeper_than_fifty_is_refused() {
    // The document's mapping is the first level; `on:` (kept as written) nests the others.
    let nested = |depth: usize| {
        let mut text = String::from("on: ");
        text.push_str(&"{a: ".repeat(depth - 1));
        text.push('1');
        text.push_str(&"}".repeat(depth - 1));
        text.push_str("\njobs:\n  a:\n    runs-on: linux\n    steps: [{run: echo}]\n");
        text
    };
    parse_workflow(&nested(50), "deep.yml").expect("50 levels");
    let errors = parse_workflow(&nested(51), "deep.yml").expect_err("51 levels");
    assert_eq!(errors.errors()[0].kind, WorkflowErrorKind::Limit);
    assert_eq!(errors.errors()[0].message, "Maximum object depth exceeded");
}

#[test]
fn an_alias_counts_toward_the_nesting_of_where_it_is_used() {
    // 30 levels under an anchor, used 25 levels deep: 55 levels once expanded.
    let deep = format!("{}1{}", "{a: ".repeat(30), "}".repeat(30));
    let mut text = format!("x: &deep {deep}\n");
    text.push_str(&format!("y: {}*deep{}\n", "{a: ".repeat(24), "}".repeat(24)));
    let errors = parse_workflow(&text, "alias.yml").expect_err("too deep once expanded");
    assert!(errors.errors().iter().any(|e| e.message == "Maximum object depth exceeded"), "{errors}");
}

#[test]
fn a_long_chain_of_needs_is_checked_without_recursion() {
    // Each job needs the one before: the cycle check used to recurse once per job and
    // overflowed a test thread's stack long before GitHub's file-size limit.
    let mut text = String::from("on: push\njobs:\n  j0: {runs-on: l, steps: [{run: e}]}\n");
    for i in 1..15_000 {
        text.push_str(&format!("  j{i}: {{needs: j{}, runs-on: l, steps: [{{run: e}}]}}\n", i - 1));
    }
    let workflow = parse_workflow(&text, "chain.yml").expect("a chain is no cycle");
    assert_eq!(workflow.jobs.len(), 15_000);
    // Closing the chain into a cycle is reported, at most ten edges of it (GitHub's
    // `MaxErrors`).
    let cyclic = text.replacen("  j0: {", "  start: {runs-on: l, steps: [{run: e}]}\n  j0: {needs: j14999, ", 1);
    let errors = parse_workflow(&cyclic, "chain.yml").expect_err("a cycle");
    assert!(errors.errors().iter().all(|e| e.message.contains("creates a cycle")), "{errors}");
    assert_eq!(errors.errors().len(), 10);
}

#[test]
fn keys_differing_only_in_case_are_duplicates() {
    // GitHub's reader keeps a mapping's keys in a set with `StringComparer.OrdinalIgnoreCase`
    // (`TemplateReader.HandleMappingWithAllLooseProperties`, actions/runner src/Sdk/
    // DTObjectTemplating/ObjectTemplating/TemplateReader.cs).
    let text = "on: push\nenv:\n  Path: a\n  PATH: b\njobs:\n  a:\n    runs-on: linux\n    steps: [{run: echo}]\n";
    let errors = parse_workflow(text, "case.yml").expect_err("duplicate key");
    let error = &errors.errors()[0];
    assert_eq!((error.line, error.column, error.message.as_str()), (4, 3, "'PATH' is already defined"));
}
