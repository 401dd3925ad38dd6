//! The HTTP layer: requests with the right headers, errors read from GitHub's bodies,
//! and the runner's OAuth token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use solstice_core::Secret;

use crate::json::{field, i64_field, str_field};
use crate::{GithubError, RunnerKey};

/// Default time limit of one request (long polls set their own).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(100);
/// Tokens are renewed when this share of their lifetime is left.
const REFRESH_MARGIN: f64 = 0.2;
/// Without `expires_in`, tokens are renewed after this long.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(50 * 60);
/// The largest response body read. A job message carries its event payload, which GitHub
/// caps at 25 MB for webhooks (docs.github.com, "Webhook events and payloads"), so a real
/// answer fits with room; a larger one is refused before it fills memory (issue 16).
const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// How a request authenticates.
#[derive(Debug, Clone)]
pub(crate) enum Auth {
    /// Anonymous.
    None,
    /// `Authorization: Bearer …`.
    Bearer(Secret),
    /// `Authorization: RemoteAuth …` (registration token).
    Remote(Secret),
}

/// One JSON request.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub method: Method,
    pub url: String,
    pub service: &'static str,
    pub query: Vec<(String, String)>,
    pub api_version: Option<&'static str>,
    pub body: Option<Value>,
    pub timeout: Option<Duration>,
}

impl Call {
    pub fn new(method: Method, url: impl Into<String>, service: &'static str) -> Self {
        Self { method, url: url.into(), service, query: Vec::new(), api_version: None, body: None, timeout: None }
    }

    pub fn query(mut self, name: &str, value: impl Into<String>) -> Self {
        self.query.push((name.to_owned(), value.into()));
        self
    }

    pub fn api(mut self, version: &'static str) -> Self {
        self.api_version = Some(version);
        self
    }

    pub fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// A shared HTTP client. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
    /// HTTP/1.1 only, no overall timeout: websocket upgrades (h2 has no `Upgrade`).
    upgrade_client: reqwest::Client,
    user_agent: String,
    /// Counts failed calls ([`EngineMetrics::forge_error`]), if set.
    metrics: Option<solstice_core::EngineMetrics>,
    /// The largest response body read.
    max_response_bytes: usize,
}

impl Http {
    pub fn new() -> Result<Self, GithubError> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| GithubError::Transport { service: "HTTP client", source: e.without_url() })?;
        let upgrade_client = reqwest::Client::builder()
            .http1_only()
            .connect_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| GithubError::Transport { service: "HTTP client", source: e.without_url() })?;
        Ok(Self {
            client,
            upgrade_client,
            user_agent: format!("GitHubActionsRunner-solstice/{}", crate::RUNNER_VERSION),
            metrics: None,
            max_response_bytes: MAX_RESPONSE_BYTES,
        })
    }

    /// Counts every failed call in `metrics` from now on (this client and its clones).
    pub fn count_errors_in(mut self, metrics: Option<solstice_core::EngineMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    fn url(call: &Call) -> Result<Url, GithubError> {
        let mut url = Url::parse(&call.url)
            .map_err(|_| GithubError::Protocol { service: call.service, what: "an invalid URL".to_owned() })?;
        if !call.query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &call.query {
                pairs.append_pair(k, v);
            }
        }
        Ok(url)
    }

    /// Sends a JSON call; `Ok(None)` for an empty body (204 or a long poll that ended).
    pub async fn send(&self, call: &Call, auth: &Auth) -> Result<Option<Value>, GithubError> {
        let url = Self::url(call)?;
        let accept = match call.api_version {
            Some(v) => format!("application/json; api-version={v}"),
            None => "application/json".to_owned(),
        };
        let mut request = self
            .client
            .request(call.method.clone(), url)
            .header(reqwest::header::ACCEPT, &accept)
            .header(reqwest::header::USER_AGENT, &self.user_agent);
        request = with_auth(request, auth);
        if let Some(timeout) = call.timeout {
            request = request.timeout(timeout);
        }
        if let Some(body) = &call.body {
            let bytes = serde_json::to_vec(body).map_err(|source| GithubError::Decode { service: call.service, source })?;
            let content_type = match call.api_version {
                Some(v) => format!("application/json; charset=utf-8; api-version={v}"),
                None => "application/json".to_owned(),
            };
            request = request.header(reqwest::header::CONTENT_TYPE, content_type).body(bytes);
        }
        let (status, bytes) = self.execute(request, call.service).await?;
        read_json(call.service, status, &bytes)
    }

    /// Sends a prepared request; returns the status and body of a 2xx answer. A failure
    /// (no answer, or another status) is counted in the metrics, if set.
    pub async fn execute(
        &self,
        request: reqwest::RequestBuilder,
        service: &'static str,
    ) -> Result<(StatusCode, Vec<u8>), GithubError> {
        let result = self.execute_once(request, service).await;
        if result.is_err()
            && let Some(metrics) = &self.metrics
        {
            metrics.forge_error();
        }
        result
    }

    async fn execute_once(&self, request: reqwest::RequestBuilder, service: &'static str) -> Result<(StatusCode, Vec<u8>), GithubError> {
        let response = request.send().await.map_err(|e| GithubError::Transport { service, source: e.without_url() })?;
        let status = response.status();
        let bytes = read_body(response, self.max_response_bytes, service).await?;
        if status.is_success() {
            Ok((status, bytes))
        } else {
            Err(status_error(service, status, &bytes))
        }
    }

    pub fn raw(&self) -> &reqwest::Client {
        &self.client
    }

    /// The HTTP/1.1 client for websocket upgrades.
    pub fn upgrade_client(&self) -> &reqwest::Client {
        &self.upgrade_client
    }

    pub fn user_agent(&self) -> &str {
        &self.user_agent
    }

    /// Posts a form (the token request).
    pub async fn post_form(&self, url: &str, form: &[(&str, &str)], service: &'static str) -> Result<Value, GithubError> {
        let mut encoder = Url::parse("http://form.invalid/")
            .map_err(|_| GithubError::Protocol { service, what: "form encoding".to_owned() })?;
        encoder.query_pairs_mut().extend_pairs(form.iter().copied());
        let body = encoder.query().unwrap_or_default().to_owned();
        let url = Url::parse(url).map_err(|_| GithubError::Protocol { service, what: "an invalid URL".to_owned() })?;
        let request = self
            .client
            .post(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        let (status, bytes) = self.execute(request, service).await?;
        read_json(service, status, &bytes)?.ok_or(GithubError::Protocol { service, what: "an empty body".to_owned() })
    }
}

