//! The public SSH keys Forgejo publishes for a user (`INSTANCE/USER.keys`, the same
//! plain-text form as `https://github.com/USER.keys`): a job that opted in to debug SSH
//! gets the keys of the user who started its run, the only keys its kept machine
//! accepts (see `docs/debug-ssh.md`).

use std::time::Duration;

/// Largest answer read: a user with many keys fits easily; more is not a key list.
const MAX_BODY: usize = 256 * 1024;

/// How long fetching one user's keys may take: the job waits for it.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a user's keys could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum UserKeysError {
    /// The name is not a Forgejo user name, so it is not put in a URL.
    #[error("`{0}` is not a user name")]
    InvalidUser(String),
    /// The instance could not be reached, or the answer broke off.
    #[error("could not fetch the public keys of {user}")]
    Transport {
        /// The user.
        user: String,
        /// The cause (without the URL).
        #[source]
        source: reqwest::Error,
    },
    /// The instance answered with an error status (404: no such user).
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

/// Fetches users' published public keys from one Forgejo instance.
#[derive(Debug, Clone)]
pub(crate) struct UserKeys {
    http: reqwest::Client,
    instance: String,
}

impl UserKeys {
    /// A fetcher for `instance` (a URL without trailing `/`, as
    /// [`crate::ForgejoClient::instance`] gives it).
    pub(crate) fn new(instance: &str) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .user_agent(format!("solstice-forgejo-runner/{}", env!("CARGO_PKG_VERSION")))
            .connect_timeout(FETCH_TIMEOUT)
            // The keys are on the instance itself; a redirect elsewhere is not followed.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { http, instance: instance.trim_end_matches('/').to_owned() })
    }

    /// The public keys `user` publishes, one OpenSSH line each (comments and blank
    /// lines dropped). An empty list is a valid answer: the user has no keys.
    pub(crate) async fn fetch(&self, user: &str) -> Result<Vec<String>, UserKeysError> {
        if !is_user_name(user) {
            return Err(UserKeysError::InvalidUser(user.to_owned()));
        }
        let url = format!("{}/{user}.keys", self.instance);
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

/// Forgejo user names: letters, digits, `-`, `_` and `.`, not starting with `.` — the
/// check keeps anything else (`../`, `?`, `/`) out of the URL.
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

    #[tokio::test]
    async fn the_users_published_keys_are_fetched() {
        let body = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA alice\n\n# a comment\nssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ\n".to_owned();
        let (instance, seen) = server("200 OK", body).await;
        let keys = UserKeys::new(&instance).expect("client").fetch("alice.dev").await.expect("keys");
        assert_eq!(keys, ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA alice", "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ"]);
        assert_eq!(seen.lock().expect("lock").as_slice(), ["GET /alice.dev.keys HTTP/1.1"]);
    }

    #[tokio::test]
    async fn errors_say_what_failed_and_odd_names_never_reach_the_network() {
        let (instance, seen) = server("404 Not Found", "Not found.\n".to_owned()).await;
        let keys = UserKeys::new(&instance).expect("client");
        let err = keys.fetch("ghost").await.expect_err("404");
        assert_eq!(err.to_string(), "the public keys of ghost are not available: HTTP 404");
        for bad in ["", "../admin", "a/b", "x?y=1", ".hidden", "a b"] {
            assert!(matches!(keys.fetch(bad).await, Err(UserKeysError::InvalidUser(_))), "{bad:?}");
        }
        assert_eq!(seen.lock().expect("lock").len(), 1, "only the valid name was requested");

        let (instance, _) = server("200 OK", "x".repeat(MAX_BODY + 1)).await;
        let err = UserKeys::new(&instance).expect("client").fetch("big").await.expect_err("too large");
        assert!(matches!(err, UserKeysError::TooLarge(_)), "{err}");

        let (instance, _) = server("302 Found", String::new()).await;
        let err = UserKeys::new(&instance).expect("client").fetch("moved").await.expect_err("redirects are not followed");
        assert!(matches!(err, UserKeysError::Status { status: 302, .. }), "{err}");
    }
}
