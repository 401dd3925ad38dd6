//! Registration, OAuth, pool sessions and messages, job requests.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::crypto::{AgentKey, encrypt_body, random};
use crate::model::{Agent, Data, JobState, PoolMessage, Session};
use crate::{Delivery, Shared};

pub(crate) type Q = Query<HashMap<String, String>>;

/// VSS `WrappedException`.
pub(crate) fn wrapped(status: StatusCode, type_key: &str, message: &str) -> Response {
    (status, Json(json!({"$id": "1", "innerException": null, "message": message, "typeName": format!("GitHub.DistributedTask.WebApi.{type_key}, GitHub.DistributedTask.WebApi"), "typeKey": type_key, "errorCode": 0, "eventId": 3000}))).into_response()
}

/// 401 with the challenge the official runner needs.
pub(crate) fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "").into_response()
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
}

/// The agent behind a runner access token.
pub(crate) fn runner(data: &Data, headers: &HeaderMap) -> Result<i64, Response> {
    let token = bearer(headers).ok_or_else(unauthorized)?;
    match data.access_tokens.get(&token) {
        Some((agent, expires)) if Instant::now() < *expires && data.agents.contains_key(agent) => Ok(*agent),
        _ => Err(unauthorized()),
    }
}

fn tenant_or_runner(data: &Data, headers: &HeaderMap) -> Result<(), Response> {
    let token = bearer(headers).ok_or_else(unauthorized)?;
    if data.tenant_tokens.contains(&token) || runner(data, headers).is_ok() { Ok(()) } else { Err(unauthorized()) }
}

fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

fn text(v: &Value, name: &str) -> String {
    field(v, name).and_then(Value::as_str).unwrap_or_default().to_owned()
}

pub(crate) async fn runner_registration(State(s): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    let Some(token) = auth.strip_prefix("RemoteAuth ") else { return unauthorized() };
    if token != s.config.registration_token && token != s.config.removal_token {
        return (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))).into_response();
    }
    if text(&body, "url").is_empty() {
        return (StatusCode::BAD_REQUEST, "no url").into_response();
    }
    let tenant = format!("tt-{}", uuid::Uuid::new_v4());
    s.data.lock().await.tenant_tokens.insert(tenant.clone());
    Json(json!({"url": format!("{}/tenant/", s.base()), "token_schema": "OAuthAccessToken", "token": tenant, "use_v2_flow": s.config.use_v2_flow})).into_response()
}

pub(crate) async fn connection_data(State(s): State<Shared>) -> Response {
    const TABLE: &[(&str, &str, &str)] = &[
        ("a8c47e17-4d56-4a56-92bb-de7ea7dc65be", "pools", "_apis/{area}/pools/{poolId}"),
        ("e298ef32-5878-4cab-993c-043836571f42", "agents", "_apis/{area}/pools/{poolId}/agents/{agentId}"),
        ("134e239e-2df3-4794-a6f6-24f1f19ec8dc", "sessions", "_apis/{area}/pools/{poolId}/sessions/{sessionId}"),
        ("c3a054f6-7a8a-49c0-944e-3a8e5d7adfd7", "messages", "_apis/{area}/pools/{poolId}/messages/{messageId}"),
        ("fc825784-c92a-4299-9221-998a02d1b54f", "jobrequests", "_apis/{area}/pools/{poolId}/jobrequests/{requestId}"),
        ("8893bc5b-35b2-4be7-83cb-99e683551db4", "records", "{scopeIdentifier}/_apis/{area}/hubs/{hubName}/plans/{planId}/timelines/{timelineId}/records"),
        ("858983e4-19bd-4c5e-864c-507b59b58b12", "feed", "{scopeIdentifier}/_apis/{area}/hubs/{hubName}/plans/{planId}/timelines/{timelineId}/records/{recordId}/feed"),
        ("46f5667d-263a-4684-91b1-dff7fdcf64e2", "logs", "{scopeIdentifier}/_apis/{area}/hubs/{hubName}/plans/{planId}/logs/{logId}"),
        ("557624af-b29e-4c20-8ab0-0399d2204f3f", "events", "{scopeIdentifier}/_apis/{area}/hubs/{hubName}/plans/{planId}/events"),
    ];
    let defs: Vec<Value> = TABLE
        .iter()
        .map(|(id, name, path)| json!({"identifier": id, "serviceType": "distributedtask", "displayName": name,
            "relativePath": path, "resourceVersion": 1, "minVersion": "1.0", "maxVersion": "12.0", "releasedVersion": "0.0"}))
        .collect();
    let _ = s;
    Json(json!({"instanceId": uuid::Uuid::new_v4(), "locationServiceData": {"serviceDefinitions": defs}})).into_response()
}

