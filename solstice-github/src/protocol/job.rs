//! The `AgentJobRequestMessage`: what a job is, as GitHub sends it.

use serde_json::{Map, Value};
use solstice_core::Secret;

use super::context;
use super::template::Token;
use crate::GithubError;
use crate::json::{bool_field, field, i64_field, str_field};

/// The `SystemVssConnection` endpoint: where job-scoped calls go, with the job token.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub url: String,
    pub token: Secret,
    pub results_url: Option<String>,
    /// The live console websocket (`data.FeedStreamUrl`).
    pub feed_url: Option<String>,
}

/// What a step refers to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reference {
    Script,
    Repository { name: String, git_ref: String, path: String, kind: String },
    Container { image: String },
    Other(String),
}

/// One entry of `steps[]`.
#[derive(Debug, Clone)]
pub(crate) struct StepMessage {
    pub id: String,
    pub name: String,
    pub context_name: Option<String>,
    pub display_name: Option<Token>,
    pub reference: Reference,
    pub inputs: Token,
    pub environment: Option<Token>,
    pub condition: Option<String>,
    pub continue_on_error: Option<Token>,
    pub timeout_minutes: Option<Token>,
}

/// A parsed job message.
#[derive(Debug, Clone)]
pub(crate) struct JobMessage {
    pub message_type: String,
    pub plan_id: String,
    pub plan_type: String,
    pub scope_identifier: String,
    pub timeline_id: String,
    pub job_id: String,
    pub job_name: String,
    pub job_display_name: String,
    pub request_id: i64,
    pub endpoint: Endpoint,
    pub contexts: Map<String, Value>,
    /// (name, value, is_secret)
    pub variables: Vec<(String, String, bool)>,
    /// (is_regex, value)
    pub masks: Vec<(bool, String)>,
    pub steps: Vec<StepMessage>,
    pub environment: Vec<Token>,
    pub defaults: Vec<Token>,
    pub job_outputs: Option<Token>,
    pub job_container: Option<Token>,
    pub billing_owner_id: Option<String>,
}

