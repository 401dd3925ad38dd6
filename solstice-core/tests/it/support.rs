//! Helpers shared by the tests.

use solstice_core::{JobEvent, JobEventKind, JobResult, StepCommand};

/// A step with a condition.
pub fn step_if(name: &str, script: &str, condition: &str) -> StepCommand {
    let mut step = StepCommand::run(name, script);
    step.condition = Some(condition.to_owned());
    step
}

/// All log lines of the events, in order.
pub fn log_lines(events: &[JobEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            JobEventKind::Log { line, .. } => Some(line.clone()),
            _ => None,
        })
        .collect()
}

/// Log lines of one step.
pub fn step_lines(events: &[JobEvent], index: usize) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            JobEventKind::Log { line, step: Some(i), .. } if *i == index => Some(line.clone()),
            _ => None,
        })
        .collect()
}

/// (index, outcome, conclusion) of every finished step.
pub fn step_results(events: &[JobEvent]) -> Vec<(usize, JobResult, JobResult)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            JobEventKind::StepFinished { index, outcome, conclusion, .. } => Some((*index, *outcome, *conclusion)),
            _ => None,
        })
        .collect()
}

/// Checks the numbering: one attempt, seq from 1 without gaps, JobFinished last.
pub fn assert_well_formed(events: &[JobEvent]) {
    assert!(!events.is_empty(), "no events");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "event {i} has seq {}", e.seq);
        assert_eq!(e.job_id, events[0].job_id);
    }
    assert!(matches!(events[0].kind, JobEventKind::Accepted { .. }), "first event: {:?}", events[0].kind);
    assert!(events.last().is_some_and(|e| e.is_final()), "last event is not JobFinished");
    assert_eq!(events.iter().filter(|e| e.is_final()).count(), 1);
}
