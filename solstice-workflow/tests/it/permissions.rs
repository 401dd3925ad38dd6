//! `permissions:` is validated as GitHub's reader does (the `errors-invalid-permissions` case
//! of its workflow-reader data): `read-all`, `write-all`, or known scopes mapped to `read`,
//! `write` or `none` (<https://docs.github.com/en/actions/writing-workflows/choosing-what-your-workflow-does/controlling-permissions-for-github_token>).

use solstice_workflow::parse_workflow;

fn with_permissions(workflow_level: &str, job_level: &str) -> String {
    format!("on: push\npermissions: {workflow_level}\njobs:\n  build:\n    runs-on: linux\n    permissions: {job_level}\n    steps:\n      - run: make\n")
}

#[test]
fn valid_permissions_are_kept_as_written() {
    let workflow = parse_workflow(&with_permissions("read-all", "{contents: write, id-token: write, pull-requests: none}"), "ci.yml").expect("valid");
    assert_eq!(workflow.permissions, "read-all");
    assert_eq!(workflow.jobs[0].permissions["id-token"], "write");
}

#[test]
fn unknown_levels_scopes_and_shapes_are_errors_at_their_position() {
    let errors = parse_workflow(&with_permissions("{contents: invalid}", "{secrets: read}"), "ci.yml").expect_err("invalid");
    let found: Vec<_> = errors.errors().iter().map(|e| (e.line, e.column, e.message.as_str())).collect();
    assert_eq!(found, [(2, 25, "Unexpected value 'invalid'"), (6, 19, "Unexpected value 'secrets'")]);
    let errors = parse_workflow(&with_permissions("read", "write-all"), "ci.yml").expect_err("invalid");
    assert_eq!(errors.errors()[0].message, "Unexpected value 'read'");
}
