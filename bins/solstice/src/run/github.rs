//! The `github` context of a local run: what a forge would send, from the flags and the
//! local git checkout.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

/// What the flags say about the triggering event.
#[derive(Debug, Default)]
pub struct EventFlags {
    /// `--event`: the event name. Default `push`.
    pub name: Option<String>,
    /// `--eventpath`: the event payload, read from its file.
    pub payload: Option<Value>,
    /// `--actor`.
    pub actor: Option<String>,
    /// `--forgejo`: the server is a Forgejo instance.
    pub forgejo: bool,
    /// The dispatch event's inputs as strings, replacing the payload's (empty for other
    /// events).
    pub inputs: serde_json::Map<String, Value>,
}

/// Output of `git -C repo args...`, trimmed, when git succeeds and prints something.
fn git(repo: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(repo).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// `(server, owner/name)` of a remote URL: `git@host:owner/name.git`,
/// `https://host/owner/name`, `ssh://git@host:22/owner/name.git`.
pub fn parse_remote(url: &str) -> Option<(String, String)> {
    let url = url.trim().trim_end_matches('/').trim_end_matches(".git");
    let (host, path) = if let Some((_, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_once('/')?;
        let host = authority.rsplit('@').next()?.split(':').next()?;
        (host.to_owned(), path.to_owned())
    } else {
        let (authority, path) = url.split_once(':')?;
        (authority.rsplit('@').next()?.to_owned(), path.to_owned())
    };
    let mut parts = path.rsplit('/');
    let name = parts.next().filter(|n| !n.is_empty())?;
    let owner = parts.next().filter(|o| !o.is_empty())?;
    Some((host, format!("{owner}/{name}")))
}

/// The `github` context: sha and ref from the checkout's HEAD, the repository and server
/// from its `origin` remote (else the directory's name on github.com), the actor from
/// `--actor`, else `git config user.name`, else `$USER`.
pub fn context(repo: &Path, workflow: &str, flags: EventFlags) -> Value {
    let sha = git(repo, &["rev-parse", "HEAD"]).unwrap_or_default();
    let git_ref = git(repo, &["symbolic-ref", "-q", "HEAD"]).unwrap_or_default();
    let ref_name = git_ref.strip_prefix("refs/heads/").unwrap_or(&git_ref).to_owned();
    let remote = git(repo, &["remote", "get-url", "origin"]).and_then(|url| parse_remote(&url));
    let repository = remote.as_ref().map(|(_, r)| r.clone()).unwrap_or_else(|| {
        repo.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    });
    let owner = repository.split_once('/').map(|(o, _)| o.to_owned()).unwrap_or_default();
    let (server_url, api_url, graphql_url) = match (remote.map(|(host, _)| host), flags.forgejo) {
        // Forgejo serves its API under /api/v1 and has no GraphQL API; without a remote,
        // the instance is Forgejo's default ROOT_URL (forgejo.org config cheat sheet:
        // `http://localhost:3000/`).
        (Some(host), true) => (format!("https://{host}"), format!("https://{host}/api/v1"), String::new()),
        (None, true) => ("http://localhost:3000".to_owned(), "http://localhost:3000/api/v1".to_owned(), String::new()),
        (Some(host), false) if host != "github.com" => {
            (format!("https://{host}"), format!("https://{host}/api/v3"), format!("https://{host}/api/graphql"))
        }
        _ => ("https://github.com".to_owned(), "https://api.github.com".to_owned(), "https://api.github.com/graphql".to_owned()),
    };
    let actor = flags
        .actor
        .or_else(|| git(repo, &["config", "user.name"]))
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_default();
    let mut event = flags.payload.unwrap_or_else(|| json!({}));
    // A dispatch event's inputs are what GitHub accepted: every declared input, defaults
    // filled in, as strings.
    if !flags.inputs.is_empty()
        && let Value::Object(payload) = &mut event
    {
        payload.insert("inputs".to_owned(), Value::Object(flags.inputs.clone()));
    }
    let run_id = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(1);
    json!({
        "event_name": flags.name.unwrap_or_else(|| "push".to_owned()),
        "event": event,
        "sha": sha,
        "ref": git_ref,
        "ref_name": ref_name,
        "ref_type": if git_ref.starts_with("refs/heads/") { "branch" } else { "" },
        "base_ref": "",
        "head_ref": "",
        "repository": repository,
        "repository_owner": owner,
        "actor": actor,
        "triggering_actor": actor,
        "workflow": workflow,
        "run_id": run_id.to_string(),
        "run_number": "1",
        "run_attempt": "1",
        "server_url": server_url,
        "api_url": api_url,
        "graphql_url": graphql_url,
        "workspace": "",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_urls_give_the_host_and_owner_and_name() {
        let github = Some(("github.com".to_owned(), "octo/repo".to_owned()));
        assert_eq!(parse_remote("git@github.com:octo/repo.git"), github);
        assert_eq!(parse_remote("https://github.com/octo/repo"), github);
        assert_eq!(parse_remote("https://user:tok@github.com/octo/repo.git/"), github);
        assert_eq!(parse_remote("ssh://git@code.example:2222/team/tool.git"), Some(("code.example".into(), "team/tool".into())));
        assert_eq!(parse_remote("/srv/git/lonely"), None);
    }
}
