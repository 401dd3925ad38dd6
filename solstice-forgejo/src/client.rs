//! The protocol client: Connect unary calls over reqwest.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use solstice_core::Secret;

use crate::ForgeError;
use crate::connect::{self, Codec, Procedure};
use crate::proto::ping::v1 as ping;
use crate::proto::runner::v1 as pb;

/// The version string this crate reports to Forgejo.
pub const RUNNER_VERSION: &str = concat!("solstice-", env!("CARGO_PKG_VERSION"));

/// A registered runner's identity: the `x-runner-uuid` and `x-runner-token` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The runner's UUID.
    pub uuid: String,
    /// The runner's secret token.
    pub token: Secret,
}

/// Per-call settings.
#[derive(Debug, Clone, Default)]
pub struct CallOptions<'a> {
    /// The call's deadline; the client's default when `None`.
    pub timeout: Option<Duration>,
    /// The `x-runner-request-key` header, for fetches.
    pub request_key: Option<&'a str>,
}

/// A client of one Forgejo instance's runner API (`<instance>/api/actions`).
///
/// Every call is a Connect unary `POST` with a protobuf body (or JSON, see
/// [`ForgejoClientBuilder::codec`]); gzip responses are decoded; Connect errors become
/// [`ForgeError::Rejected`] with their code. `ForgejoClient` is cheap to clone (an `Arc`
/// inside); clones share the connection pool.
#[derive(Debug, Clone)]
pub struct ForgejoClient {
    inner: Arc<ClientInner>,
}

#[derive(Debug)]
struct ClientInner {
    http: reqwest::Client,
    instance: String,
    base: String,
    credentials: Option<Credentials>,
    codec: Codec,
    timeout: Duration,
    /// The largest response body read.
    max_response_bytes: usize,
    /// Counts failed calls ([`solstice_core::EngineMetrics::forge_error`]), if set.
    metrics: Option<solstice_core::EngineMetrics>,
}

/// Builds a [`ForgejoClient`].
#[derive(Debug)]
#[must_use]
pub struct ForgejoClientBuilder {
    instance: String,
    credentials: Option<Credentials>,
    codec: Codec,
    timeout: Duration,
    user_agent: String,
    max_response_bytes: usize,
}

impl ForgejoClient {
    /// Starts building a client for the instance at `instance` (for example
    /// `https://codeberg.org` or `https://host/forgejo` for a sub-path install).
    pub fn builder(instance: impl Into<String>) -> ForgejoClientBuilder {
        ForgejoClientBuilder {
            instance: instance.into(),
            credentials: None,
            codec: Codec::Proto,
            timeout: Duration::from_secs(60),
            user_agent: format!("solstice-forgejo-runner/{}", env!("CARGO_PKG_VERSION")),
            max_response_bytes: MAX_RESPONSE_BYTES,
        }
    }

