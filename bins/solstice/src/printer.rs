//! Shows a job's events on the terminal: step headers, output, timing, a summary.

use std::io::Write;
use std::time::Instant;

use solstice_core::{JobEvent, JobEventKind, JobResult, LogStream};

/// Prints the events of the jobs `solstice run` runs.
#[derive(Debug)]
pub struct Printer {
    step_names: Vec<String>,
    step_started: Option<Instant>,
    job_started: Instant,
}

fn mark(result: JobResult) -> &'static str {
    match result {
        JobResult::Success => "✓",
        JobResult::Failure => "✗",
        JobResult::Cancelled => "⊘",
        JobResult::Skipped => "○",
    }
}

impl Printer {
    pub fn new(step_names: Vec<String>) -> Self {
        Self { step_names, step_started: None, job_started: Instant::now() }
    }

    pub fn print(&mut self, event: &JobEvent) {
        let mut out = std::io::stdout().lock();
        // A closed stdout (`solstice run ... | head`) must not abort the job.
        let _ = self.write(&mut out, event);
        let _ = out.flush();
    }

    fn write(&mut self, out: &mut impl Write, event: &JobEvent) -> std::io::Result<()> {
        match &event.kind {
            JobEventKind::Accepted { .. } => {
                self.job_started = Instant::now();
                Ok(())
            }
            JobEventKind::StepStarted { index, name } => {
                self.step_started = Some(Instant::now());
                writeln!(out, "▶ {name}")?;
                let _ = index;
                Ok(())
            }
            JobEventKind::Log { step: None, line, .. } => writeln!(out, "  · {line}"),
            JobEventKind::Log { step: Some(_), stream: LogStream::System, line } => writeln!(out, "  · {line}"),
            JobEventKind::Log { step: Some(_), line, .. } => writeln!(out, "  │ {line}"),
            JobEventKind::StepFinished { index, conclusion, outcome, .. } => {
                let name = self.step_names.get(*index).map(String::as_str).unwrap_or("step");
                let took = self.step_started.take().map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0);
                let note = if outcome != conclusion { format!(" ({outcome}, continue-on-error)") } else { String::new() };
                writeln!(out, "{} {name}: {conclusion}{note} [{took:.1} s]", mark(*conclusion))
            }
            JobEventKind::JobFinished { result } => {
                writeln!(out, "{} job {result} in {:.1} s", mark(*result), self.job_started.elapsed().as_secs_f64())
            }
            _ => Ok(()),
        }
    }
}
