//! Sessions and message polling: the pool (classic) and the broker.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};
use solstice_core::Secret;

use crate::http::{Call, RunnerAuth};
use crate::json::{bool_field, field, i64_field, join_url, str_field};
use crate::protocol::location::{Locations, ids};
use crate::store::RunnerSettings;
use crate::{GithubError, RUNNER_VERSION};

/// Client-side limit of a long poll; the service answers within ~50 s.
const POLL_TIMEOUT: Duration = Duration::from_secs(90);

/// A live session.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub id: String,
    /// The AES key for pool message bodies (base64).
    pub key: Option<Secret>,
    /// Whether the session lives on the broker (v2 flow).
    pub on_broker: bool,
}

/// A message, with where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    /// The pool message id to delete, for pool messages.
    pub pool_id: Option<i64>,
    pub message_type: String,
    /// The decrypted body as JSON (`Null` when empty).
    pub body: Value,
    /// The broker URL this came from, for broker messages.
    pub broker: Option<String>,
}

/// Timing of session creation retries.
#[derive(Debug, Clone)]
pub(crate) struct SessionTiming {
    pub conflict_retry: Duration,
    pub conflict_limit: Duration,
}

/// Talks to the pool and the broker for one runner.
#[derive(Debug)]
pub(crate) struct Listener {
    pub auth: Arc<RunnerAuth>,
    pub settings: RunnerSettings,
    locations: tokio::sync::OnceCell<Locations>,
    timing: SessionTiming,
}

impl Listener {
    pub fn new(auth: Arc<RunnerAuth>, settings: RunnerSettings, timing: SessionTiming) -> Self {
        Self { auth, settings, locations: tokio::sync::OnceCell::new(), timing }
    }

    pub async fn locations(&self) -> Result<&Locations, GithubError> {
        self.locations
            .get_or_try_init(|| Locations::fetch(self.auth.http(), &self.settings.server_url, &crate::http::Auth::None))
            .await
    }

    fn pool(&self) -> String {
        self.settings.pool_id.to_string()
    }

    fn session_body(&self) -> Value {
        json!({
            "sessionId": "00000000-0000-0000-0000-000000000000",
            "ownerName": format!("solstice (PID: {})", std::process::id()),
            "agent": {"id": self.settings.agent_id, "name": self.settings.agent_name, "version": RUNNER_VERSION,
                      "osDescription": format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
                      "ephemeral": self.settings.ephemeral, "status": 0},
            "useFipsEncryption": false,
        })
    }

    /// Creates a session, retrying while an old one is still registered (409).
    pub async fn create_session(&self, key: &crate::RunnerKey) -> Result<Session, GithubError> {
        let started = tokio::time::Instant::now();
        loop {
            match self.try_create_session(key).await {
                Err(e) if (e.status() == Some(409) || e.mentions("SessionConflict"))
                    && started.elapsed() < self.timing.conflict_limit =>
                {
                    tracing::warn!("a session for this runner exists already; retrying");
                    tokio::time::sleep(self.timing.conflict_retry).await;
                }
                other => return other,
            }
        }
    }

    async fn try_create_session(&self, key: &crate::RunnerKey) -> Result<Session, GithubError> {
        let broker = self.settings.use_v2_flow.then(|| self.settings.server_url_v2.clone()).flatten();
        let call = match &broker {
            Some(broker) => Call::new(Method::POST, join_url(broker, "session"), "broker").json(self.session_body()),
            None => {
                let url = self.locations().await?.url(ids::SESSIONS, &[("poolId", &self.pool())]);
                Call::new(Method::POST, url, "tenant").api("5.1-preview.1").json(self.session_body())
            }
        };
        let reply = self
            .auth
            .send(&call)
            .await?
            .ok_or(GithubError::Protocol { service: "tenant", what: "an empty session".to_owned() })?;
        let id = str_field(&reply, "sessionId")
            .filter(|s| !s.is_empty())
            .ok_or(GithubError::Protocol { service: "tenant", what: "no session id".to_owned() })?;
        let mut session_key = None;
        if let Some(enc) = field(&reply, "encryptionKey").filter(|v| v.is_object()) {
            let value = str_field(enc, "value").unwrap_or_default();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(value.trim())
                .map_err(|_| GithubError::Crypto("read the session key"))?;
            if !bytes.is_empty() {
                session_key = Some(if bool_field(enc, "encrypted").unwrap_or(true) {
                    let fips = bool_field(&reply, "useFipsEncryption").unwrap_or(false);
                    key.decrypt_session_key(&bytes, fips)?
                } else {
                    Secret::new(base64::engine::general_purpose::STANDARD.encode(bytes))
                });
            }
        }
        tracing::info!(on_broker = broker.is_some(), "session created");
        Ok(Session { id, key: session_key, on_broker: broker.is_some() })
    }

