//! What a step's `uses:` names: an action in the job's own checkout, an action in a
//! repository on a forge, or a container image.

/// An action reference, as `uses:` writes it.
///
/// ```
/// use solstice_workflow::ActionReference;
///
/// let remote: ActionReference = "dtolnay/rust-toolchain@stable".parse()?;
/// assert_eq!(remote, ActionReference::Remote {
///     base_url: None,
///     owner: "dtolnay".into(),
///     repo: "rust-toolchain".into(),
///     path: None,
///     git_ref: "stable".into(),
/// });
/// let nested: ActionReference = "https://code.forgejo.org/actions/cache/restore@v4".parse()?;
/// assert!(matches!(nested, ActionReference::Remote { base_url: Some(ref url), path: Some(ref p), .. }
///     if url == "https://code.forgejo.org" && p == "restore"));
/// assert_eq!("./.github/actions/build".parse::<ActionReference>()?,
///     ActionReference::Local { path: "./.github/actions/build".into() });
/// assert!("setup-node".parse::<ActionReference>().is_err());
/// # Ok::<(), solstice_workflow::ActionReferenceError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ActionReference {
    /// `./path`: a directory of the job's workspace (usually its checkout), holding an
    /// `action.yml` or `action.yaml`.
    Local {
        /// The path as written, starting with `./`.
        path: String,
    },
    /// `owner/repo[/path]@ref`, or a full URL `https://host/owner/repo[/path]@ref` (Forgejo's
    /// and Gitea's dialect).
    Remote {
        /// `https://host` (scheme and host, no trailing `/`) when `uses:` is a full URL;
        /// `None` for the forge's default (github.com for GitHub, the instance's default
        /// actions URL for Forgejo).
        base_url: Option<String>,
        /// The repository's owner.
        owner: String,
        /// The repository's name.
        repo: String,
        /// The directory of the action inside the repository, when not at its root.
        path: Option<String>,
        /// The branch, tag or commit after `@`.
        git_ref: String,
    },
    /// `docker://image`: a container action, which Solstice CI does not run.
    Docker {
        /// The image after `docker://`.
        image: String,
    },
}

/// Why a `uses:` value names no action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{uses}' is not a valid action reference: {reason}")]
pub struct ActionReferenceError {
    /// The value as written.
    pub uses: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl ActionReference {
    /// The action's repository as `owner/repo`, for a remote action.
    pub fn repository(&self) -> Option<String> {
        match self {
            Self::Remote { owner, repo, .. } => Some(format!("{owner}/{repo}")),
            _ => None,
        }
    }
}

impl std::str::FromStr for ActionReference {
    type Err = ActionReferenceError;

    fn from_str(uses: &str) -> Result<Self, Self::Err> {
        let error = |reason| ActionReferenceError { uses: uses.to_owned(), reason };
        if let Some(image) = uses.strip_prefix("docker://") {
            if image.is_empty() {
                return Err(error("`docker://` names no image"));
            }
            return Ok(Self::Docker { image: image.to_owned() });
        }
        if uses.starts_with("./") || uses == "." {
            return Ok(Self::Local { path: uses.to_owned() });
        }
        let (location, git_ref) = uses.rsplit_once('@').ok_or_else(|| error("a remote action needs `@<ref>`"))?;
        if git_ref.is_empty() {
            return Err(error("the ref after `@` is empty"));
        }
        let (base_url, path) = match location.split_once("://") {
            Some((scheme, rest)) if scheme == "https" || scheme == "http" => {
                let (host, path) = rest.split_once('/').ok_or_else(|| error("the URL names no repository"))?;
                if host.is_empty() {
                    return Err(error("the URL has no host"));
                }
                (Some(format!("{scheme}://{host}")), path)
            }
            Some(_) => return Err(error("only `https://` and `http://` URLs name actions")),
            None => (None, location),
        };
        let mut parts = path.split('/');
        let (Some(owner), Some(repo)) = (parts.next(), parts.next()) else {
            return Err(error("a remote action is `owner/repo[/path]@ref`"));
        };
        let rest: Vec<&str> = parts.collect();
        if owner.is_empty() || repo.is_empty() || rest.iter().any(|p| p.is_empty() || *p == "..") {
            return Err(error("a remote action is `owner/repo[/path]@ref`"));
        }
        Ok(Self::Remote {
            base_url,
            owner: owner.to_owned(),
            repo: repo.to_owned(),
            path: (!rest.is_empty()).then(|| rest.join("/")),
            git_ref: git_ref.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_references_split_into_their_parts() {
        let parsed: ActionReference = "taiki-e/install-action@v2".parse().expect("valid");
        assert_eq!(parsed.repository().as_deref(), Some("taiki-e/install-action"));
        let parsed: ActionReference = "actions/cache/save@0c45773b623bea8c8e75f6c82b208c3cf94ea4f9".parse().expect("valid");
        assert!(matches!(parsed, ActionReference::Remote { path: Some(ref p), ref git_ref, .. } if p == "save" && git_ref.len() == 40));
        let parsed: ActionReference = "http://forge.local:3000/org/act/sub/dir@main".parse().expect("valid");
        assert!(matches!(parsed, ActionReference::Remote { base_url: Some(ref u), path: Some(ref p), .. } if u == "http://forge.local:3000" && p == "sub/dir"));
    }

    #[test]
    fn malformed_references_say_why() {
        for bad in ["actions/checkout", "actions@v1", "a//b@v1", "a/b@", "ftp://h/a/b@v1", "https:///a/b@v1", "a/b/../c@v1", "docker://"] {
            assert!(bad.parse::<ActionReference>().is_err(), "{bad} must be refused");
        }
        let e = "setup-node".parse::<ActionReference>().expect_err("no ref");
        assert_eq!(e.to_string(), "'setup-node' is not a valid action reference: a remote action needs `@<ref>`");
    }

    #[test]
    fn local_and_docker_references_keep_what_follows() {
        assert_eq!("docker://alpine:3".parse(), Ok(ActionReference::Docker { image: "alpine:3".into() }));
        assert_eq!("./".parse(), Ok(ActionReference::Local { path: "./".into() }));
    }
}
