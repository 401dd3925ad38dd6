//! The public SSH keys a forge publishes for a user.
//!
//! GitHub (`https://github.com/USER.keys`) and Forgejo (`INSTANCE/USER.keys`) publish
//! every account's public SSH keys as plain text, one OpenSSH line each. A job that opted
//! in to debug SSH gets the keys of the user who started its run: the only keys its kept
//! machine accepts (see `docs/debug-ssh.md`). Both runners fetch them the same way, with
//! [`UserKeys`]; [`UserKeysError`] says why a fetch failed.
//!
//! The fetch is careful because the answer ends up in a machine's `authorized_keys`: the
//! user name is checked before it is put in a URL, redirects are not followed (the keys
//! come from the forge itself), the whole fetch has a 10 s limit (the job waits for it),
//! the answer is capped at 256 KiB, and comment and blank lines are dropped.
//!
//! # Why a crate of its own
//! Both forge crates need this, and it needs an HTTP client. `solstice-core` has none and
//! is meant to stay that way — its seams speak core types only, and `cargo tree -p
//! solstice-core` shows no reqwest even with every feature on (docs.rs and CI build it
//! so); an optional feature there would break that check and give the core crate an HTTP
//! concern it does not otherwise have. This crate depends on nothing of Solstice's and on
//! nothing the forge crates do not already use (reqwest, tokio, thiserror), so sharing it
//! costs them no new dependency.
//!
//! ```
//! use solstice_forge_keys::{UserKeys, UserKeysError};
//! # async fn run() -> Result<(), UserKeysError> {
//! let keys = UserKeys::new("solstice-doc/0.1")?;
//! // A name that is not a user name never reaches the network.
//! assert!(matches!(keys.fetch("https://github.com", "../admin").await, Err(UserKeysError::InvalidUser(_))));
//! # Ok(()) }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(run()).expect("run");
//! ```
//!
//! # Optional features
//! None.
#![warn(missing_docs, missing_debug_implementations)]

use std::time::Duration;

/// Largest answer read: a user with many keys fits easily; more is not a key list.
const MAX_BODY: usize = 256 * 1024;

/// How long fetching one user's keys may take: the job waits for it.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a user's keys could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UserKeysError {
    /// The HTTP client could not be built.
    #[error("could not build the HTTP client for users' public keys")]
    Client(#[source] reqwest::Error),
    /// The forge's base URL is not an `http` or `https` URL (not repeated here: it is
    /// configuration, not something to print in a job log).
    #[error("the forge's address is not an http(s) URL")]
    InvalidBase,
    /// The name is not a forge user name, so it is not put in a URL.
    #[error("`{0}` is not a user name")]
    InvalidUser(String),
    /// The forge could not be reached, or the answer broke off.
    #[error("could not fetch the public keys of {user}")]
    Transport {
        /// The user.
        user: String,
        /// The cause (without the URL).
        #[source]
        source: reqwest::Error,
    },
    /// The forge answered with an error status (404: no such user).
    #[error("the public keys of {user} are not available: HTTP {status}")]
    Status {
        /// The user.
        user: String,
        /// The HTTP status.
        status: u16,
    },
    /// The answer is larger than any key list.
    #[error("the answer for the public keys of {0} is too large")]
    TooLarge(String),
    /// No answer in time.
    #[error("fetching the public keys of {0} timed out")]
    Timeout(String),
}

/// Fetches users' published public keys from `BASE/USER.keys`.
///
/// One client serves any number of forges (the base is given per fetch). Cheap to clone
/// (reqwest's client is an `Arc` inside).
#[derive(Debug, Clone)]
pub struct UserKeys {
    http: reqwest::Client,
}

impl UserKeys {
    /// A fetcher that sends `user_agent` (for example `solstice-forgejo-runner/0.1.0`).
    ///
    /// # Errors
    /// [`UserKeysError::Client`] if the HTTP client cannot be built (no TLS roots).
    pub fn new(user_agent: &str) -> Result<Self, UserKeysError> {
        let http = reqwest::Client::builder()
            .user_agent(user_agent)
            // The keys are on the forge itself; a redirect elsewhere is not followed.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(UserKeysError::Client)?;
        Ok(Self { http })
    }

