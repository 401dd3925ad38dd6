//! One task's reporter: `UpdateLog` then `UpdateTask` every report interval, and the
//! closing sequence (`UpdateLog(no_more)` until every row is acknowledged, then the final
//! `UpdateTask` until every output is) when the job ends.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use solstice_core::SourceMessage;
use solstice_core::support::{Backoff, error_chain};
use time::OffsetDateTime;
use tokio::time::Instant;

use super::{SourceInner, TaskEntry};
use crate::progress::Verdict;
use crate::{ConnectCode, ForgeError};

/// What the reporter does after a round.
enum Next {
    /// Wait for the next tick (or an early wake-up).
    Wait,
    /// More to send right away.
    Again,
    /// The server has everything.
    Done,
}

/// Reports one task until the server has all of it, the task is given up, or the
/// source is stopped.
pub(super) async fn run(inner: Arc<SourceInner>, entry: Arc<TaskEntry>) {
    let task_id = entry.progress().task_id();
    let span = tracing::info_span!("task", task_id, job_id = %entry.job_id);
    tracing::Instrument::instrument(report_task(inner, entry), span).await;
}

async fn report_task(inner: Arc<SourceInner>, entry: Arc<TaskEntry>) {
    let settings = inner.settings.clone();
    let mut backoff = Backoff::new(std::time::Duration::from_millis(100), std::time::Duration::from_secs(10));
    let mut refusals = 0u32;
    let mut last_state: Option<Instant> = None;
    let mut next = Next::Again;
    let abandoned = loop {
        if matches!(next, Next::Wait) {
            tokio::select! {
                () = tokio::time::sleep(settings.report_interval) => {}
                () = entry.wake.notified() => {}
                () = inner.hard_stop.cancelled() => break false,
            }
        }
        match round(&inner, &entry, &mut last_state).await {
            Ok(Next::Done) => break false,
            Ok(n) => {
                next = n;
                refusals = 0;
                backoff.reset();
            }
            Err(e) => {
                if e.is_unreachable() {
                    tracing::warn!(error = %error_chain(&e), "Forgejo unreachable; will resend");
                } else {
                    refusals += 1;
                    tracing::warn!(error = %error_chain(&e), refusals, "report refused");
                    if refusals >= settings.report_retries {
                        tracing::error!("giving up on reporting this task; stopping its job");
                        if !entry.progress().finished() {
                            inner.push_message(SourceMessage::Cancel(entry.job_id));
                        }
                        break true;
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                    () = inner.hard_stop.cancelled() => break false,
                }
                next = Next::Again;
            }
        }
    };
    tracing::debug!(abandoned, "reporter done");
    inner.remove(&entry, abandoned || !entry.progress().finished());
}

/// One report: logs first, then the state when it is due.
async fn round(inner: &SourceInner, entry: &TaskEntry, last_state: &mut Option<Instant>) -> Result<Next, ForgeError> {
    let settings = &inner.settings;
    let (request, already_closed) = {
        let progress = entry.progress();
        (progress.log_request(settings.rows_per_update), progress.log_closed())
    };
    let mut more_rows = false;
    if !already_closed && (!request.rows.is_empty() || request.no_more) {
        match inner.client.update_log(&request).await {
            Ok(response) => {
                let mut progress = entry.progress();
                if let Err(lost) = progress.log_acked(&request, response.ack_index) {
                    drop(progress);
                    entry.drained.notify_waiters();
                    return Err(ForgeError::Protocol { procedure: crate::Procedure::UpdateLog, detail: lost.to_string() });
                }
                more_rows = progress.pending_rows() > 0 && !progress.log_closed();
                drop(progress);
                entry.drained.notify_waiters();
            }
            Err(e) if e.code() == Some(ConnectCode::AlreadyExists) => {
                tracing::warn!("Forgejo archived this task's log; dropping unsent rows");
                entry.progress().log_archived();
                entry.drained.notify_waiters();
            }
            Err(e) => return Err(e),
        }
    }
    let (finished, log_closed) = {
        let progress = entry.progress();
        (progress.finished(), progress.log_closed())
    };
    if finished && !log_closed {
        if request.no_more && !more_rows {
            // Everything was sent with no_more and still not all acknowledged.
            return Err(ForgeError::Protocol {
                procedure: crate::Procedure::UpdateLog,
                detail: "the final log rows were not all acknowledged".into(),
            });
        }
        return Ok(Next::Again);
    }
    let state_due = finished || last_state.is_none_or(|t| t.elapsed() >= settings.report_interval);
    if state_due {
        let request = entry.progress().state_request();
        let response = inner.client.update_task(&request).await?;
        *last_state = Some(Instant::now());
        let mut progress = entry.progress();
        if let Verdict::Stop(result) = progress.state_acked(&request, &response)
            && !entry.cancel_requested.swap(true, Ordering::SeqCst)
        {
            let what = if result == crate::proto::runner::v1::Result::Cancelled { "cancelled" } else { "stopped" };
            progress.push_row(OffsetDateTime::now_utc(), &format!("The task was {what} on Forgejo; stopping the job."));
            drop(progress);
            tracing::info!("Forgejo {what} the task; cancelling its job");
            inner.push_message(SourceMessage::Cancel(entry.job_id));
            return Ok(Next::Again);
        }
        if progress.complete() {
            return Ok(Next::Done);
        }
        if finished {
            return Err(ForgeError::Protocol {
                procedure: crate::Procedure::UpdateTask,
                detail: "job outputs were not acknowledged".into(),
            });
        }
    }
    Ok(if more_rows { Next::Again } else { Next::Wait })
}

