//! Fetching a repository with git for the built-in checkout, with the token kept out of
//! every command line.
//!
//! Any user of the host can read every process's arguments (`/proc/<pid>/cmdline`), but
//! only the process's own user can read its environment (`/proc/<pid>/environ`). So the
//! token travels as an `http.extraheader` set through git's `GIT_CONFIG_COUNT`,
//! `GIT_CONFIG_KEY_<n>` and `GIT_CONFIG_VALUE_<n>` variables (git 2.31 and later; older
//! gits ignore them and would fetch without credentials, so they are refused up front).

use std::collections::BTreeMap;

use base64::Engine as _;

use crate::{ExecError, Secret};

/// The oldest git the checkout runs: 2.31 reads configuration from `GIT_CONFIG_COUNT`
/// (and 2.24 brought `--end-of-options`).
pub const MIN_GIT_VERSION: (u32, u32) = (2, 31);

/// One revision of a repository to fetch into a directory and check out, as the built-in
/// checkout does on the host (the host executor into the workspace, the SSH executor
/// into a scratch directory it then uploads).
#[derive(Debug, Clone, Copy)]
pub struct GitFetch<'a> {
    /// The repository's URL (from the forge).
    pub url: &'a str,
    /// What to fetch: a commit, branch or tag (the checkout's `ref:` input, so a
    /// workflow author's value).
    pub rev: &'a str,
    /// `--depth`; 0 fetches the whole history.
    pub depth: u32,
    /// The token to fetch with, sent as `Authorization: basic <x-access-token:token>`
    /// as `actions/checkout` sends it.
    pub token: Option<&'a Secret>,
}

impl GitFetch<'_> {
    /// A POSIX shell script that makes `dir` (files and directories private to the user:
    /// `umask 077`), fetches [`Self::rev`] into it and checks it out. User values reach
    /// git only quoted and after `--end-of-options`, so a `ref:` such as
    /// `--upload-pack=…` is a revision git cannot find, never an option. Run it with
    /// [`Self::env`].
    pub fn script(&self, dir: &str) -> String {
        let depth = if self.depth == 0 { String::new() } else { format!(" --depth {}", self.depth) };
        format!(
            "umask 077; set -e; mkdir -p {dir}; cd {dir}; git init -q .; \
             git remote add --end-of-options origin {url} 2>/dev/null || git remote set-url --end-of-options origin {url}; \
             git fetch -q{depth} --end-of-options origin {rev}; git checkout -q FETCH_HEAD",
            dir = shell_quote(dir),
            url = shell_quote(self.url),
            rev = shell_quote(self.rev),
        )
    }

    /// The environment [`Self::script`] runs with: git never prompts, and the token (if
    /// any) is the `http.extraheader` of `GIT_CONFIG_KEY_0`/`GIT_CONFIG_VALUE_0`.
    pub fn env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::from([("GIT_TERMINAL_PROMPT".to_owned(), "0".to_owned())]);
        if let Some(token) = self.token {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{}", token.expose()));
            env.insert("GIT_CONFIG_COUNT".into(), "1".into());
            env.insert("GIT_CONFIG_KEY_0".into(), "http.extraheader".into());
            env.insert("GIT_CONFIG_VALUE_0".into(), format!("Authorization: basic {basic}"));
        }
        env
    }
}

/// Checks that the host's `git` is at least [`MIN_GIT_VERSION`].
///
/// # Errors
/// [`ExecError::Setup`] when git cannot be run or is older.
pub async fn check_git_version() -> Result<(), ExecError> {
    let out = tokio::process::Command::new("git")
        .arg("--version")
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| ExecError::Setup { message: "could not run git on the host".into(), source: Some(Box::new(e)) })?;
    let text = String::from_utf8_lossy(&out.stdout);
    match parse_version(&text) {
        Some(version) if version >= MIN_GIT_VERSION => Ok(()),
        _ => Err(ExecError::Setup {
            message: format!(
                "the checkout needs git {}.{} or later on the host, to pass the token in the environment \
                 rather than on the command line; found `{}`",
                MIN_GIT_VERSION.0,
                MIN_GIT_VERSION.1,
                text.trim()
            ),
            source: None,
        }),
    }
}

/// `(major, minor)` of `git version 2.39.2 (Apple Git-143)`.
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let number = text.trim().strip_prefix("git version ")?.split_whitespace().next()?;
    let mut parts = number.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

/// Quotes a string for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("git version 2.47.3\n"), Some((2, 47)));
        assert_eq!(parse_version("git version 2.39.2 (Apple Git-143)"), Some((2, 39)));
        assert_eq!(parse_version("git version 2.30.0.windows.1"), Some((2, 30)));
        assert_eq!(parse_version("hg 6"), None);
        assert!((2, 30) < MIN_GIT_VERSION && (2, 31) >= MIN_GIT_VERSION && (3, 0) > MIN_GIT_VERSION);
    }

    /// The token is in the environment only, in the header `actions/checkout` sends
    /// (`src/git-auth-helper.ts`: `AUTHORIZATION: basic base64(x-access-token:<token>)`).
    #[test]
    fn the_token_is_in_the_environment_and_not_in_the_script() {
        let token = Secret::new("s3cr3t-token");
        let fetch = GitFetch { url: "https://forge.example/o/r.git", rev: "main", depth: 1, token: Some(&token) };
        let script = fetch.script("/w");
        let basic = base64::engine::general_purpose::STANDARD.encode("x-access-token:s3cr3t-token");
        assert!(!script.contains("s3cr3t") && !script.contains(&basic), "{script}");
        let env = fetch.env();
        assert_eq!(env.get("GIT_CONFIG_COUNT").map(String::as_str), Some("1"));
        assert_eq!(env.get("GIT_CONFIG_KEY_0").map(String::as_str), Some("http.extraheader"));
        assert_eq!(env.get("GIT_CONFIG_VALUE_0"), Some(&format!("Authorization: basic {basic}")));
        let anonymous = GitFetch { token: None, ..fetch };
        assert!(!anonymous.env().contains_key("GIT_CONFIG_COUNT"));
    }
}
