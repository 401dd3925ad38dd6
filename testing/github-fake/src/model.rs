//! The fake service's state.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use serde_json::{Value, json};

use crate::crypto::AgentKey;
use crate::{Delivery, FakeConfig, FakeJob};

#[derive(Debug, Clone)]
pub(crate) struct Agent {
    pub id: i64,
    pub name: String,
    pub labels: Vec<String>,
    pub key: AgentKey,
    pub ephemeral: bool,
    pub disable_update: bool,
    pub client_id: String,
    pub authorization_url: String,
    pub version: String,
    /// The last poll's `status` (`Online` / `Busy`).
    pub status: String,
    /// Registered through the runner-admin API (no agent properties, broker only).
    pub v2: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub agent_id: i64,
    pub key: [u8; 32],
    /// The last poll (or the creation); sessions not polled for the configured timeout
    /// expire.
    pub last_seen: Instant,
}

/// A message handed to a runner and not yet deleted.
#[derive(Debug, Clone)]
pub(crate) struct PoolMessage {
    pub id: i64,
    pub message_type: String,
    pub body: String,
    pub job: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobState {
    Queued,
    Offered(i64),
    Assigned(i64),
    Completed,
}

#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub spec: FakeJob,
    pub id: String,
    pub plan_id: String,
    pub timeline_id: String,
    pub scope: String,
    pub request_id: i64,
    pub runner_request_id: String,
    pub token: String,
    pub state: JobState,
    pub result: Option<String>,
    pub cancel_requested: bool,
    pub cancel_delivered: bool,
    pub renewals: u32,
    pub records: BTreeMap<String, Value>,
    pub feed: BTreeMap<String, BTreeMap<i64, String>>,
    pub logs: BTreeMap<i64, (String, String)>,
    pub results_steps: BTreeMap<String, (i64, Value)>,
    pub blobs: BTreeMap<String, String>,
    pub step_log_lines: BTreeMap<String, i64>,
    pub job_log: Option<String>,
    pub completion: Option<Value>,
    pub events: Vec<Value>,
    /// Messages received on the live console websocket.
    pub feed_messages: u32,
    /// The largest websocket frame payload seen.
    pub feed_max_frame: usize,
}

/// A request the fake received (for assertions on headers and casing).
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query string.
    pub query: String,
    /// The `Accept` header.
    pub accept: String,
    /// The scheme of the `Authorization` header (`Bearer`, `RemoteAuth`), if any.
    pub auth_scheme: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub fail_polls: u32,
    pub session_conflicts: u32,
    /// Live console handshakes still to refuse with 503.
    pub refuse_feed: u32,
    /// Live console handshakes seen (refused or not).
    pub feed_handshakes: u32,
}

#[derive(Debug, Default)]
pub(crate) struct Data {
    pub agents: BTreeMap<i64, Agent>,
    pub next_id: i64,
    pub tenant_tokens: HashSet<String>,
    pub access_tokens: HashMap<String, (i64, Instant)>,
    pub tokens_issued: u32,
    pub issued: Vec<String>,
    pub used_jti: HashSet<String>,
    pub sessions: HashMap<String, Session>,
    pub pool_messages: HashMap<i64, Vec<PoolMessage>>,
    pub jobs: BTreeMap<String, Job>,
    pub job_order: Vec<String>,
    pub requests: Vec<RequestRecord>,
    pub faults: Faults,
    /// Public SSH keys served at `/USER.keys`, by user name.
    pub user_keys: BTreeMap<String, Vec<String>>,
}