pub(crate) async fn pools(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let data = s.data.lock().await;
    if let Err(r) = tenant_or_runner(&data, &headers) {
        return r;
    }
    Json(json!({"count": 2, "value": [
        {"id": 2, "name": "GitHub Actions", "isHosted": true, "isInternal": false, "poolType": "automation"},
        {"id": 1, "name": "Default", "isHosted": false, "isInternal": true, "poolType": "automation"},
    ]}))
    .into_response()
}

fn agent_json(s: &Shared, a: &Agent) -> Value {
    json!({
        "id": a.id, "name": a.name, "version": a.version, "ephemeral": a.ephemeral, "disableUpdate": a.disable_update,
        "status": a.status, "poolId": 1,
        "labels": a.labels.iter().map(|l| json!({"id": 0, "name": l, "type": "user"})).collect::<Vec<_>>(),
        "authorization": {"authorizationUrl": a.authorization_url, "clientId": a.client_id,
                          "publicKey": {"exponent": a.key.exponent, "modulus": a.key.modulus}},
        "properties": {
            "RequireFipsCryptography": {"$type": "System.Boolean", "$value": s.config.require_fips},
            "ServerUrlV2": {"$type": "System.String", "$value": format!("{}/broker/", s.base())},
            "UseV2Flow": {"$type": "System.Boolean", "$value": false},
        },
    })
}

pub(crate) async fn list_agents(State(s): State<Shared>, headers: HeaderMap, Query(q): Q) -> Response {
    let data = s.data.lock().await;
    if let Err(r) = tenant_or_runner(&data, &headers) {
        return r;
    }
    let name = q.iter().find(|(k, _)| k.eq_ignore_ascii_case("agentName")).map(|(_, v)| v.clone());
    let found: Vec<Value> = data
        .agents
        .values()
        .filter(|a| name.as_ref().is_none_or(|n| a.name.eq_ignore_ascii_case(n)))
        .map(|a| agent_json(&s, a))
        .collect();
    Json(json!({"count": found.len(), "value": found})).into_response()
}

fn agent_from_body(s: &Shared, id: i64, body: &Value) -> Result<Agent, Response> {
    let auth = field(body, "authorization").and_then(|a| field(a, "publicKey"));
    let (Some(exponent), Some(modulus)) = (auth.map(|k| text(k, "exponent")), auth.map(|k| text(k, "modulus"))) else {
        return Err((StatusCode::BAD_REQUEST, "no public key").into_response());
    };
    let labels = field(body, "labels")
        .and_then(Value::as_array)
        .map(|ls| ls.iter().map(|l| text(l, "name")).filter(|l| !l.is_empty()).collect())
        .unwrap_or_default();
    let client_id = uuid::Uuid::new_v4().to_string();
    Ok(Agent {
        id,
        name: text(body, "name"),
        labels,
        key: AgentKey { exponent, modulus },
        ephemeral: field(body, "ephemeral").and_then(Value::as_bool).unwrap_or(false),
        disable_update: field(body, "disableUpdate").and_then(Value::as_bool).unwrap_or(false),
        authorization_url: format!("{}/token/{client_id}", s.base()),
        client_id,
        version: text(body, "version"),
        status: "Offline".into(),
        v2: false,
    })
}