/// Reads a response body of at most `limit` bytes. The declared length is checked first;
/// the body is then read chunk by chunk and abandoned once it passes the limit, so no more
/// than `limit` plus one chunk is ever held.
async fn read_body(mut response: reqwest::Response, limit: usize, service: &'static str) -> Result<Vec<u8>, GithubError> {
    let too_large = GithubError::TooLarge { service, limit };
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| GithubError::Transport { service, source: e.without_url() })? {
        if body.len() + chunk.len() > limit {
            return Err(too_large);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

pub(crate) fn with_auth(request: reqwest::RequestBuilder, auth: &Auth) -> reqwest::RequestBuilder {
    let value = match auth {
        Auth::None => return request,
        Auth::Bearer(token) => format!("Bearer {}", token.expose()),
        Auth::Remote(token) => format!("RemoteAuth {}", token.expose()),
    };
    match reqwest::header::HeaderValue::from_str(&value) {
        Ok(mut value) => {
            value.set_sensitive(true);
            request.header(reqwest::header::AUTHORIZATION, value)
        }
        Err(_) => request,
    }
}

fn read_json(service: &'static str, status: StatusCode, bytes: &[u8]) -> Result<Option<Value>, GithubError> {
    let bytes = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF][..]).unwrap_or(bytes);
    if status == StatusCode::NO_CONTENT || bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(bytes).map(Some).map_err(|source| GithubError::Decode { service, source })
}

/// Reads GitHub's error bodies: VSS `WrappedException` (`typeKey`, `message`), broker and
/// run service (`errorKind`, `errorMessage`), OAuth (`error`, `error_description`).
fn status_error(service: &'static str, status: StatusCode, bytes: &[u8]) -> GithubError {
    let body: Option<Value> = serde_json::from_slice(bytes).ok();
    let pick = |names: &[&str]| body.as_ref().and_then(|b| names.iter().find_map(|n| str_field(b, n)));
    let kind = pick(&["typeKey", "errorKind", "error"]);
    let mut message = pick(&["message", "errorMessage", "error_description"])
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).into_owned());
    if message.chars().count() > 300 {
        message = message.chars().take(300).collect::<String>() + "…";
    }
    GithubError::Status { service, status: status.as_u16(), kind, message }
}

/// The runner's OAuth token: minted from a signed client assertion, cached, renewed
/// before it expires and after a 401.
#[derive(Debug)]
pub(crate) struct RunnerAuth {
    http: Http,
    key: Arc<RunnerKey>,
    client_id: String,
    audience: String,
    endpoint: String,
    fips: bool,
    cached: tokio::sync::Mutex<Option<(Secret, Instant)>>,
}

