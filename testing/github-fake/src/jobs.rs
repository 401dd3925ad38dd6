//! The broker, the run service, the results service, blob storage and the classic
//! job-reporting routes.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::api::{Q, bearer, long_poll, runner, unauthorized, wrapped};
use crate::model::{Data, JobState};
use crate::{BlobStorage, Delivery, Shared};

pub(crate) fn broker_error(status: StatusCode, kind: &str, message: &str) -> Response {
    (status, Json(json!({"source": "actions-broker-listener", "errorKind": kind, "statusCode": status.as_u16(), "errorMessage": message})))
        .into_response()
}

fn run_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"source": "actions-run-service", "statusCode": status.as_u16(), "errorMessage": message}))).into_response()
}

fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

fn text(v: &Value, name: &str) -> String {
    field(v, name).and_then(Value::as_str).unwrap_or_default().to_owned()
}

/// The job a job token belongs to.
fn job_of(data: &Data, headers: &HeaderMap) -> Result<String, Response> {
    let token = bearer(headers).ok_or_else(unauthorized)?;
    data.job_by_token(&token).ok_or_else(unauthorized)
}

/// The job behind a plan route: its job token, or — as github-act-runner completes a job
/// left over from a crash "with the runner's own connection" — the OAuth token of the
/// runner the job is assigned to.
fn job_for_plan(s: &Shared, data: &Data, headers: &HeaderMap, plan: &str) -> Result<String, Response> {
    if let Ok(id) = job_of(data, headers) {
        return Ok(id);
    }
    if !s.config.plan_routes_take_runner_tokens {
        return Err(unauthorized());
    }
    let agent = runner(data, headers)?;
    data.jobs
        .values()
        .find(|j| j.plan_id == plan && j.state == JobState::Assigned(agent))
        .map(|j| j.id.clone())
        .ok_or_else(|| wrapped(StatusCode::NOT_FOUND, "TaskOrchestrationPlanNotFoundException", "plan not found"))
}

fn random_message_id() -> i64 {
    // Broker ids are random 32-bit numbers, often negative.
    let bytes = crate::crypto::random::<4>();
    i64::from(i32::from_le_bytes(bytes)).min(-1)
}

pub(crate) async fn broker_message(State(s): State<Shared>, headers: HeaderMap, Query(q): Q) -> Response {
    let session_id = q.get("sessionId").cloned().unwrap_or_default();
    long_poll(&s, &headers, |data, agent| {
        if data.touch_session(&session_id, agent, s.config.session_timeout).is_none() {
            return Some(broker_error(StatusCode::NOT_FOUND, "RunnerSessionInvalid", "the session is invalid"));
        }
        if data.faults.fail_polls > 0 {
            data.faults.fail_polls -= 1;
            return Some((StatusCode::BAD_GATEWAY, "upstream connection dropped").into_response());
        }
        let base = s.base();
        let busy = data.busy(agent);
        let mut reply = None;
        for id in data.job_order.clone() {
            let Some(job) = data.jobs.get(&id) else { continue };
            if job.spec.delivery != Delivery::Broker {
                continue;
            }
            let mine = matches!(job.state, JobState::Assigned(a) | JobState::Offered(a) if a == agent);
            if mine && job.cancel_requested && !job.cancel_delivered {
                reply = Some(("JobCancellation", json!({"jobId": job.id, "timeout": "00:05:00"}), id, true));
                break;
            }
            if job.state == JobState::Queued && !busy && data.matches(agent, job) {
                let body = json!({"id": job.id, "runner_request_id": job.runner_request_id,
                    "run_service_url": format!("{base}/run"), "billing_owner_id": "O_fake", "should_acknowledge": true});
                reply = Some(("RunnerJobRequest", body, id, false));
                break;
            }
        }
        let (kind, body, id, cancel) = reply?;
        if let Some(job) = data.jobs.get_mut(&id) {
            if cancel {
                job.cancel_delivered = true;
            } else {
                job.state = JobState::Offered(agent);
            }
        }
        let reply = json!({"messageId": random_message_id(), "messageType": kind, "body": body.to_string()});
        Some(Json(reply).into_response())
    })
    .await
}

pub(crate) async fn acknowledge(State(s): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let data = s.data.lock().await;
    if let Err(r) = runner(&data, &headers) {
        return r;
    }
    let id = text(&body, "runnerRequestId");
    if data.jobs.values().any(|j| j.runner_request_id == id && j.state != JobState::Completed) {
        Json(json!({})).into_response()
    } else {
        broker_error(StatusCode::NOT_FOUND, "AcknowledgeJobNotFound", "no such job")
    }
}