impl Data {
    pub fn next(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    /// Whether the agent holds an unfinished job (its one slot).
    pub fn busy(&self, agent: i64) -> bool {
        self.jobs.values().any(|j| matches!(j.state, JobState::Offered(a) | JobState::Assigned(a) if a == agent))
    }

    pub fn matches(&self, agent: i64, job: &Job) -> bool {
        let Some(agent) = self.agents.get(&agent) else { return false };
        job.spec.labels.iter().all(|l| agent.labels.iter().any(|a| a.eq_ignore_ascii_case(l)))
    }

    /// Drops sessions not polled for `timeout` (the service expires them).
    pub fn expire_sessions(&mut self, timeout: std::time::Duration) {
        self.sessions.retain(|_, s| s.last_seen.elapsed() < timeout);
    }

    /// The live session `id` of `agent`, marked as seen now.
    pub fn touch_session(&mut self, id: &str, agent: i64, timeout: std::time::Duration) -> Option<Session> {
        self.expire_sessions(timeout);
        let session = self.sessions.get_mut(id).filter(|s| s.agent_id == agent)?;
        session.last_seen = Instant::now();
        Some(session.clone())
    }

    pub fn job_by_token(&self, token: &str) -> Option<String> {
        self.jobs.values().find(|j| j.token == token).map(|j| j.id.clone())
    }
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl Job {
    pub fn new(spec: FakeJob, request_id: i64) -> Self {
        let plan_id = uuid();
        Self {
            spec,
            id: uuid(),
            timeline_id: plan_id.clone(),
            plan_id,
            scope: uuid(),
            request_id,
            runner_request_id: uuid(),
            token: format!("jt-{}", uuid()),
            state: JobState::Queued,
            result: None,
            cancel_requested: false,
            cancel_delivered: false,
            renewals: 0,
            records: BTreeMap::new(),
            feed: BTreeMap::new(),
            logs: BTreeMap::new(),
            results_steps: BTreeMap::new(),
            blobs: BTreeMap::new(),
            step_log_lines: BTreeMap::new(),
            job_log: None,
            completion: None,
            events: Vec::new(),
            feed_messages: 0,
            feed_max_frame: 0,
        }
    }

    /// The `AgentJobRequestMessage` for this job.
    pub fn message(&self, base: &str, feed_base: &str, config: &FakeConfig) -> Value {
        let v2 = self.spec.delivery == Delivery::Broker;
        let mut github = vec![
            json!({"k": "repository", "v": self.spec.repository}),
            json!({"k": "repository_owner", "v": self.spec.repository.split('/').next().unwrap_or("")}),
            json!({"k": "sha", "v": self.spec.sha}),
            json!({"k": "ref", "v": "refs/heads/main"}),
            json!({"k": "server_url", "v": base}),
            json!({"k": "run_id", "v": {"t": 0, "s": "4242"}}),
            json!({"k": "run_number", "v": 7}),
            json!({"k": "event_name", "v": "push"}),
            json!({"k": "event", "v": {"t": 2, "d": [{"k": "ref", "v": "refs/heads/main"}, {"k": "forced", "v": {"t": 3, "b": false}}]}}),
        ];
        for (k, v) in &self.spec.github {
            github.push(json!({"k": k, "v": v}));
        }
        let mut variables = serde_json::Map::new();
        variables.insert("system.github.token".into(), json!({"value": self.spec.github_token, "isSecret": true}));
        variables.insert("system.github.job".into(), json!({"value": self.spec.name}));
        if v2 {
            variables.insert("system.github.results_endpoint".into(), json!({"value": format!("{base}/results/")}));
        }
        for (k, v) in &self.spec.secrets {
            variables.insert(k.clone(), json!({"value": v, "isSecret": true}));
        }
        let endpoint_url = if v2 { format!("{base}/run/") } else { format!("{base}/tenant/") };
        let env: Vec<Value> = self.spec.env.iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect();
        let mut message = json!({
            "messageType": if v2 { "RunnerJobRequest" } else { "PipelineAgentJobRequest" },
            "plan": {"scopeIdentifier": self.scope, "planType": "actions", "planId": self.plan_id, "version": 12},
            "timeline": {"id": self.timeline_id, "changeId": 1},
            "jobId": self.id,
            "jobDisplayName": self.spec.name,
            "jobName": self.spec.name,
            "requestId": if v2 { 0 } else { self.request_id },
            "lockedUntil": "0001-01-01T00:00:00",
            "resources": {"endpoints": [{
                "name": "SystemVssConnection",
                "url": endpoint_url,
                "authorization": {"scheme": "OAuth", "parameters": {"AccessToken": self.token}},
                "data": {"ResultsServiceUrl": format!("{base}/results/"),
                         "FeedStreamUrl": format!("{feed_base}/feed/{}", self.id)},
                "isShared": false, "isReady": true,
            }], "repositories": [], "containers": []},
            "contextData": {"github": {"t": 2, "d": github}, "needs": {"t": 2}, "matrix": null, "strategy": {"t": 2}},
            "variables": variables,
            "mask": self.spec.masks.iter().map(|m| json!({"type": "regex", "value": m})).collect::<Vec<_>>(),
            "environmentVariables": if env.is_empty() { json!([]) } else { json!([{"type": 2, "map": env}]) },
            "defaults": [],
            "steps": self.spec.steps,
            "jobOutputs": self.spec.outputs.clone().unwrap_or(Value::Null),
            "jobContainer": self.spec.container.clone().unwrap_or(Value::Null),
            "fileTable": [".github/workflows/ci.yml"],
            "billingOwnerId": "O_fake",
        });
        if config.pascal_case_messages
            && let Value::Object(map) = &mut message
        {
            // The .NET services write PascalCase; readers must not care.
            for key in ["jobId", "plan", "steps"] {
                if let Some(v) = map.remove(key) {
                    let mut chars = key.chars();
                    let pascal = chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default();
                    map.insert(pascal, v);
                }
            }
        }
        message
    }
}