impl RunnerAuth {
    pub fn new(http: Http, key: Arc<RunnerKey>, data: &crate::store::OAuthData) -> Self {
        Self {
            http,
            key,
            client_id: data.client_id.clone(),
            audience: data.authorization_url.clone(),
            endpoint: data.oauth_endpoint_url.clone().unwrap_or_else(|| data.authorization_url.clone()),
            fips: data.fips(),
            cached: tokio::sync::Mutex::new(None),
        }
    }

    pub fn http(&self) -> &Http {
        &self.http
    }

    /// A valid runner token, minting one if needed.
    pub async fn token(&self) -> Result<Secret, GithubError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, refresh_at)) = cached.as_ref()
            && Instant::now() < *refresh_at
        {
            return Ok(token.clone());
        }
        let assertion = self.key.client_assertion(&self.client_id, &self.audience, self.fips)?;
        let response = self
            .http
            .post_form(
                &self.endpoint,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                    ("client_assertion", assertion.expose()),
                ],
                "token service",
            )
            .await?;
        let token = str_field(&response, "access_token").filter(|t| !t.is_empty()).ok_or_else(|| {
            GithubError::Protocol { service: "token service", what: "no access_token".to_owned() }
        })?;
        let lifetime = i64_field(&response, "expires_in")
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(s as u64))
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        let refresh_at = Instant::now() + lifetime.mul_f64(1.0 - REFRESH_MARGIN);
        tracing::debug!(lifetime_s = lifetime.as_secs(), "obtained a runner OAuth token");
        let token = Secret::new(token);
        *cached = Some((token.clone(), refresh_at));
        Ok(token)
    }

    /// Forgets the cached token (after a 401 or `ForceTokenRefresh`).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    /// Sends a call with the runner token; on 401 mints a new token and tries once more.
    pub async fn send(&self, call: &Call) -> Result<Option<Value>, GithubError> {
        let token = self.token().await?;
        match self.http.send(call, &Auth::Bearer(token)).await {
            Err(e) if e.status() == Some(401) => {
                tracing::debug!(service = call.service, "runner token refused; renewing it");
                self.invalidate().await;
                let token = self.token().await?;
                self.http.send(call, &Auth::Bearer(token)).await
            }
            other => other,
        }
    }
}

/// Reads `{count, value: [...]}` lists.
pub(crate) fn list(value: &Option<Value>) -> Vec<Value> {
    value
        .as_ref()
        .and_then(|v| field(v, "value"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16, item 14: an answer larger than the cap is an error, read no further than
    /// the cap. The body never ends: a client that read it whole would never return (and
    /// its memory would grow without bound), so returning at all shows the read stopped.
    #[tokio::test]
    async fn issue_16_answers_past_the_size_cap_are_refused_unread() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for head in [
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 400000000\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n",
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\r\n",
        ] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let server = tokio::spawn(async move {
                let (mut socket, _) = listener.accept().await?;
                let mut request = [0u8; 8192];
                let _ = socket.read(&mut request).await?;
                socket.write_all(head.as_bytes()).await?;
                let block = vec![b' '; 64 * 1024];
                loop {
                    socket.write_all(&block).await?;
                }
                #[allow(unreachable_code)]
                Ok::<_, std::io::Error>(())
            });
            let mut http = Http::new().expect("client");
            http.max_response_bytes = 1024 * 1024;
            let call = Call::new(Method::GET, format!("http://{addr}/_apis/connectionData"), "test");
            let result = tokio::time::timeout(Duration::from_secs(30), http.send(&call, &Auth::None)).await;
            let error = result.expect("the read stopped at the cap").expect_err("an endless answer");
            assert!(matches!(error, GithubError::TooLarge { service: "test", limit: 1_048_576 }), "{head}: {error:?}");
            assert!(!error.is_transient(), "a retry would fetch the same answer");
            server.abort();
        }
    }

    #[tokio::test]
    async fn failed_calls_are_counted_when_metrics_are_given() {
        // Nothing listens on port 1: every call fails at once.
        let call = Call::new(Method::GET, "http://127.0.0.1:1/_apis/connectionData", "test");
        let plain = Http::new().expect("client");
        plain.send(&call, &Auth::None).await.expect_err("nothing listens (uncounted without metrics)");
        let metrics = solstice_core::EngineMetrics::new();
        let counted = plain.count_errors_in(Some(metrics.clone()));
        counted.send(&call, &Auth::None).await.expect_err("nothing listens");
        counted.clone().post_form("http://127.0.0.1:1/token", &[("a", "b")], "test").await.expect_err("nothing listens; clones count too");
        assert!(metrics.render().contains("solstice_forge_api_errors_total 2\n"), "{}", metrics.render());
    }
}