pub(crate) async fn acquire(State(s): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let mut data = s.data.lock().await;
    let agent = match runner(&data, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let id = text(&body, "jobMessageId");
    let base = s.base();
    let Some(job) = data.jobs.values_mut().find(|j| j.runner_request_id == id) else {
        return run_error(StatusCode::NOT_FOUND, "job not found");
    };
    match job.state {
        JobState::Queued | JobState::Offered(_) if job.state == JobState::Queued || job.state == JobState::Offered(agent) => {
            job.state = JobState::Assigned(agent);
            let message = job.message(&base, &s.feed_base(), &s.config);
            drop(data);
            s.notify.notify_waiters();
            Json(message).into_response()
        }
        _ => run_error(StatusCode::CONFLICT, "job already acquired"),
    }
}

pub(crate) async fn renew(State(s): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let mut data = s.data.lock().await;
    let id = match job_of(&data, &headers) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let lock = s.config.lock_duration;
    let Some(job) = data.jobs.get_mut(&id).filter(|j| j.state != JobState::Completed) else {
        return run_error(StatusCode::NOT_FOUND, "TaskOrchestrationJobNotFoundException");
    };
    if text(&body, "jobId") != job.id || text(&body, "planId") != job.plan_id {
        return run_error(StatusCode::BAD_REQUEST, "plan or job id mismatch");
    }
    job.renewals += 1;
    let until = time::OffsetDateTime::now_utc() + lock;
    Json(json!({"lockedUntil": until.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()})).into_response()
}

pub(crate) async fn complete(State(s): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let mut data = s.data.lock().await;
    let id = match job_of(&data, &headers) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let Some(job) = data.jobs.get_mut(&id) else { return run_error(StatusCode::NOT_FOUND, "job not found") };
    if job.state == JobState::Completed {
        return run_error(StatusCode::NOT_FOUND, "job already completed");
    }
    let agent = match job.state {
        JobState::Assigned(a) | JobState::Offered(a) => Some(a),
        _ => None,
    };
    job.result = Some(text(&body, "conclusion").to_ascii_lowercase());
    job.completion = Some(body);
    job.state = JobState::Completed;
    retire_ephemeral(&mut data, agent);
    drop(data);
    s.notify.notify_waiters();
    Json(json!({})).into_response()
}

/// GitHub deletes an ephemeral runner after its job.
fn retire_ephemeral(data: &mut Data, agent: Option<i64>) {
    if let Some(agent) = agent
        && data.agents.get(&agent).is_some_and(|a| a.ephemeral)
    {
        data.agents.remove(&agent);
        data.access_tokens.retain(|_, (a, _)| *a != agent);
        data.sessions.retain(|_, s| s.agent_id != agent);
    }
}

pub(crate) async fn twirp(State(s): State<Shared>, Path(method): Path<String>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let mut data = s.data.lock().await;
    let id = match job_of(&data, &headers) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let base = s.base();
    let storage = match s.config.blob_storage {
        BlobStorage::Azure => "BLOB_STORAGE_TYPE_AZURE",
        BlobStorage::Unspecified => "BLOB_STORAGE_TYPE_UNSPECIFIED",
    };
    let Some(job) = data.jobs.get_mut(&id) else { return unauthorized() };
    if text(&body, "workflow_job_run_backend_id") != job.id || text(&body, "workflow_run_backend_id") != job.plan_id {
        return (StatusCode::BAD_REQUEST, Json(json!({"code": "invalid_argument", "msg": "backend ids"}))).into_response();
    }
    let method = method.rsplit('/').next().unwrap_or("").to_owned();
    match method.as_str() {
        "WorkflowStepsUpdate" => {
            let order = field(&body, "change_order").and_then(Value::as_i64).unwrap_or(0);
            for step in field(&body, "steps").and_then(Value::as_array).into_iter().flatten() {
                let ext = text(step, "external_id");
                let stale = job.results_steps.get(&ext).is_some_and(|(o, _)| *o > order);
                if !stale {
                    job.results_steps.insert(ext, (order, step.clone()));
                }
            }
            Json(json!({"ok": true})).into_response()
        }
        "GetStepLogsSignedBlobURL" => {
            let step = text(&body, "step_backend_id");
            Json(json!({"logs_url": format!("{base}/blob/{}/step-{step}?sig=fake", job.id), "blob_storage_type": storage, "soft_size_limit": 1 << 30})).into_response()
        }
        "GetJobLogsSignedBlobURL" => {
            Json(json!({"logs_url": format!("{base}/blob/{}/job?sig=fake", job.id), "blob_storage_type": storage, "soft_size_limit": 1 << 30})).into_response()
        }
        "CreateStepLogsMetadata" => {
            let step = text(&body, "step_backend_id");
            job.step_log_lines.insert(step, field(&body, "line_count").and_then(Value::as_i64).unwrap_or(-1));
            Json(json!({"ok": true})).into_response()
        }
        "CreateJobLogsMetadata" => Json(json!({"ok": true})).into_response(),
        _ => (StatusCode::NOT_FOUND, Json(json!({"code": "bad_route", "msg": method}))).into_response(),
    }
}

pub(crate) async fn put_blob(
    State(s): State<Shared>,
    Path((job_id, name)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Q,
    body: Bytes,
) -> Response {
    if !q.contains_key("sig") {
        return StatusCode::FORBIDDEN.into_response();
    }
    if headers.contains_key(axum::http::header::AUTHORIZATION) {
        // Signed URLs take no Authorization header; Azure refuses one.
        return StatusCode::BAD_REQUEST.into_response();
    }
    let azure = s.config.blob_storage == BlobStorage::Azure;
    let kind = headers.get("x-ms-blob-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    let text = String::from_utf8_lossy(&body).into_owned();
    let mut data = s.data.lock().await;
    let Some(job) = data.jobs.get_mut(&job_id) else { return StatusCode::NOT_FOUND.into_response() };
    let key = name.strip_prefix("step-").unwrap_or(&name).to_owned();
    let append = q.get("comp").is_some_and(|c| c == "appendblock");
    if append {
        job.blobs.entry(key).or_default().push_str(&text);
    } else {
        if azure && kind != "BlockBlob" && kind != "AppendBlob" {
            return StatusCode::BAD_REQUEST.into_response();
        }
        if name == "job" {
            job.job_log = Some(text);
        } else {
            job.blobs.insert(key, text);
        }
    }
    StatusCode::CREATED.into_response()
}

type PlanPath = (String, String, String, String);

pub(crate) async fn records(State(s): State<Shared>, Path((_scope, _hub, plan, _tid)): Path<PlanPath>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let mut data = s.data.lock().await;
    let id = match job_for_plan(&s, &data, &headers, &plan) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let Some(job) = data.jobs.get_mut(&id).filter(|j| j.plan_id == plan) else {
        return wrapped(StatusCode::NOT_FOUND, "TaskOrchestrationPlanNotFoundException", "plan not found");
    };
    let mut out = Vec::new();
    for record in field(&body, "value").and_then(Value::as_array).into_iter().flatten() {
        let rid = text(record, "id");
        let stored = job.records.entry(rid).or_insert_with(|| json!({}));
        if let (Value::Object(stored), Value::Object(new)) = (stored, record) {
            for (k, v) in new {
                if !v.is_null() {
                    stored.insert(k.clone(), v.clone());
                }
            }
            out.push(Value::Object(stored.clone()));
        }
    }
    Json(json!({"count": out.len(), "value": out})).into_response()
}

type FeedPath = (String, String, String, String, String);

pub(crate) async fn feed(State(s): State<Shared>, Path((_scope, _hub, _plan, _tid, record)): Path<FeedPath>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let mut data = s.data.lock().await;
    let id = match job_of(&data, &headers) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let Some(job) = data.jobs.get_mut(&id) else { return unauthorized() };
    if record != job.id {
        return (StatusCode::BAD_REQUEST, "the feed path takes the job record id").into_response();
    }
    let step = text(&body, "stepId");
    let start = field(&body, "startLine").and_then(Value::as_i64).unwrap_or(1);
    let lines = job.feed.entry(step).or_default();
    for (i, line) in field(&body, "value").and_then(Value::as_array).into_iter().flatten().enumerate() {
        lines.insert(start + i as i64, line.as_str().unwrap_or_default().to_owned());
    }
    StatusCode::OK.into_response()
}

pub(crate) async fn create_log(State(s): State<Shared>, Path((_scope, _hub, plan)): Path<(String, String, String)>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let mut data = s.data.lock().await;
    let id = match job_for_plan(&s, &data, &headers, &plan) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let log_id = data.next();
    let Some(job) = data.jobs.get_mut(&id) else { return unauthorized() };
    let path = text(&body, "path");
    job.logs.insert(log_id, (path.clone(), String::new()));
    Json(json!({"id": log_id, "path": path, "lineCount": 0})).into_response()
}

pub(crate) async fn upload_log(
    State(s): State<Shared>,
    Path((_scope, _hub, plan, log_id)): Path<(String, String, String, i64)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut data = s.data.lock().await;
    let id = match job_for_plan(&s, &data, &headers, &plan) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let Some(job) = data.jobs.get_mut(&id) else { return unauthorized() };
    let Some(log) = job.logs.get_mut(&log_id) else { return StatusCode::NOT_FOUND.into_response() };
    log.1.push_str(&String::from_utf8_lossy(&body));
    let lines = log.1.lines().count();
    Json(json!({"id": log_id, "path": log.0, "lineCount": lines})).into_response()
}

pub(crate) async fn events(State(s): State<Shared>, Path((_scope, _hub, plan)): Path<(String, String, String)>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let mut data = s.data.lock().await;
    let id = match job_for_plan(&s, &data, &headers, &plan) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let Some(job) = data.jobs.get_mut(&id).filter(|j| j.plan_id == plan) else {
        return wrapped(StatusCode::NOT_FOUND, "TaskOrchestrationPlanNotFoundException", "plan not found");
    };
    if !text(&body, "name").eq_ignore_ascii_case("JobCompleted") {
        return (StatusCode::BAD_REQUEST, "unknown event").into_response();
    }
    if job.state == JobState::Completed {
        return Json(json!({})).into_response();
    }
    let agent = match job.state {
        JobState::Assigned(a) | JobState::Offered(a) => Some(a),
        _ => None,
    };
    job.result = Some(text(&body, "result").to_ascii_lowercase());
    job.events.push(body.clone());
    job.completion = Some(body);
    job.state = JobState::Completed;
    retire_ephemeral(&mut data, agent);
    drop(data);
    s.notify.notify_waiters();
    Json(json!({})).into_response()
}