impl JobMessage {
    /// Parses a job message (any key casing).
    pub fn parse(value: &Value) -> Result<Self, GithubError> {
        let bad = |what: &str| GithubError::JobMessage(what.to_owned());
        let plan = field(value, "plan").ok_or_else(|| bad("no plan"))?;
        let timeline = field(value, "timeline");
        let endpoint = field(value, "resources")
            .and_then(|r| field(r, "endpoints"))
            .and_then(Value::as_array)
            .and_then(|eps| {
                eps.iter().find(|e| str_field(e, "name").is_some_and(|n| n.eq_ignore_ascii_case("SystemVssConnection")))
            })
            .ok_or_else(|| bad("no SystemVssConnection endpoint"))?;
        let token = field(endpoint, "authorization")
            .and_then(|a| field(a, "parameters"))
            .and_then(|p| str_field(p, "AccessToken"))
            .ok_or_else(|| bad("no job token"))?;
        let data = field(endpoint, "data");
        let variables: Vec<(String, String, bool)> = field(value, "variables")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(name, v)| {
                let (text, secret) = match v {
                    Value::Object(_) => (str_field(v, "value").unwrap_or_default(), bool_field(v, "isSecret").unwrap_or(false)),
                    Value::String(s) => (s.clone(), false),
                    other => (other.to_string(), false),
                };
                (name.clone(), text, secret)
            })
            .collect();
        let results_url = variables
            .iter()
            .find(|(n, _, _)| n.eq_ignore_ascii_case("system.github.results_endpoint"))
            .map(|(_, v, _)| v.clone())
            .filter(|v| !v.is_empty())
            .or_else(|| data.and_then(|d| str_field(d, "ResultsServiceUrl")).filter(|v| !v.is_empty()));
        let masks = field(value, "mask")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|m| {
                let kind = field(m, "type").and_then(|t| crate::json::enum_name(t, &["", "variable", "regex"]));
                let text = str_field(m, "value").filter(|v| !v.is_empty())?;
                Some((kind.as_deref() == Some("regex"), text))
            })
            .collect();
        let contexts = field(value, "contextData")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.to_ascii_lowercase(), context::decode(v)))
            .collect();
        let tokens = |name: &str| -> Vec<Token> {
            match field(value, name) {
                Some(Value::Array(items)) => items.iter().map(Token::parse).collect(),
                Some(Value::Null) | None => Vec::new(),
                Some(other) => vec![Token::parse(other)],
            }
        };
        let steps = field(value, "steps")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|s| {
                field(s, "type")
                    .and_then(|t| crate::json::enum_name(t, &["", "", "", "", "action", "backgroundStepControl"]))
                    .is_none_or(|t| t == "action")
            })
            .map(parse_step)
            .collect::<Result<Vec<_>, _>>()?;
        let optional_token = |name: &str| field(value, name).filter(|v| !v.is_null()).map(Token::parse);
        Ok(Self {
            message_type: str_field(value, "messageType").unwrap_or_default(),
            plan_id: str_field(plan, "planId").ok_or_else(|| bad("no plan id"))?,
            plan_type: str_field(plan, "planType").unwrap_or_else(|| "actions".to_owned()),
            scope_identifier: str_field(plan, "scopeIdentifier").unwrap_or_default(),
            timeline_id: timeline.and_then(|t| str_field(t, "id")).unwrap_or_default(),
            job_id: str_field(value, "jobId").ok_or_else(|| bad("no job id"))?,
            job_name: str_field(value, "jobName").unwrap_or_default(),
            job_display_name: str_field(value, "jobDisplayName").unwrap_or_default(),
            request_id: i64_field(value, "requestId").unwrap_or(0),
            endpoint: Endpoint {
                url: str_field(endpoint, "url").ok_or_else(|| bad("no endpoint URL"))?,
                token: Secret::new(token),
                results_url,
                feed_url: data.and_then(|d| str_field(d, "FeedStreamUrl")).filter(|v| !v.is_empty()),
            },
            contexts,
            variables,
            masks,
            steps,
            environment: tokens("environmentVariables"),
            defaults: tokens("defaults"),
            job_outputs: optional_token("jobOutputs"),
            job_container: optional_token("jobContainer"),
            billing_owner_id: str_field(value, "billingOwnerId"),
        })
    }

    /// Whether this job reports through the run and results services.
    pub fn is_v2(&self) -> bool {
        self.message_type.eq_ignore_ascii_case("RunnerJobRequest")
    }

    /// A variable's value (names are case-insensitive).
    pub fn variable(&self, name: &str) -> Option<&str> {
        self.variables.iter().find(|(n, _, _)| n.eq_ignore_ascii_case(name)).map(|(_, v, _)| v.as_str())
    }
}

fn parse_step(value: &Value) -> Result<StepMessage, GithubError> {
    let reference = field(value, "reference").cloned().unwrap_or(Value::Null);
    let kind = field(&reference, "type")
        .and_then(|t| crate::json::enum_name(t, &["", "repository", "containerRegistry", "script"]))
        .unwrap_or_default();
    let reference = match kind.as_str() {
        "script" => Reference::Script,
        "repository" => Reference::Repository {
            name: str_field(&reference, "name").unwrap_or_default(),
            git_ref: str_field(&reference, "ref").unwrap_or_default(),
            path: str_field(&reference, "path").unwrap_or_default(),
            kind: str_field(&reference, "repositoryType").unwrap_or_default(),
        },
        "containerregistry" => Reference::Container { image: str_field(&reference, "image").unwrap_or_default() },
        other => Reference::Other(other.to_owned()),
    };
    let token = |name: &str| field(value, name).filter(|v| !v.is_null()).map(Token::parse);
    Ok(StepMessage {
        id: str_field(value, "id").ok_or_else(|| GithubError::JobMessage("a step has no id".to_owned()))?,
        name: str_field(value, "name").unwrap_or_default(),
        context_name: str_field(value, "contextName").filter(|c| !c.is_empty()),
        display_name: token("displayNameToken").or_else(|| str_field(value, "displayName").map(Token::String)),
        reference,
        inputs: token("inputs").unwrap_or(Token::Null),
        environment: token("environment"),
        condition: str_field(value, "condition").filter(|c| !c.trim().is_empty()),
        continue_on_error: token("continueOnError"),
        timeout_minutes: token("timeoutInMinutes"),
    })
}
