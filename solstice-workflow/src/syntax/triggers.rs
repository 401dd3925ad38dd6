//! Checks of `on.workflow_dispatch` and `on.schedule`, the triggers whose shape a user
//! gets wrong and only learns about when GitHub refuses the file or never runs it.
//!
//! Both follow GitHub's workflow schema (workflow-v1.0.json: `workflow-dispatch-input`,
//! `cron-mapping`) and the docs of `on.schedule`
//! (<https://docs.github.com/en/actions/writing-workflows/workflow-syntax-for-github-actions#onschedule>).
//! Unknown keys directly under `workflow_dispatch` are ignored, as GitHub's reader data
//! says (`on-workflow_dispatch-unknown-keys-ignored`); what can be wrong inside an input
//! or a cron string is reported at its position.

use super::Reader;
use super::yaml::{Node, Value};

/// The input types of `workflow_dispatch` (`workflow-dispatch-input` in GitHub's schema).
const DISPATCH_TYPES: &[&str] = &["string", "boolean", "number", "choice", "environment"];

/// Checks each `on.workflow_dispatch.inputs.<id>`: its keys, its `type`, and that a
/// `choice` has `options` (GitHub's docs: "`options` … required for `choice`").
pub(super) fn check_workflow_dispatch(r: &mut Reader<'_>, on: &Node) {
    let Some(inputs) = on.get("workflow_dispatch").and_then(|d| d.get("inputs")) else { return };
    if matches!(inputs.value, Value::Null) {
        return;
    }
    for (_, input) in r.mapping(inputs).to_vec() {
        if matches!(input.value, Value::Null) {
            continue; // an input with nothing declared is a string input
        }
        let pairs = r.mapping(&input);
        r.check_keys(pairs, &["description", "type", "required", "default", "options"]);
        let kind = input.get("type").and_then(Node::scalar_text);
        if let (Some(t), Some(kind)) = (input.get("type"), &kind)
            && !DISPATCH_TYPES.contains(&kind.as_str())
        {
            r.diag.syntax(t.pos, format!("Unexpected value '{kind}'"));
        }
        if kind.as_deref() == Some("choice") && input.get("options").is_none() && input.as_map().is_some() {
            r.diag.syntax(input.pos, "Required property is missing: options");
        }
    }
}

/// Checks each `on.schedule[*].cron` as a five-field cron expression.
pub(super) fn check_schedule(r: &mut Reader<'_>, on: &Node) {
    let Some(schedule) = on.get("schedule") else { return };
    let Value::Seq(entries) = &schedule.value else {
        if !matches!(schedule.value, Value::Null) {
            r.diag.syntax(schedule.pos, "A sequence was expected");
        }
        return;
    };
    for entry in entries {
        let Some(cron) = entry.get("cron") else {
            if entry.as_map().is_some() {
                r.diag.syntax(entry.pos, "Required property is missing: cron");
            }
            continue;
        };
        let text = cron.scalar_text().unwrap_or_default();
        if let Err(reason) = check_cron(&text) {
            r.diag.syntax(cron.pos, format!("Invalid cron expression '{text}': {reason}"));
        }
    }
}

/// The fields of a cron expression: name, lowest and highest value, and the names allowed
/// in place of numbers (GitHub's docs: `JAN-DEC`, `SUN-SAT`).
const FIELDS: [(&str, u32, u32, &[&str]); 5] = [
    ("minute", 0, 59, &[]),
    ("hour", 0, 23, &[]),
    ("day of month", 1, 31, &[]),
    ("month", 1, 12, &["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]),
    // 7 is Sunday too in POSIX-style crons; accepted so as not to refuse a schedule that runs.
    ("day of week", 0, 7, &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]),
];

/// Checks a five-field cron expression with the operators GitHub documents (`*`, `,`,
/// `-`, `/`); returns why it is not one.
pub(crate) fn check_cron(expression: &str) -> Result<(), String> {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    if fields.len() != FIELDS.len() {
        return Err(format!("5 fields expected (minute hour day-of-month month day-of-week), found {}", fields.len()));
    }
    for (field, (name, low, high, names)) in fields.iter().zip(FIELDS) {
        for item in field.split(',') {
            check_item(item, low, high, names).map_err(|why| format!("{name} `{field}`: {why}"))?;
        }
    }
    Ok(())
}

fn check_item(item: &str, low: u32, high: u32, names: &[&str]) -> Result<(), String> {
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => (range, Some(step)),
        None => (item, None),
    };
    if let Some(step) = step {
        match step.parse::<u32>() {
            Ok(n) if n >= 1 && n <= high => {}
            _ => return Err(format!("the step `{step}` is not a number from 1 to {high}")),
        }
    }
    if range == "*" {
        return Ok(());
    }
    let value = |text: &str| -> Result<u32, String> {
        let n = match text.parse::<u32>() {
            Ok(n) => n,
            Err(_) => names
                .iter()
                .position(|name| name.eq_ignore_ascii_case(text))
                // Names count from the field's lowest value (JAN is 1, SUN is 0).
                .map(|i| low + u32::try_from(i).unwrap_or(u32::MAX))
                .ok_or_else(|| format!("`{text}` is not a value"))?,
        };
        if n < low || n > high { Err(format!("{n} is out of range {low}-{high}")) } else { Ok(n) }
    };
    match range.split_once('-') {
        Some((from, to)) => {
            let (from, to) = (value(from)?, value(to)?);
            if from > to {
                return Err(format!("the range {from}-{to} runs backwards"));
            }
        }
        None => {
            value(range)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_cron;

    // The examples of GitHub's docs for `on.schedule` and the operators they list.
    #[test]
    fn documented_expressions_are_valid() {
        for ok in ["30 5 * * 1,3", "30 5 * * 2,4", "*/15 * * * *", "0 0 1 JAN,jul *", "0 12 * * MON-FRI", "5 4 * * 7", "0-30/10 1-5 1 1-12 0"] {
            assert_eq!(check_cron(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn malformed_expressions_say_what_is_wrong() {
        assert_eq!(check_cron("* * * *"), Err("5 fields expected (minute hour day-of-month month day-of-week), found 4".into()));
        assert_eq!(check_cron("60 * * * *"), Err("minute `60`: 60 is out of range 0-59".into()));
        assert_eq!(check_cron("* * 0 * *"), Err("day of month `0`: 0 is out of range 1-31".into()));
        assert_eq!(check_cron("* * * FOO *"), Err("month `FOO`: `FOO` is not a value".into()));
        assert_eq!(check_cron("*/0 * * * *"), Err("minute `*/0`: the step `0` is not a number from 1 to 59".into()));
        assert_eq!(check_cron("* 5-1 * * *"), Err("hour `5-1`: the range 5-1 runs backwards".into()));
    }
}