    /// Deletes a session (errors are only logged: the service expires it anyway).
    pub async fn delete_session(&self, session: &Session) {
        let call = if session.on_broker {
            let Some(broker) = self.settings.server_url_v2.clone() else { return };
            Call::new(Method::DELETE, join_url(&broker, "session"), "broker")
        } else {
            let Ok(locations) = self.locations().await else { return };
            let url = locations.url(ids::SESSIONS, &[("poolId", &self.pool()), ("sessionId", &session.id)]);
            Call::new(Method::DELETE, url, "tenant").api("5.1-preview.1")
        };
        match self.auth.send(&call.timeout(Duration::from_secs(30))).await {
            Ok(_) => tracing::info!("session deleted"),
            Err(e) => tracing::warn!(error = %e, "could not delete the session"),
        }
    }

    fn poll_query(&self, call: Call, session: &Session, busy: bool) -> Call {
        call.query("sessionId", session.id.clone())
            .query("status", if busy { "Busy" } else { "Online" })
            .query("runnerVersion", RUNNER_VERSION)
            .query("os", "Linux")
            .query("architecture", "X64")
            .query("disableUpdate", "true")
            .timeout(POLL_TIMEOUT)
    }

    /// One long poll. A `BrokerMigration` from the pool is deleted and followed to the
    /// broker with the same session.
    pub async fn poll(&self, session: &Session, busy: bool, last: Option<i64>) -> Result<Option<Message>, GithubError> {
        if session.on_broker {
            let broker = self.settings.server_url_v2.clone().unwrap_or_default();
            return self.poll_broker(&broker, session, busy).await;
        }
        let url = self.locations().await?.url(ids::MESSAGES, &[("poolId", &self.pool())]);
        let mut call = self.poll_query(Call::new(Method::GET, url, "tenant").api("6.0-preview.1"), session, busy);
        if let Some(last) = last {
            call = call.query("lastMessageId", last.to_string());
        }
        let Some(reply) = self.auth.send(&call).await? else { return Ok(None) };
        let message = self.read_message(&reply, session, None)?;
        if message.message_type.eq_ignore_ascii_case("BrokerMigration") {
            if let Some(id) = message.pool_id {
                self.delete_message(session, id).await;
            }
            let broker = str_field(&message.body, "brokerBaseUrl")
                .filter(|b| !b.is_empty())
                .ok_or(GithubError::Protocol { service: "tenant", what: "a broker migration without a URL".to_owned() })?;
            return self.poll_broker(&broker, session, busy).await;
        }
        Ok(Some(message))
    }

    async fn poll_broker(&self, broker: &str, session: &Session, busy: bool) -> Result<Option<Message>, GithubError> {
        let call = self.poll_query(Call::new(Method::GET, join_url(broker, "message"), "broker"), session, busy);
        let Some(reply) = self.auth.send(&call).await? else { return Ok(None) };
        let mut message = self.read_message(&reply, session, Some(broker.to_owned()))?;
        message.pool_id = None;
        Ok(Some(message))
    }

    fn read_message(&self, reply: &Value, session: &Session, broker: Option<String>) -> Result<Message, GithubError> {
        let message_type = str_field(reply, "messageType").unwrap_or_default();
        let body_text = str_field(reply, "body").unwrap_or_default();
        let iv = str_field(reply, "iv").unwrap_or_default();
        let text = match (&session.key, iv.is_empty()) {
            (Some(key), false) => crate::crypto::decrypt_message_body(key, &iv, &body_text)?,
            _ => body_text,
        };
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(text.trim_start_matches('\u{feff}'))
                .map_err(|source| GithubError::Decode { service: "tenant", source })?
        };
        Ok(Message { pool_id: i64_field(reply, "messageId"), message_type, body, broker })
    }

    /// Deletes a pool message (best effort).
    pub async fn delete_message(&self, session: &Session, id: i64) {
        let Ok(locations) = self.locations().await else { return };
        let url = locations.url(ids::MESSAGES, &[("poolId", &self.pool()), ("messageId", &id.to_string())]);
        let call = Call::new(Method::DELETE, url, "tenant")
            .api("5.1-preview.1")
            .query("sessionId", session.id.clone())
            .timeout(Duration::from_secs(30));
        if let Err(e) = self.auth.send(&call).await {
            tracing::warn!(message_id = id, error = %e, "could not delete a message");
        }
    }

    /// Acknowledges a broker job request (best effort, 5 s).
    pub async fn acknowledge(&self, broker: &str, session: &Session, runner_request_id: &str, busy: bool) {
        let call = self
            .poll_query(Call::new(Method::POST, join_url(broker, "acknowledge"), "broker"), session, busy)
            .timeout(Duration::from_secs(5))
            .json(json!({"runnerRequestId": runner_request_id}));
        if let Err(e) = self.auth.send(&call).await {
            tracing::warn!(error = %e, "could not acknowledge a job request");
        }
    }

    /// Fetches a broker job's message from the run service.
    pub async fn acquire(&self, run_service_url: &str, runner_request_id: &str, billing_owner_id: &str) -> Result<Value, GithubError> {
        let call = Call::new(Method::POST, join_url(run_service_url, "acquirejob"), "run service").json(json!({
            "jobMessageId": runner_request_id,
            "runnerOS": "Linux",
            "billingOwnerId": billing_owner_id,
        }));
        self.auth.send(&call).await?.ok_or(GithubError::Protocol { service: "run service", what: "an empty job".to_owned() })
    }
}