    /// The instance URL without a trailing `/`.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// The runner credentials this client sends, if any.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.inner.credentials.as_ref()
    }

    /// The same client (sharing its connections) sending other credentials.
    pub fn with_credentials(&self, credentials: Credentials) -> Self {
        let inner = ClientInner {
            http: self.inner.http.clone(),
            instance: self.inner.instance.clone(),
            base: self.inner.base.clone(),
            credentials: Some(credentials),
            codec: self.inner.codec,
            timeout: self.inner.timeout,
            max_response_bytes: self.inner.max_response_bytes,
            metrics: self.inner.metrics.clone(),
        };
        Self { inner: Arc::new(inner) }
    }

    /// The same client (sharing its connections and credentials) counting every call
    /// that fails — no answer, a refusal, an answer it cannot read — with
    /// [`EngineMetrics::forge_error`](solstice_core::EngineMetrics::forge_error), so an
    /// engine's `/metrics` shows them.
    pub fn with_metrics(&self, metrics: solstice_core::EngineMetrics) -> Self {
        let inner = ClientInner {
            http: self.inner.http.clone(),
            instance: self.inner.instance.clone(),
            base: self.inner.base.clone(),
            credentials: self.inner.credentials.clone(),
            codec: self.inner.codec,
            timeout: self.inner.timeout,
            max_response_bytes: self.inner.max_response_bytes,
            metrics: Some(metrics),
        };
        Self { inner: Arc::new(inner) }
    }

    /// `Ping`: the unauthenticated liveness check; returns the server's answer
    /// (`Hello, <data>!` from Forgejo).
    ///
    /// # Errors
    /// [`ForgeError`].
    pub async fn ping(&self, data: &str) -> Result<String, ForgeError> {
        let request = ping::PingRequest { data: data.to_owned() };
        let response: ping::PingResponse = self.call(Procedure::Ping, &request, CallOptions::default()).await?;
        Ok(response.data)
    }

    /// `Register`: trades a registration token for a runner identity. The returned
    /// runner's `token` is the only copy of the runner secret.
    ///
    /// # Errors
    /// [`ForgeError`]; an unknown or invalidated registration token is
    /// [`ForgeError::Rejected`] with `invalid_argument`.
    pub async fn register(&self, request: &pb::RegisterRequest) -> Result<pb::Runner, ForgeError> {
        let response: pb::RegisterResponse = self.call(Procedure::Register, request, CallOptions::default()).await?;
        response.runner.ok_or(ForgeError::Protocol {
            procedure: Procedure::Register,
            detail: "the response has no runner".into(),
        })
    }

    /// `Declare`: tells the server this runner's version and label names.
    ///
    /// # Errors
    /// [`ForgeError`]; older servers answer `unimplemented`
    /// ([`ForgeError::is_unimplemented`]).
    pub async fn declare(&self, version: &str, labels: &[String]) -> Result<pb::Runner, ForgeError> {
        let request = pb::DeclareRequest { version: version.to_owned(), labels: labels.to_vec() };
        let response: pb::DeclareResponse = self.call(Procedure::Declare, &request, CallOptions::default()).await?;
        response.runner.ok_or(ForgeError::Protocol {
            procedure: Procedure::Declare,
            detail: "the response has no runner".into(),
        })
    }

    /// `FetchTask`: asks for up to `task_capacity` tasks.
    ///
    /// # Errors
    /// [`ForgeError`].
    pub async fn fetch_task(
        &self,
        request: &pb::FetchTaskRequest,
        options: CallOptions<'_>,
    ) -> Result<pb::FetchTaskResponse, ForgeError> {
        self.call(Procedure::FetchTask, request, options).await
    }

    /// `UpdateTask`: reports a task's full state (and outputs not yet acknowledged).
    ///
    /// # Errors
    /// [`ForgeError`].
    pub async fn update_task(&self, request: &pb::UpdateTaskRequest) -> Result<pb::UpdateTaskResponse, ForgeError> {
        self.call(Procedure::UpdateTask, request, CallOptions::default()).await
    }

    /// `UpdateLog`: appends log rows from `index` on.
    ///
    /// # Errors
    /// [`ForgeError`]; an archived log is [`ForgeError::Rejected`] with `already_exists`.
    pub async fn update_log(&self, request: &pb::UpdateLogRequest) -> Result<pb::UpdateLogResponse, ForgeError> {
        self.call(Procedure::UpdateLog, request, CallOptions::default()).await
    }

    /// Makes one Connect unary call.
    ///
    /// # Errors
    /// [`ForgeError`].
    ///
    /// # Cancel safety
    /// Dropping the future abandons the HTTP request; the server may or may not have
    /// seen it.
    pub async fn call<Req, Resp>(
        &self,
        procedure: Procedure,
        request: &Req,
        options: CallOptions<'_>,
    ) -> Result<Resp, ForgeError>
    where
        Req: prost::Message + Serialize,
        Resp: prost::Message + Default + DeserializeOwned,
    {
        let result = self.call_once(procedure, request, options).await;
        if result.is_err()
            && let Some(metrics) = &self.inner.metrics
        {
            metrics.forge_error();
        }
        result
    }

    async fn call_once<Req, Resp>(&self, procedure: Procedure, request: &Req, options: CallOptions<'_>) -> Result<Resp, ForgeError>
    where
        Req: prost::Message + Serialize,
        Resp: prost::Message + Default + DeserializeOwned,
    {
        let inner = &self.inner;
        let codec = inner.codec;
        let body = codec.encode(request).map_err(|source| ForgeError::Codec { procedure, source })?;
        let timeout = options.timeout.unwrap_or(inner.timeout);
        let mut http = inner
            .http
            .post(format!("{}{}", inner.base, procedure.path()))
            .header(reqwest::header::CONTENT_TYPE, codec.content_type())
            .header(connect::PROTOCOL_VERSION_HEADER, "1")
            .header(connect::TIMEOUT_HEADER, timeout.as_millis().clamp(1, 9_999_999_999).to_string())
            .timeout(timeout)
            .body(body);
        if procedure.is_authenticated() {
            let credentials = inner.credentials.as_ref().ok_or(ForgeError::NoCredentials(procedure))?;
            http = http
                .header(connect::RUNNER_UUID_HEADER, &credentials.uuid)
                .header(connect::RUNNER_TOKEN_HEADER, credentials.token.expose());
        }
        if let Some(key) = options.request_key {
            http = http.header(connect::REQUEST_KEY_HEADER, key);
        }
        let transport = |source: reqwest::Error| {
            if source.is_timeout() {
                ForgeError::Timeout { procedure }
            } else {
                ForgeError::Transport { procedure, source: source.without_url() }
            }
        };
        let response = http.send().await.map_err(transport)?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = read_body(response, inner.max_response_bytes)
            .await
            .map_err(|e| match e {
                BodyError::Transport(source) => transport(source),
                BodyError::TooLarge => ForgeError::TooLarge { procedure, limit: inner.max_response_bytes },
            })?;
        if status != reqwest::StatusCode::OK {
            let (code, message) = connect::parse_error(status.as_u16(), &bytes);
            return Err(ForgeError::Rejected { procedure, code, message });
        }
        if Codec::from_content_type(&content_type) != Some(codec) {
            return Err(ForgeError::Protocol {
                procedure,
                detail: format!("content type `{content_type}` instead of `{}`", codec.content_type()),
            });
        }
        codec.decode(&bytes).map_err(|source| ForgeError::Codec { procedure, source })
    }
}