pub(crate) async fn add_agent(State(s): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let mut data = s.data.lock().await;
    if let Err(r) = tenant_or_runner(&data, &headers) {
        return r;
    }
    let name = text(&body, "name");
    if data.agents.values().any(|a| a.name.eq_ignore_ascii_case(&name)) {
        return wrapped(StatusCode::CONFLICT, "TaskAgentExistsException", "A runner exists with the same name");
    }
    let id = data.next();
    match agent_from_body(&s, id, &body) {
        Ok(agent) => {
            let reply = agent_json(&s, &agent);
            data.agents.insert(id, agent);
            Json(reply).into_response()
        }
        Err(r) => r,
    }
}

pub(crate) async fn replace_agent(
    State(s): State<Shared>,
    Path((_pool, id)): Path<(i64, i64)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut data = s.data.lock().await;
    if let Err(r) = tenant_or_runner(&data, &headers) {
        return r;
    }
    if !data.agents.contains_key(&id) {
        return wrapped(StatusCode::NOT_FOUND, "TaskAgentNotFoundException", "agent not found");
    }
    match agent_from_body(&s, id, &body) {
        Ok(agent) => {
            let reply = agent_json(&s, &agent);
            // Old tokens and sessions die with the old key.
            data.access_tokens.retain(|_, (a, _)| *a != id);
            data.sessions.retain(|_, sess| sess.agent_id != id);
            data.agents.insert(id, agent);
            Json(reply).into_response()
        }
        Err(r) => r,
    }
}

pub(crate) async fn delete_agent(State(s): State<Shared>, Path((_pool, id)): Path<(i64, i64)>, headers: HeaderMap) -> Response {
    let mut data = s.data.lock().await;
    if let Err(r) = tenant_or_runner(&data, &headers) {
        return r;
    }
    match data.agents.remove(&id) {
        Some(_) => {
            data.sessions.retain(|_, sess| sess.agent_id != id);
            StatusCode::NO_CONTENT.into_response()
        }
        None => wrapped(StatusCode::NOT_FOUND, "TaskAgentNotFoundException", "agent not found"),
    }
}

pub(crate) async fn token(State(s): State<Shared>, Path(client): Path<String>, body: String) -> Response {
    let form: HashMap<String, String> = body
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode_form(k), decode_form(v)))
        .collect();
    let oauth_error = |error: &str, description: &str| {
        (StatusCode::BAD_REQUEST, Json(json!({"error": error, "error_description": description}))).into_response()
    };
    if form.get("grant_type").map(String::as_str) != Some("client_credentials")
        || form.get("client_assertion_type").map(String::as_str) != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    {
        return oauth_error("unsupported_grant_type", "client_credentials with a jwt-bearer assertion expected");
    }
    let mut data = s.data.lock().await;
    let Some(agent) = data.agents.values().find(|a| a.client_id == client).cloned() else {
        return oauth_error("invalid_client", "the runner registration was deleted");
    };
    let jwt = form.get("client_assertion").cloned().unwrap_or_default();
    // A runner-admin registration carries no `RequireFipsCryptography` property to tell
    // the runner which padding to use, so either is accepted there.
    let algorithms: &[jsonwebtoken::Algorithm] = if agent.v2 {
        &[jsonwebtoken::Algorithm::RS256, jsonwebtoken::Algorithm::PS256]
    } else if s.config.require_fips {
        &[jsonwebtoken::Algorithm::PS256]
    } else {
        &[jsonwebtoken::Algorithm::RS256]
    };
    let claims = match agent.key.verify(&jwt, &agent.authorization_url, &agent.client_id, algorithms) {
        Ok(c) => c,
        Err(why) => return oauth_error("invalid_client", &why),
    };
    let jti = claims.get("jti").and_then(Value::as_str).unwrap_or("").to_owned();
    if jti.is_empty() || !data.used_jti.insert(jti) {
        return oauth_error("invalid_client", "the assertion was replayed");
    }
    let token = format!("at-{}", uuid::Uuid::new_v4());
    let lifetime = s.config.token_lifetime;
    data.access_tokens.insert(token.clone(), (agent.id, Instant::now() + lifetime));
    data.tokens_issued += 1;
    data.issued.push(token.clone());
    Json(json!({"access_token": token, "token_type": "bearer", "expires_in": lifetime.as_secs().max(1), "scope": "/"})).into_response()
}

