//! `on.workflow_dispatch` inputs and `on.schedule` crons are checked when the file is read,
//! at their position, as GitHub's schema (workflow-v1.0.json, `workflow-dispatch-input`
//! with types string, boolean, number, choice and environment) and its docs of
//! `on.schedule` (five fields; `*`, `,`, `-`, `/`; `JAN-DEC`, `SUN-SAT`) describe them.

use solstice_workflow::parse_workflow;

fn errors(on: &str) -> Vec<(usize, usize, String)> {
    let text = format!("on:\n{on}\njobs:\n  build:\n    runs-on: linux\n    steps:\n      - run: make\n");
    match parse_workflow(&text, "ci.yml") {
        Ok(_) => Vec::new(),
        Err(errors) => errors.errors().iter().map(|e| (e.line, e.column, e.message.clone())).collect(),
    }
}

#[test]
fn documented_dispatch_inputs_and_schedules_are_accepted() {
    let on = "  workflow_dispatch:\n    unknown-key: ignored, as GitHub's reader data says\n    inputs:\n      level:\n        type: choice\n        options: [info, debug]\n      dry:\n        type: boolean\n      where:\n        type: environment\n      plain:\n  schedule:\n    - cron: '30 5 * * 1,3'\n    - cron: '*/15 0-6 * JAN-MAR mon-fri'";
    assert_eq!(errors(on), Vec::new());
}

#[test]
fn a_dispatch_input_of_an_unknown_type_or_a_choice_without_options_is_an_error_at_its_position() {
    let on = "  workflow_dispatch:\n    inputs:\n      count:\n        type: integer\n      level:\n        type: choice\n      name:\n        typo: true";
    assert_eq!(
        errors(on),
        [
            (5, 15, "Unexpected value 'integer'".to_owned()),
            (7, 9, "Required property is missing: options".to_owned()),
            (9, 9, "Unexpected value 'typo'".to_owned()),
        ]
    );
}

#[test]
fn a_malformed_cron_is_an_error_that_says_why() {
    let on = "  schedule:\n    - cron: '60 5 * * *'\n    - cron: '0 5 * *'\n    - {}";
    assert_eq!(
        errors(on),
        [
            (3, 13, "Invalid cron expression '60 5 * * *': minute `60`: 60 is out of range 0-59".to_owned()),
            (
                4,
                13,
                "Invalid cron expression '0 5 * *': 5 fields expected (minute hour day-of-month month day-of-week), found 4"
                    .to_owned()
            ),
            (5, 7, "Required property is missing: cron".to_owned()),
        ]
    );
}