impl ForgejoClientBuilder {
    /// The runner credentials sent with every call but `Ping` and `Register`.
    /// Default: none.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// The message encoding. Default: [`Codec::Proto`], as forgejo-runner.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// The deadline of a call without its own. Default: 60 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The `User-Agent` header. Default: `solstice-forgejo-runner/<version>`.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// The largest response body read; a larger one fails the call with
    /// [`ForgeError::TooLarge`] as soon as it passes the limit, so a hostile or broken
    /// server cannot make the runner hold it all in memory. Default: 32 MiB.
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// Builds the client.
    ///
    /// # Errors
    /// [`ForgeError::InvalidUrl`] unless the instance is an absolute `http(s)` URL
    /// without query or credentials; [`ForgeError::Client`] if TLS cannot be set up.
    pub fn build(self) -> Result<ForgejoClient, ForgeError> {
        let instance = normalize_instance(&self.instance)?;
        let http = reqwest::Client::builder()
            .user_agent(self.user_agent)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(ForgeError::Client)?;
        let inner = ClientInner {
            http,
            base: format!("{instance}/api/actions"),
            instance,
            credentials: self.credentials,
            codec: self.codec,
            timeout: self.timeout,
            max_response_bytes: self.max_response_bytes,
            metrics: None,
        };
        Ok(ForgejoClient { inner: Arc::new(inner) })
    }
}

/// The default [`ForgejoClientBuilder::max_response_bytes`]. A task carries its workflow
/// and its event payload, which Forgejo does not bound; GitHub caps webhook payloads at
/// 25 MB (docs.github.com, "Webhook events and payloads"), so a real answer fits with room.
const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// Why a response body could not be read.
enum BodyError {
    /// The connection failed.
    Transport(reqwest::Error),
    /// The body is larger than the limit.
    TooLarge,
}

/// Reads a response body of at most `limit` bytes. The declared length is checked first;
/// the body is then read chunk by chunk and abandoned once it passes the limit, so no more
/// than `limit` plus one chunk is ever held.
async fn read_body(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Checks an instance URL and trims its trailing `/`.
fn normalize_instance(url: &str) -> Result<String, ForgeError> {
    let invalid = |reason| ForgeError::InvalidUrl { url: redact(url), reason };
    let parsed = reqwest::Url::parse(url.trim()).map_err(|_| invalid("not an absolute URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("only http and https are supported"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid("credentials do not belong in the URL"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid("a query or fragment is not allowed"));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

/// A URL fit for an error message: anything before `@` in the authority is dropped.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_urls_are_checked_and_trimmed() {
        assert_eq!(normalize_instance("https://h.example/").ok().as_deref(), Some("https://h.example"));
        assert_eq!(normalize_instance("https://h/forgejo/").ok().as_deref(), Some("https://h/forgejo"));
        assert!(matches!(normalize_instance("ftp://h"), Err(ForgeError::InvalidUrl { .. })));
        assert!(matches!(normalize_instance("h.example"), Err(ForgeError::InvalidUrl { .. })));
        let err = normalize_instance("https://user:hunter2@h").expect_err("credentials");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[tokio::test]
    async fn failed_calls_are_counted_when_metrics_are_given_and_kept_with_new_credentials() {
        // Nothing listens on port 1: every call fails at once.
        let client = ForgejoClient::builder("http://127.0.0.1:1").build().expect("client");
        client.ping("x").await.expect_err("nothing listens (uncounted without metrics)");
        let metrics = solstice_core::EngineMetrics::new();
        let counted = client.with_metrics(metrics.clone());
        counted.ping("x").await.expect_err("nothing listens");
        let credentials = Credentials { uuid: "u".into(), token: solstice_core::Secret::new("t".to_owned()) };
        counted.with_credentials(credentials).declare("v1", &[]).await.expect_err("nothing listens");
        assert!(metrics.render().contains("solstice_forge_api_errors_total 2\n"), "{}", metrics.render());
    }
}
