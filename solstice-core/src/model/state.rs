use serde::{Deserialize, Serialize};

use super::JobResult;

/// Where a job is in its life. Changed only through [`JobState::transition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted from a source and waiting in the queue.
    Queued,
    /// Claimed by an orchestrator, which is preparing its machine.
    Provisioning,
    /// Steps are running.
    Running,
    /// Ended with a result. Terminal.
    Finished(JobResult),
}

/// A state change the job life cycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a job cannot go from {from} to {to}")]
pub struct InvalidTransition {
    /// The state the job was in.
    pub from: JobState,
    /// The state that was asked for.
    pub to: JobState,
}

impl JobState {
    /// Moves to `to` if the life cycle allows it.
    ///
    /// Allowed: queued → provisioning → running → finished, any non-final state →
    /// finished (a cancelled or failed provisioning ends early), and provisioning or
    /// running → provisioning again (a job redelivered after its orchestrator died).
    ///
    /// # Errors
    /// [`InvalidTransition`] for every other pair, in particular anything leaving
    /// `Finished`.
    pub fn transition(self, to: JobState) -> Result<JobState, InvalidTransition> {
        use JobState::*;
        let allowed = matches!(
            (self, to),
            (Queued, Provisioning)
                | (Provisioning, Running)
                | (Provisioning, Provisioning)
                | (Running, Provisioning)
                | (Queued | Provisioning | Running, Finished(_))
        );
        if allowed {
            Ok(to)
        } else {
            Err(InvalidTransition { from: self, to })
        }
    }

    /// The name stored in the database: `queued`, `provisioning`, `running` or `finished`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Provisioning => "provisioning",
            Self::Running => "running",
            Self::Finished(_) => "finished",
        }
    }

    /// Whether the job has ended.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Finished(_))
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Finished(result) => write!(f, "finished({result})"),
            other => f.write_str(other.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pair_follows_the_life_cycle() {
        use JobState::*;
        let all = [
            Queued,
            Provisioning,
            Running,
            Finished(JobResult::Success),
            Finished(JobResult::Failure),
            Finished(JobResult::Cancelled),
            Finished(JobResult::Skipped),
        ];
        for from in all {
            for to in all {
                // The life cycle spelled out by name, independent of the implementation.
                let pair = format!("{}->{}", from.name(), to.name());
                let expected = [
                    "queued->provisioning",
                    "provisioning->running",
                    "provisioning->provisioning",
                    "running->provisioning",
                    "queued->finished",
                    "provisioning->finished",
                    "running->finished",
                ]
                .contains(&pair.as_str());
                assert_eq!(
                    from.transition(to).is_ok(),
                    expected,
                    "{from} -> {to} should be allowed: {expected}"
                );
            }
        }
    }
}
