//! The live console of broker jobs: batches of lines sent over the `FeedStreamUrl`
//! websocket, the only live channel of a results-service job.

use std::time::{Duration, Instant};

use serde_json::json;
use solstice_core::Secret;
use tokio::io::AsyncWriteExt;

use super::JobReport;
use crate::GithubError;
use crate::http::{Auth, Http, with_auth};
use crate::protocol::websocket;

const SERVICE: &str = "live console";
/// How long the opening handshake may take (the official runner's limit).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one batch may take to write.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Connection attempts before giving up for a while, and how long the while is.
const CONNECT_ATTEMPTS: u32 = 3;
const RETRY_AFTER: Duration = Duration::from_secs(600);
/// Lines per message.
const LINES_PER_MESSAGE: usize = 100;

/// An open websocket to the live console.
pub(crate) struct FeedSocket {
    /// Behind a mutex only to make the report `Sync` (the upgraded stream is not); used
    /// through `get_mut`, never locked.
    io: tokio::sync::Mutex<reqwest::Upgraded>,
}

impl std::fmt::Debug for FeedSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FeedSocket")
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // A weak mask only matters to proxies' cache poisoning defences, never to secrecy.
    let _ = getrandom::fill(&mut out);
    out
}

impl FeedSocket {
    /// Opens the websocket at `url` (`wss://`/`ws://`, or the `https://`/`http://` form)
    /// with the job token.
    pub async fn connect(http: &Http, url: &str, token: &Secret) -> Result<Self, GithubError> {
        let url = if let Some(rest) = url.strip_prefix("wss://") {
            format!("https://{rest}")
        } else if let Some(rest) = url.strip_prefix("ws://") {
            format!("http://{rest}")
        } else {
            url.to_owned()
        };
        let key = websocket::handshake_key(random());
        let request = http
            .upgrade_client()
            .get(&url)
            .header(reqwest::header::CONNECTION, "Upgrade")
            .header(reqwest::header::UPGRADE, "websocket")
            .header(reqwest::header::SEC_WEBSOCKET_VERSION, "13")
            .header(reqwest::header::SEC_WEBSOCKET_KEY, &key)
            .header(reqwest::header::USER_AGENT, http.user_agent());
        let request = with_auth(request, &Auth::Bearer(token.clone()));
        let response = tokio::time::timeout(CONNECT_TIMEOUT, request.send())
            .await
            .map_err(|_| GithubError::Protocol { service: SERVICE, what: "no answer to the websocket handshake".to_owned() })?
            .map_err(|e| GithubError::Transport { service: SERVICE, source: e.without_url() })?;
        let status = response.status();
        if status != reqwest::StatusCode::SWITCHING_PROTOCOLS {
            return Err(GithubError::Status {
                service: SERVICE,
                status: status.as_u16(),
                kind: None,
                message: "the websocket upgrade was refused".to_owned(),
            });
        }
        let accept = response.headers().get(reqwest::header::SEC_WEBSOCKET_ACCEPT).and_then(|v| v.to_str().ok());
        if accept != Some(websocket::accept_value(&key).as_str()) {
            return Err(GithubError::Protocol { service: SERVICE, what: "a wrong Sec-WebSocket-Accept".to_owned() });
        }
        let io = response.upgrade().await.map_err(|e| GithubError::Transport { service: SERVICE, source: e.without_url() })?;
        Ok(Self { io: tokio::sync::Mutex::new(io) })
    }

    /// Sends one text message, in frames of at most 1024 bytes.
    pub async fn send(&mut self, text: &str) -> Result<(), GithubError> {
        let bytes = websocket::text_message(text, websocket::MAX_FRAME_PAYLOAD, random);
        let io = self.io.get_mut();
        let write = async {
            io.write_all(&bytes).await?;
            io.flush().await
        };
        match tokio::time::timeout(SEND_TIMEOUT, write).await {
            Ok(result) => result.map_err(|source| GithubError::Feed { source }),
            Err(_) => Err(GithubError::Feed { source: std::io::ErrorKind::TimedOut.into() }),
        }
    }

    /// Says goodbye (best effort).
    pub async fn close(mut self) {
        let bytes = websocket::close_message(random());
        let io = self.io.get_mut();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = io.write_all(&bytes).await;
            let _ = io.shutdown().await;
        })
        .await;
    }
}

/// Batches waiting for the socket; more are dropped (the logs have every line).
const QUEUE: usize = 64;

/// Starts the task that owns a broker job's websocket: it connects when the first batch
/// arrives (three attempts, then a 10 minute rest), sends each batch, and closes the
/// socket once the returned sender is dropped or `stop` fires. The reporter never waits
/// for the network.
pub(crate) fn spawn_live_feed(
    tracker: &tokio_util::task::TaskTracker,
    http: Http,
    url: String,
    token: Secret,
    job_id: solstice_core::JobId,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::sync::mpsc::Sender<String> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(QUEUE);
    tracker.spawn(async move {
        let mut socket: Option<FeedSocket> = None;
        let mut failures = 0u32;
        let mut retry_at: Option<Instant> = None;
        loop {
            let batch = tokio::select! {
                b = rx.recv() => b,
                _ = stop.cancelled() => None,
            };
            let Some(batch) = batch else { break };
            if socket.is_none() {
                if retry_at.is_some_and(|t| Instant::now() < t) {
                    continue;
                }
                let connect = tokio::select! {
                    c = FeedSocket::connect(&http, &url, &token) => c,
                    _ = stop.cancelled() => break,
                };
                match connect {
                    Ok(s) => {
                        tracing::debug!(%job_id, "live log connected");
                        (socket, failures, retry_at) = (Some(s), 0, None);
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(%job_id, error = %e, failures, "could not open the live log");
                        if failures >= CONNECT_ATTEMPTS {
                            (failures, retry_at) = (0, Some(Instant::now() + RETRY_AFTER));
                        }
                        continue;
                    }
                }
            }
            if let Some(s) = socket.as_mut()
                && let Err(e) = s.send(&batch).await
            {
                tracing::debug!(%job_id, error = %e, "the live log connection broke");
                socket = None;
            }
        }
        if let Some(s) = socket {
            s.close().await;
        }
    });
    tx
}

impl JobReport {
    /// Queues the waiting lines of every record for the websocket, in batches of at most
    /// 100 lines; what the queue cannot take is dropped (the step's log blob has it), but
    /// still counted, so `startLine` stays right.
    pub(super) fn broker_feed(&mut self) {
        for i in 0..self.records.len() {
            while !self.records[i].feed.is_empty() {
                let take = self.records[i].feed.len().min(LINES_PER_MESSAGE);
                let lines: Vec<String> = self.records[i].feed.drain(..take).collect();
                let start = self.records[i].fed + 1;
                self.records[i].fed += take;
                let Some(live) = &self.live else { continue };
                let body = json!({"value": lines, "count": take, "stepId": self.records[i].id, "startLine": start});
                if live.try_send(body.to_string()).is_err() {
                    tracing::debug!(job_id = %self.job_id, "the live log is behind; dropping lines from it");
                }
            }
        }
    }

    /// Lets the websocket task close the socket and end.
    pub(super) fn close_feed(&mut self) {
        self.live = None;
    }

    /// Gives a broker job its live console.
    pub(crate) fn set_live_feed(&mut self, live: tokio::sync::mpsc::Sender<String>) {
        self.live = Some(live);
    }
}