fn decode_form(text: &str) -> String {
    let bytes = text.replace('+', " ").into_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&String::from_utf8_lossy(&bytes[i + 1..i + 3]), 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a new session for `agent_id` must be refused with 409, as the service allows one
/// session per runner (pool and broker alike). Stale sessions expire first; a conflict a test
/// asked for (`session_conflicts`) is used up here.
fn session_conflict(data: &mut Data, agent_id: i64, timeout: Duration) -> bool {
    data.expire_sessions(timeout);
    if data.faults.session_conflicts > 0 || data.sessions.values().any(|sess| sess.agent_id == agent_id) {
        data.faults.session_conflicts = data.faults.session_conflicts.saturating_sub(1);
        return true;
    }
    false
}

pub(crate) async fn create_session(State(s): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let mut data = s.data.lock().await;
    let agent_id = match runner(&data, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    if session_conflict(&mut data, agent_id, s.config.session_timeout) {
        return wrapped(StatusCode::CONFLICT, "TaskAgentSessionConflictException", "A session for this runner already exists.");
    }
    let key = random::<32>();
    let Some(agent) = data.agents.get(&agent_id).cloned() else { return unauthorized() };
    let fips = s.config.fips_session_keys;
    let wrapped_key = match agent.key.wrap(&key, fips) {
        Ok(k) => k,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let id = uuid::Uuid::new_v4().to_string();
    data.sessions.insert(id.clone(), Session { agent_id, key, last_seen: Instant::now() });
    // PascalCase on purpose: the .NET services write it and readers must not care.
    Json(json!({"SessionId": id, "OwnerName": text(&body, "ownerName"), "Agent": agent_json(&s, &agent),
                "UseFipsEncryption": fips, "EncryptionKey": {"Encrypted": true, "Value": wrapped_key}}))
    .into_response()
}

pub(crate) async fn delete_session(State(s): State<Shared>, Path((_pool, id)): Path<(i64, String)>, headers: HeaderMap) -> Response {
    let mut data = s.data.lock().await;
    if let Err(r) = runner(&data, &headers) {
        return r;
    }
    data.sessions.remove(&id);
    drop(data);
    s.notify.notify_waiters();
    StatusCode::NO_CONTENT.into_response()
}

/// What a pool poll finds for an agent, if anything.
fn next_pool_message(s: &Shared, data: &mut Data, agent: i64) -> Option<PoolMessage> {
    if let Some(m) = data.pool_messages.get(&agent).and_then(|ms| ms.first()) {
        return Some(m.clone());
    }
    let base = s.base();
    let mut found = None;
    for id in data.job_order.clone() {
        let Some(job) = data.jobs.get(&id) else { continue };
        let mine = matches!(job.state, JobState::Assigned(a) | JobState::Offered(a) if a == agent);
        if mine && job.cancel_requested && !job.cancel_delivered {
            if job.spec.delivery == Delivery::Broker {
                found = Some(("BrokerMigration", json!({"brokerBaseUrl": format!("{base}/broker/")}).to_string(), None));
            } else {
                let body = json!({"jobId": job.id, "timeout": "00:05:00"}).to_string();
                if let Some(j) = data.jobs.get_mut(&id) {
                    j.cancel_delivered = true;
                }
                found = Some(("JobCancellation", body, None));
            }
            break;
        }
        if job.state == JobState::Queued && !data.busy(agent) && data.matches(agent, job) {
            if job.spec.delivery == Delivery::Broker {
                found = Some(("BrokerMigration", json!({"brokerBaseUrl": format!("{base}/broker/")}).to_string(), None));
            } else {
                let mut body = job.message(&base, &s.feed_base(), &s.config).to_string();
                if s.config.bom_in_messages {
                    body.insert(0, '\u{feff}');
                }
                if let Some(j) = data.jobs.get_mut(&id) {
                    j.state = JobState::Offered(agent);
                }
                found = Some(("PipelineAgentJobRequest", body, Some(id)));
            }
            break;
        }
    }
    let (kind, body, job) = found?;
    let id = data.next();
    let message = PoolMessage { id, message_type: kind.to_owned(), body, job };
    data.pool_messages.entry(agent).or_default().push(message.clone());
    Some(message)
}

/// A runner's long poll, as the pool and the broker both answer one: under the lock, now and
/// again after every change (`notify`), the runner's token is checked (401 once it is not
/// valid) and `answer` runs for its agent, until one gives a response or the poll window ends
/// in 204. The wakeup is armed before the lock is taken, so a change made between a check and
/// the wait is not missed.
pub(crate) async fn long_poll(
    s: &Shared,
    headers: &HeaderMap,
    mut answer: impl FnMut(&mut Data, i64) -> Option<Response>,
) -> Response {
    let deadline = tokio::time::Instant::now() + s.config.poll_window;
    loop {
        let notified = s.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut data = s.data.lock().await;
            let agent = match runner(&data, headers) {
                Ok(a) => a,
                Err(r) => return r,
            };
            if let Some(response) = answer(&mut data, agent) {
                return response;
            }
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return StatusCode::NO_CONTENT.into_response();
        }
    }
}

pub(crate) async fn get_message(State(s): State<Shared>, headers: HeaderMap, Query(q): Q) -> Response {
    let session_id = q.get("sessionId").cloned().unwrap_or_default();
    long_poll(&s, &headers, |data, agent| {
        let Some(session) = data.touch_session(&session_id, agent, s.config.session_timeout) else {
            return Some(wrapped(StatusCode::NOT_FOUND, "TaskAgentSessionExpiredException", "The session has expired."));
        };
        if let Some(status) = q.get("status")
            && let Some(a) = data.agents.get_mut(&agent)
        {
            a.status = status.clone();
        }
        if data.faults.fail_polls > 0 {
            data.faults.fail_polls -= 1;
            return Some((StatusCode::BAD_GATEWAY, "upstream connection dropped").into_response());
        }
        let message = next_pool_message(&s, data, agent)?;
        let (iv, body) = encrypt_body(&session.key, message.body.as_bytes());
        let reply = json!({"MessageId": message.id, "MessageType": message.message_type, "IV": iv, "Body": body});
        Some(Json(reply).into_response())
    })
    .await
}

pub(crate) async fn delete_message(State(s): State<Shared>, Path((_pool, id)): Path<(i64, i64)>, headers: HeaderMap) -> Response {
    let mut data = s.data.lock().await;
    let agent = match runner(&data, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut job = None;
    if let Some(ms) = data.pool_messages.get_mut(&agent)
        && let Some(pos) = ms.iter().position(|m| m.id == id)
    {
        job = ms.remove(pos).job;
    }
    if let Some(job) = job.and_then(|j| data.jobs.get_mut(&j))
        && job.state == JobState::Offered(agent)
    {
        job.state = JobState::Assigned(agent);
    }
    drop(data);
    s.notify.notify_waiters();
    StatusCode::NO_CONTENT.into_response()
}

pub(crate) async fn job_request(
    State(s): State<Shared>,
    Path((_pool, request_id)): Path<(i64, i64)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut data = s.data.lock().await;
    let agent = match runner(&data, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let lock = s.config.lock_duration;
    let Some(job) = data.jobs.values_mut().find(|j| j.request_id == request_id && j.state == JobState::Assigned(agent)) else {
        return wrapped(StatusCode::NOT_FOUND, "TaskAgentJobNotFoundException", "job request not found");
    };
    job.renewals += 1;
    if let Some(result) = field(&body, "result").and_then(Value::as_str) {
        job.result = Some(result.to_ascii_lowercase());
        job.state = JobState::Completed;
    }
    let until = time::OffsetDateTime::now_utc() + lock;
    Json(json!({"requestId": request_id, "lockedUntil": until.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()})).into_response()
}

/// A broker session (only for `UseV2Flow` runners); 409 while the runner has one.
pub(crate) async fn broker_session(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let mut data = s.data.lock().await;
    let agent_id = match runner(&data, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    if session_conflict(&mut data, agent_id, s.config.session_timeout) {
        return crate::jobs::broker_error(StatusCode::CONFLICT, "SessionConflict", "a session for this runner already exists");
    }
    let id = uuid::Uuid::new_v4().to_string();
    data.sessions.insert(id.clone(), Session { agent_id, key: random::<32>(), last_seen: Instant::now() });
    (StatusCode::CREATED, Json(json!({"sessionId": id}))).into_response()
}

/// `DELETE {broker}session`: the official client names no session; the runner's token
/// does (a `sessionId` query, as another client sends, narrows it).
pub(crate) async fn delete_broker_session(State(s): State<Shared>, headers: HeaderMap, Query(q): Q) -> Response {
    let mut data = s.data.lock().await;
    let agent_id = match runner(&data, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let only = q.get("sessionId").cloned();
    data.sessions.retain(|id, sess| sess.agent_id != agent_id || only.as_ref().is_some_and(|o| o != id));
    drop(data);
    s.notify.notify_waiters();
    StatusCode::NO_CONTENT.into_response()
}

/// `RemoteAuth <token>` with one of the accepted tokens, else 401/404 as the REST API.
fn remote_auth(headers: &HeaderMap, accepted: &[&str]) -> Result<(), Response> {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    let Some(token) = auth.strip_prefix("RemoteAuth ") else { return Err(unauthorized()) };
    if accepted.contains(&token) {
        Ok(())
    } else {
        Err((StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))).into_response())
    }
}

fn rest_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"message": message, "documentation_url": "https://docs.github.com/rest"}))).into_response()
}