    /// The public keys `user` publishes on the forge at `base` (its web address, such
    /// as `https://github.com` or a Forgejo instance; a trailing `/` is ignored), one
    /// OpenSSH line each, comments and blank lines dropped. An empty list is a valid
    /// answer: the user has no keys.
    ///
    /// # Errors
    /// [`UserKeysError::InvalidBase`] or [`UserKeysError::InvalidUser`] before any request;
    /// otherwise the variant for the step that failed.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future abandons the request and changes nothing.
    pub async fn fetch(&self, base: &str, user: &str) -> Result<Vec<String>, UserKeysError> {
        let base = base.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(UserKeysError::InvalidBase);
        }
        if !is_user_name(user) {
            return Err(UserKeysError::InvalidUser(user.to_owned()));
        }
        let url = format!("{base}/{user}.keys");
        let fetch = async {
            let transport = |source: reqwest::Error| UserKeysError::Transport { user: user.to_owned(), source: source.without_url() };
            let mut response = self.http.get(&url).send().await.map_err(transport)?;
            let status = response.status();
            if !status.is_success() {
                return Err(UserKeysError::Status { user: user.to_owned(), status: status.as_u16() });
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(transport)? {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(UserKeysError::TooLarge(user.to_owned()));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(parse_keys(&String::from_utf8_lossy(&body)))
        };
        tokio::time::timeout(FETCH_TIMEOUT, fetch).await.map_err(|_| UserKeysError::Timeout(user.to_owned()))?
    }
}

/// Forge user names: letters, digits, `-`, `_` and `.`, not starting with `.` (GitHub's
/// are a subset) — the check keeps anything else (`../`, `?`, `/`, a bot's `[bot]`) out
/// of the URL.
fn is_user_name(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 64
        && !user.starts_with('.')
        && user.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The non-empty, non-comment lines of a `.keys` answer.
fn parse_keys(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-route HTTP server on 127.0.0.1 answering every request with `status` and
    /// `body`, and remembering the request lines.
    async fn server(status: &'static str, body: String) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_owned();
                log.lock().expect("lock").push(request);
                let answer = format!("HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        (format!("http://{addr}/"), seen)
    }

    fn keys() -> UserKeys {
        UserKeys::new("solstice-forge-keys-test").expect("client")
    }

    #[tokio::test]
    async fn the_users_published_keys_are_fetched() {
        let body = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA alice\n\n# a comment\nssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ\n".to_owned();
        let (base, seen) = server("200 OK", body).await;
        let keys = keys().fetch(&base, "alice.dev").await.expect("keys");
        assert_eq!(keys, ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA alice", "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ"]);
        assert_eq!(seen.lock().expect("lock").as_slice(), ["GET /alice.dev.keys HTTP/1.1"]);
    }

    #[tokio::test]
    async fn errors_say_what_failed_and_odd_names_never_reach_the_network() {
        let (base, seen) = server("404 Not Found", "Not found.\n".to_owned()).await;
        let keys = keys();
        let err = keys.fetch(&base, "ghost").await.expect_err("404");
        assert_eq!(err.to_string(), "the public keys of ghost are not available: HTTP 404");
        for bad in ["", "../admin", "a/b", "x?y=1", ".hidden", "a b", "dependabot[bot]"] {
            assert!(matches!(keys.fetch(&base, bad).await, Err(UserKeysError::InvalidUser(_))), "{bad:?}");
        }
        for bad_base in ["", "file:///etc", "ftp://h", "127.0.0.1:80"] {
            assert!(matches!(keys.fetch(bad_base, "alice").await, Err(UserKeysError::InvalidBase)), "{bad_base:?}");
        }
        assert_eq!(seen.lock().expect("lock").len(), 1, "only the valid name was requested");

        let (base, _) = server("200 OK", "x".repeat(MAX_BODY + 1)).await;
        let err = keys.fetch(&base, "big").await.expect_err("too large");
        assert!(matches!(err, UserKeysError::TooLarge(_)), "{err}");

        let (base, _) = server("302 Found", String::new()).await;
        let err = keys.fetch(&base, "moved").await.expect_err("redirects are not followed");
        assert!(matches!(err, UserKeysError::Status { status: 302, .. }), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_forge_that_never_answers_times_out() {
        // Accepts the connection and then says nothing.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
            }
        });
        let err = keys().fetch(&format!("http://{addr}"), "slow").await.expect_err("timeout");
        assert!(matches!(err, UserKeysError::Timeout(ref u) if u == "slow"), "{err}");
        server.abort();
    }
}
