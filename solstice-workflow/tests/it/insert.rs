//! GitHub's `${{ insert }}` directive in mappings (`env`, `with`, `matrix`, ...): GitHub's
//! reader splices the mapping under it into the enclosing mapping
//! (`StartMappingInsertion` in actions/runner's
//! src/Sdk/DTObjectTemplating/ObjectTemplating/TemplateUnraveler.cs), and refuses the
//! directive inside a longer string (the `errors-insert` case of its workflow-reader data).

use serde_json::json;
use solstice_workflow::{PlanOptions, parse_workflow, plan_workflow};

#[test]
fn literal_and_expression_inserts_are_spliced_where_they_stand() {
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/insert-directive.yml")).expect("fixture");
    let plan = plan_workflow(&source, "insert.yml", &PlanOptions::new()).expect("plans");
    assert_eq!(plan.jobs.len(), 2, "the inserted vector 'os' expands the matrix");
    let job = &plan.jobs[1];
    assert_eq!(job.matrix.as_ref().map(|m| json!(m)), Some(json!({"os": "freebsd", "version": 1})));
    assert_eq!(json!(job.env), json!({"FROM_LITERAL": "literal", "CC": "gcc", "LEVEL": "3", "KEPT": "yes"}));
    assert_eq!(job.steps[0].checkout.as_ref().map(|c| c.fetch_depth), Some(0));
    assert_eq!(job.steps[1].env["OS"], "freebsd");
}

#[test]
fn an_insert_from_a_context_given_to_the_planner_is_spliced() {
    let source = "on: push\njobs:\n  build:\n    runs-on: linux\n    env:\n      ${{ insert }}: ${{ vars }}\n    steps:\n      - run: make\n";
    let options = PlanOptions::new().context("vars", json!({"REGION": "eu"}));
    let plan = plan_workflow(source, "ci.yml", &options).expect("plans");
    assert_eq!(plan.jobs[0].env["REGION"], "eu");
}

#[test]
fn an_insert_known_only_at_run_time_is_read_but_cannot_be_planned() {
    // GitHub's own `insert` case: the keys come from a needed job's output.
    let source = "on: push\njobs:\n  a:\n    runs-on: linux\n    steps:\n      - run: x\n  b:\n    runs-on: linux\n    needs: a\n    env:\n      ${{ insert }}: ${{ fromJson(needs.a.outputs.env) }}\n    steps:\n      - run: x\n";
    parse_workflow(source, "ci.yml").expect("GitHub reads it");
    let errors = plan_workflow(source, "ci.yml", &PlanOptions::new()).expect_err("keys unknown");
    assert!(errors.to_string().contains("known only while the workflow runs"), "{errors}");
    let given = PlanOptions::new().context("needs", json!({"a": {"outputs": {"env": "{\"K\":\"v\"}"}}}));
    assert_eq!(plan_workflow(source, "ci.yml", &given).expect("plans").jobs[1].env["K"], "v");
}

#[test]
fn insert_inside_a_string_or_over_a_scalar_is_an_error() {
    let source = "on: push\njobs:\n  run:\n    runs-on: linux\n    env:\n      bad: \"This is a bad ${{ insert }}\"\n      ${{ insert }}: plain\n    steps:\n      - run: echo hi\n";
    let errors = parse_workflow(source, "ci.yml").expect_err("invalid");
    let found: Vec<_> = errors.errors().iter().map(|e| (e.line, e.column, e.message.as_str())).collect();
    assert_eq!(found[0].0, 6);
    assert!(found[0].2.starts_with("The directive 'insert' is not allowed in this context"), "{found:?}");
    assert_eq!((found[1].0, found[1].1, found[1].2), (7, 22, "Expected a mapping"));
}
