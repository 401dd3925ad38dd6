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
    /// `--input NAME=VALUE`, for `workflow_dispatch`.
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
    let (host, repository) = git(repo, &["remote", "get-url", "origin"])
        .and_then(|url| parse_remote(&url))
        .unwrap_or_else(|| {
            let dir = repo.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            ("github.com".to_owned(), dir)
        });
    let owner = repository.split_once('/').map(|(o, _)| o.to_owned()).unwrap_or_default();
    let (server_url, api_url, graphql_url) = if host == "github.com" {
        ("https://github.com".to_owned(), "https://api.github.com".to_owned(), "https://api.github.com/graphql".to_owned())
    } else {
        (format!("https://{host}"), format!("https://{host}/api/v3"), format!("https://{host}/api/graphql"))
    };
    let actor = flags
        .actor
        .or_else(|| git(repo, &["config", "user.name"]))
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_default();
    let mut event = flags.payload.unwrap_or_else(|| json!({}));
    // As act does: inputs given on the command line are the dispatch event's inputs.
    if !flags.inputs.is_empty()
        && let Value::Object(payload) = &mut event
    {
        payload.entry("inputs").or_insert_with(|| Value::Object(flags.inputs.clone()));
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