/// `GET {scope}/actions/runner-groups` (runner-admin flow).
pub(crate) async fn admin_groups(State(s): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(r) = remote_auth(&headers, &[&s.config.registration_token, &s.config.removal_token]) {
        return r;
    }
    Json(json!({"total_count": 2, "runner_groups": [
        {"id": 2, "name": "GitHub Actions", "default": false, "is_hosted": true},
        {"id": 1, "name": "Default", "default": true, "is_hosted": false},
    ]}))
    .into_response()
}

fn admin_runner_json(a: &Agent) -> Value {
    json!({"id": a.id, "name": a.name, "os": "linux", "status": if a.status == "Offline" { "offline" } else { "online" },
           "busy": a.status == "Busy", "ephemeral": a.ephemeral,
           "labels": a.labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>()})
}

/// `GET {scope}/actions/runners?name=` (runner-admin flow).
pub(crate) async fn admin_runners(State(s): State<Shared>, headers: HeaderMap, Query(q): Q) -> Response {
    if let Err(r) = remote_auth(&headers, &[&s.config.registration_token, &s.config.removal_token]) {
        return r;
    }
    let data = s.data.lock().await;
    let name = q.get("name");
    let found: Vec<Value> =
        data.agents.values().filter(|a| name.is_none_or(|n| a.name.eq_ignore_ascii_case(n))).map(admin_runner_json).collect();
    Json(json!({"total_count": found.len(), "runners": found})).into_response()
}

