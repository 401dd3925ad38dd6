//! Each workflow key allows the contexts GitHub's workflow schema gives it (`"context"` of each
//! definition in workflow-v1.0.json, actions/languageservices workflow-parser/src/); any other
//! is GitHub's "Unrecognized named-value" error at the value, so that a secret cannot reach a
//! job's name, condition or concurrency group, which GitHub shows or evaluates unmasked.

use solstice_workflow::parse_workflow;

/// The first error reading `job` (a job body, indented four spaces) under a minimal workflow.
fn job_error(job: &str) -> Option<(usize, usize, String)> {
    let text = format!("on: push\njobs:\n  a:\n    runs-on: linux\n{job}");
    parse_workflow(&text, "ci.yml").err().map(|e| {
        let first = &e.errors()[0];
        (first.line, first.column, first.message.clone())
    })
}

#[test]
fn secrets_are_refused_where_github_refuses_them() {
    let steps = "    steps: [{run: echo}]\n";
    for (key, value) in [
        ("name", "${{ secrets.TOKEN }}"),
        ("if", "secrets.TOKEN == 'x'"),
        ("concurrency", "${{ secrets.TOKEN }}"),
        ("timeout-minutes", "${{ secrets.TOKEN }}"),
    ] {
        let error = job_error(&format!("    {key}: {value}\n{steps}"));
        let (line, _, message) = error.unwrap_or_else(|| panic!("{key}: secrets accepted"));
        assert_eq!(line, 5, "{key}");
        assert!(message.starts_with("Unrecognized named-value: 'secrets'"), "{key}: {message}");
    }
    // A step's `if` sees everything a step sees but secrets.
    let error = job_error("    steps:\n      - run: echo\n        if: secrets.TOKEN != ''\n");
    assert_eq!(error.map(|e| (e.0, e.2.starts_with("Unrecognized named-value: 'secrets'"))), Some((7, true)));
    let run_name = "run-name: ${{ secrets.TOKEN }}\non: push\njobs:\n  a:\n    runs-on: linux\n    steps: [{run: echo}]\n";
    let errors = parse_workflow(run_name, "ci.yml").expect_err("secrets in run-name");
    assert_eq!((errors.errors()[0].line, errors.errors()[0].column), (1, 11));
}

#[test]
fn contexts_are_accepted_where_github_allows_them() {
    let job = "    env:\n      T: ${{ secrets.TOKEN }}\n    name: ${{ matrix.os }} ${{ needs.x.result }}\n    if: needs.x.result == 'success' && github.ref == 'refs/heads/main'\n    steps:\n      - run: echo ${{ secrets.TOKEN }} ${{ steps.a.outputs.b }} ${{ runner.os }} ${{ env.T }}\n        if: steps.a.outcome == 'success' && env.T != ''\n        env:\n          U: ${{ secrets.TOKEN }}\n";
    assert_eq!(job_error(job), None);
    // Forgejo's and Gitea's names for `github` wherever `github` is allowed.
    assert_eq!(job_error("    if: forge.ref == gitea.ref\n    steps: [{run: echo}]\n"), None);
}

#[test]
fn a_job_key_cannot_use_what_only_steps_produce() {
    // `steps` and `runner` exist only once the job runs: not in its env or runs-on.
    let (line, _, message) = job_error("    env:\n      X: ${{ steps.a.outputs.b }}\n    steps: [{run: echo}]\n").expect("steps in job env");
    assert_eq!((line, message.starts_with("Unrecognized named-value: 'steps'")), (6, true), "{message}");
    let (_, _, message) = job_error("    strategy:\n      matrix:\n        os: ${{ fromJSON(matrix.x) }}\n    steps: [{run: echo}]\n").expect("matrix in strategy");
    assert!(message.starts_with("Unrecognized named-value: 'matrix'"), "{message}");
}