/// The `<Modulus>`/`<Exponent>` of .NET's `RSAKeyValue` XML.
fn xml_element(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(xml[start..end].trim().to_owned())
}

/// `POST /actions/runners/register` (runner-admin flow).
pub(crate) async fn admin_register(State(s): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if let Err(r) = remote_auth(&headers, &[&s.config.registration_token]) {
        return r;
    }
    let public_key = text(&body, "public_key");
    let (Some(modulus), Some(exponent)) = (xml_element(&public_key, "Modulus"), xml_element(&public_key, "Exponent")) else {
        return rest_error(StatusCode::UNPROCESSABLE_ENTITY, "public_key must be an RSAKeyValue");
    };
    let name = text(&body, "name");
    if name.is_empty() || field(&body, "group_id").and_then(Value::as_i64) != Some(1) {
        return rest_error(StatusCode::UNPROCESSABLE_ENTITY, "name and a known group_id are required");
    }
    let mut data = s.data.lock().await;
    let existing = data.agents.values().find(|a| a.name.eq_ignore_ascii_case(&name)).map(|a| a.id);
    let replace = field(&body, "replace").and_then(Value::as_bool) == Some(true);
    let id = match existing {
        Some(id) if replace && field(&body, "runner_id").and_then(Value::as_i64) == Some(id) => {
            data.access_tokens.retain(|_, (a, _)| *a != id);
            data.sessions.retain(|_, sess| sess.agent_id != id);
            id
        }
        Some(_) => return rest_error(StatusCode::CONFLICT, "Already exists - A runner with the same name already exists"),
        None => data.next(),
    };
    let client_id = uuid::Uuid::new_v4().to_string();
    let agent = Agent {
        id,
        name,
        labels: field(&body, "labels")
            .and_then(Value::as_array)
            .map(|ls| ls.iter().map(|l| text(l, "name")).filter(|l| !l.is_empty()).collect())
            .unwrap_or_default(),
        key: AgentKey { exponent, modulus },
        ephemeral: field(&body, "ephemeral").and_then(Value::as_bool).unwrap_or(false),
        disable_update: field(&body, "updates_disabled").and_then(Value::as_bool).unwrap_or(false),
        authorization_url: format!("{}/token/{client_id}", s.base()),
        client_id: client_id.clone(),
        version: text(&body, "version"),
        status: "Offline".into(),
        v2: true,
    };
    let mut reply = admin_runner_json(&agent);
    reply["authorization"] = json!({"authorization_url": agent.authorization_url, "server_url": format!("{}/broker/", s.base()),
                                    "client_id": client_id});
    data.agents.insert(id, agent);
    (StatusCode::CREATED, Json(reply)).into_response()
}

async fn admin_delete(s: Shared, headers: HeaderMap, id: i64) -> Response {
    if let Err(r) = remote_auth(&headers, &[&s.config.removal_token]) {
        return r;
    }
    let mut data = s.data.lock().await;
    if data.agents.remove(&id).is_none() {
        return rest_error(StatusCode::NOT_FOUND, "Not Found");
    }
    data.sessions.retain(|_, sess| sess.agent_id != id);
    data.access_tokens.retain(|_, (a, _)| *a != id);
    StatusCode::NO_CONTENT.into_response()
}

/// `DELETE /repos/{o}/{r}/actions/runners/{id}` (runner-admin removal).
pub(crate) async fn admin_delete_repo(State(s): State<Shared>, Path((_o, _r, id)): Path<(String, String, i64)>, headers: HeaderMap) -> Response {
    admin_delete(s, headers, id).await
}

/// `DELETE /orgs/{org}/actions/runners/{id}` (runner-admin removal).
pub(crate) async fn admin_delete_org(State(s): State<Shared>, Path((_org, id)): Path<(String, i64)>, headers: HeaderMap) -> Response {
    admin_delete(s, headers, id).await
}

/// `GET /USER.keys`: the public SSH keys a test registered for the user, one per line,
/// as github.com serves them (plain text; 200 with an empty body for a user without
/// keys, 404 for an unknown user).
pub(crate) async fn user_keys(State(s): State<Shared>, Path(file): Path<String>) -> Response {
    let Some(user) = file.strip_suffix(".keys") else { return (StatusCode::NOT_FOUND, "Not Found").into_response() };
    match s.data.lock().await.user_keys.get(user) {
        Some(keys) => {
            let body: String = keys.iter().map(|k| format!("{k}\n")).collect();
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
        }
        None => (StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}
