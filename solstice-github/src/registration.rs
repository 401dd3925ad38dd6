//! Registering a runner with a repository or organisation, and removing it.

use std::sync::Arc;

use reqwest::Method;
use serde_json::{Value, json};
use solstice_core::Secret;

use crate::http::{Auth, Call, Http, list};
use crate::json::{bool_field, field, i64_field, property_str, str_field};
use crate::protocol::location::{Locations, ids};
use crate::store::{CredentialData, OAuthData, RunnerConfig, RunnerSettings};
use crate::{GithubError, RUNNER_VERSION, RunnerKey};

/// What `register` needs to know.
#[derive(Debug, Clone, Default)]
pub struct RegistrationConfig {
    /// `https://github.com/OWNER` or `https://github.com/OWNER/REPO` (or the GHES
    /// equivalent).
    pub url: String,
    /// The registration token from the repository's or organisation's settings.
    pub token: Secret,
    /// The runner's name; must be unique in the runner group.
    pub name: String,
    /// Labels besides the default `self-hosted`, OS and architecture labels.
    pub labels: Vec<String>,
    /// Leave out the default labels (at least one label must remain).
    pub no_default_labels: bool,
    /// Replace a runner of the same name instead of failing.
    pub replace: bool,
    /// Register for a single job.
    pub ephemeral: bool,
    /// The runner group; the default group when `None`.
    pub runner_group: Option<String>,
    /// The REST API base, when it does not follow from `url` (tests, proxies).
    pub api_url: Option<String>,
}

/// The REST API base for a GitHub URL: `https://api.github.com` for github.com and
/// `*.ghe.com`, `{origin}/api/v3` for GitHub Enterprise Server (and anything else).
///
/// # Errors
/// [`GithubError::Config`] if `url` is not an http(s) URL.
pub fn api_url_for(url: &str) -> Result<String, GithubError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| GithubError::Config(format!("`{url}` is not a URL")))?;
    let host = parsed.host_str().ok_or_else(|| GithubError::Config(format!("`{url}` has no host")))?;
    if host.eq_ignore_ascii_case("github.com") || host.to_ascii_lowercase().ends_with(".ghe.com") {
        return Ok(format!("{}://api.{host}", parsed.scheme()));
    }
    let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
    Ok(format!("{}://{host}{port}/api/v3", parsed.scheme()))
}

/// The default labels: `self-hosted`, the OS and the architecture, as GitHub names them.
pub fn default_labels() -> Vec<String> {
    let os = match std::env::consts::OS {
        "macos" => "macOS",
        "windows" => "Windows",
        _ => "Linux",
    };
    let arch = match std::env::consts::ARCH {
        "x86" => "X86",
        "aarch64" => "ARM64",
        "arm" => "ARM",
        _ => "X64",
    };
    vec!["self-hosted".to_owned(), os.to_owned(), arch.to_owned()]
}

/// What `runner-registration` answered.
struct Tenant {
    /// The tenant URL and token (absent in the runner-admin flow).
    server: Option<(String, Secret)>,
    /// The service wants the runner-admin ("v2") registration.
    use_v2_flow: bool,
}

/// Exchanges a registration (or removal) token for the tenant URL and a tenant token, or
/// learns that the runner-admin flow is to be used.
async fn runner_registration(http: &Http, api: &str, url: &str, token: &Secret, event: &str) -> Result<Tenant, GithubError> {
    let call = Call::new(Method::POST, crate::json::join_url(api, "actions/runner-registration"), "GitHub API")
        .json(json!({"url": url, "runner_event": event}));
    let reply = http
        .send(&call, &Auth::Remote(token.clone()))
        .await?
        .ok_or(GithubError::Protocol { service: "GitHub API", what: "an empty registration answer".to_owned() })?;
    let use_v2_flow = bool_field(&reply, "use_v2_flow") == Some(true);
    let server = str_field(&reply, "url").filter(|u| !u.is_empty());
    let tenant_token = str_field(&reply, "token").filter(|t| !t.is_empty());
    if use_v2_flow {
        return Ok(Tenant { server: server.zip(tenant_token.map(Secret::new)), use_v2_flow });
    }
    let schema = str_field(&reply, "token_schema").unwrap_or_default();
    if !schema.eq_ignore_ascii_case("OAuthAccessToken") {
        return Err(GithubError::Protocol { service: "GitHub API", what: format!("token schema `{schema}`") });
    }
    match (server, tenant_token) {
        (Some(server), Some(t)) => Ok(Tenant { server: Some((server, Secret::new(t))), use_v2_flow }),
        _ => Err(GithubError::Protocol { service: "GitHub API", what: "no tenant URL or token".to_owned() }),
    }
}

/// The REST scope of a runner URL, as the official runner maps it: one path segment is an
/// organisation, two a repository, `enterprises/NAME` an enterprise.
pub(crate) fn scope_path(url: &str) -> Result<String, GithubError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| GithubError::Config(format!("`{url}` is not a URL")))?;
    let segments: Vec<&str> = parsed.path_segments().map(|s| s.filter(|s| !s.is_empty()).collect()).unwrap_or_default();
    match segments.as_slice() {
        [org] => Ok(format!("orgs/{org}")),
        ["enterprises", name] => Ok(format!("enterprises/{name}")),
        [owner, repo] => Ok(format!("repos/{owner}/{repo}")),
        _ => Err(GithubError::Config(format!("`{url}` names no organisation, repository or enterprise"))),
    }
}

/// The public key as the runner-admin API takes it: .NET's `RSAKeyValue` XML.
fn public_key_xml(key: &RunnerKey) -> String {
    let p = key.public_params();
    format!("<RSAKeyValue><Modulus>{}</Modulus><Exponent>{}</Exponent></RSAKeyValue>", p.modulus, p.exponent)
}

/// The runner-admin ("v2") registration: runner group, name check and `runners/register`
/// on the REST API with the registration token; the runner then talks to the broker
/// directly.
async fn register_v2(
    http: &Http,
    api: &str,
    config: &RegistrationConfig,
    key: RunnerKey,
    labels: Vec<String>,
    tenant: Option<String>,
) -> Result<RunnerConfig, GithubError> {
    const API: &str = "GitHub API";
    let auth = Auth::Remote(config.token.clone());
    let scope = scope_path(&config.url)?;
    let groups = http.send(&Call::new(Method::GET, crate::json::join_url(api, &format!("{scope}/actions/runner-groups")), API), &auth).await?;
    let groups = groups.as_ref().and_then(|g| field(g, "runner_groups")).and_then(Value::as_array).cloned().unwrap_or_default();
    let group = groups
        .iter()
        .filter(|g| bool_field(g, "is_hosted") != Some(true))
        .find(|g| match &config.runner_group {
            Some(name) => str_field(g, "name").is_some_and(|n| n.eq_ignore_ascii_case(name)),
            None => bool_field(g, "default") == Some(true),
        })
        .ok_or_else(|| GithubError::Config(match &config.runner_group {
            Some(name) => format!("there is no runner group named `{name}`"),
            None => "the service lists no default runner group".to_owned(),
        }))?;
    let group_id = i64_field(group, "id").unwrap_or(1);
    let existing = http
        .send(
            &Call::new(Method::GET, crate::json::join_url(api, &format!("{scope}/actions/runners")), API).query("name", config.name.clone()),
            &auth,
        )
        .await?;
    let existing = existing
        .as_ref()
        .and_then(|e| field(e, "runners"))
        .and_then(Value::as_array)
        .and_then(|rs| rs.iter().find(|r| str_field(r, "name").is_some_and(|n| n.eq_ignore_ascii_case(&config.name))))
        .and_then(|r| i64_field(r, "id"));
    let mut body = json!({
        "url": config.url,
        "group_id": group_id,
        "name": config.name,
        "version": RUNNER_VERSION,
        "updates_disabled": true,
        "ephemeral": config.ephemeral,
        "labels": labels.iter().enumerate().map(|(i, l)| json!({
            "name": l, "type": if i < 3 && !config.no_default_labels { "system" } else { "user" }
        })).collect::<Vec<_>>(),
        "public_key": public_key_xml(&key),
    });
    match existing {
        Some(id) if config.replace => {
            body["runner_id"] = json!(id);
            body["replace"] = json!(true);
        }
        Some(_) => {
            return Err(GithubError::Config(format!(
                "a runner named `{}` exists already; pass --replace to replace it",
                config.name
            )));
        }
        None => {}
    }
    let reply = http
        .send(&Call::new(Method::POST, crate::json::join_url(api, "actions/runners/register"), API).json(body), &auth)
        .await?
        .ok_or(GithubError::Protocol { service: API, what: "an empty runner".to_owned() })?;
    let protocol = |what: &str| GithubError::Protocol { service: API, what: what.to_owned() };
    let authorization = field(&reply, "authorization").ok_or_else(|| protocol("no authorization in the runner"))?;
    let nonempty = |name: &str| str_field(authorization, name).filter(|v| !v.is_empty());
    let (Some(client_id), Some(authorization_url), Some(broker)) =
        (nonempty("client_id"), nonempty("authorization_url"), nonempty("server_url"))
    else {
        return Err(protocol("no OAuth client id, authorization URL or broker URL"));
    };
    let legacy = nonempty("legacy_authorization_url");
    Ok(RunnerConfig {
        settings: RunnerSettings {
            agent_id: i64_field(&reply, "id").ok_or_else(|| protocol("no runner id"))?,
            agent_name: str_field(&reply, "name").unwrap_or_else(|| config.name.clone()),
            pool_id: group_id,
            pool_name: str_field(group, "name").unwrap_or_default(),
            server_url: tenant.unwrap_or_default(),
            git_hub_url: config.url.clone(),
            work_folder: "_work".to_owned(),
            disable_update: true,
            ephemeral: config.ephemeral,
            use_v2_flow: true,
            server_url_v2: Some(broker),
            use_runner_admin_flow: true,
            labels,
        },
        credentials: CredentialData {
            scheme: "OAuth".to_owned(),
            data: OAuthData {
                client_id,
                authorization_url_v2: legacy.is_some().then(|| authorization_url.clone()),
                authorization_url: legacy.unwrap_or(authorization_url),
                // The runner-admin answer carries no agent properties; the official
                // runner treats a missing `RequireFipsCryptography` as true.
                require_fips_cryptography: "True".to_owned(),
                oauth_endpoint_url: None,
            },
        },
        key,
    })
}

/// Registers a runner: tenant token, runner group, a fresh RSA key, and the agent with
/// its labels. The result is ready to be saved with [`crate::RunnerStore::save`].
///
/// # Errors
/// [`GithubError`] from any of the calls; a runner of the same name without
/// `replace` is [`GithubError::Config`].
pub async fn register(config: &RegistrationConfig) -> Result<RunnerConfig, GithubError> {
    let key = tokio::task::spawn_blocking(RunnerKey::generate)
        .await
        .map_err(|_| GithubError::Crypto("generate an RSA key"))??;
    register_with_key(config, key).await
}

/// [`register`] with a key the caller made (tests reuse one key).
///
/// # Errors
/// As [`register`].
pub async fn register_with_key(config: &RegistrationConfig, key: RunnerKey) -> Result<RunnerConfig, GithubError> {
    let mut labels = if config.no_default_labels { Vec::new() } else { default_labels() };
    for label in &config.labels {
        if !labels.iter().any(|l| l.eq_ignore_ascii_case(label)) {
            labels.push(label.clone());
        }
    }
    if labels.is_empty() {
        return Err(GithubError::Config("a runner needs at least one label".to_owned()));
    }
    let http = Http::new()?;
    let api = match &config.api_url {
        Some(api) => api.clone(),
        None => api_url_for(&config.url)?,
    };
    let tenant = runner_registration(&http, &api, &config.url, &config.token, "register").await?;
    let (server_url, tenant_token) = match tenant.server {
        Some(server) if !tenant.use_v2_flow => server,
        other => {
            tracing::info!("GitHub asked for the runner-admin registration");
            return register_v2(&http, &api, config, key, labels, other.map(|(url, _)| url)).await;
        }
    };
    let auth = Auth::Bearer(tenant_token);
    let locations = Locations::fetch(&http, &server_url, &Auth::None).await?;

    // The runner group.
    let pools = http
        .send(&Call::new(Method::GET, locations.url(ids::POOLS, &[]), "tenant").query("poolType", "Automation").api("5.1-preview.1"), &auth)
        .await?;
    let pools = list(&pools);
    let pool = pools
        .iter()
        .filter(|p| bool_field(p, "isHosted") != Some(true))
        .find(|p| match &config.runner_group {
            Some(name) => str_field(p, "name").is_some_and(|n| n.eq_ignore_ascii_case(name)),
            None => bool_field(p, "isInternal") == Some(true),
        })
        .ok_or_else(|| GithubError::Config(match &config.runner_group {
            Some(name) => format!("there is no runner group named `{name}`"),
            None => "the service lists no default runner group".to_owned(),
        }))?;
    let pool_id = i64_field(pool, "id").unwrap_or_default();
    let pool_name = str_field(pool, "name").unwrap_or_default();

    // An existing runner of the same name.
    let existing = http
        .send(
            &Call::new(Method::GET, locations.url(ids::AGENTS, &[("poolId", "0")]), "tenant")
                .query("agentName", config.name.clone())
                .query("includeCapabilities", "false")
                .api("6.0-preview.2"),
            &auth,
        )
        .await?;
    let existing = list(&existing).into_iter().find(|a| str_field(a, "name").is_some_and(|n| n.eq_ignore_ascii_case(&config.name)));

    let public = key.public_params();
    let agent = json!({
        "id": existing.as_ref().and_then(|a| i64_field(a, "id")).unwrap_or(0),
        "name": config.name,
        "version": RUNNER_VERSION,
        "osDescription": format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        "maxParallelism": 1,
        "ephemeral": config.ephemeral,
        "disableUpdate": true,
        "provisioningState": "Provisioned",
        "authorization": {"publicKey": {"exponent": public.exponent, "modulus": public.modulus}},
        "labels": labels.iter().enumerate().map(|(i, l)| json!({
            "id": 0, "name": l, "type": if i < 3 && !config.no_default_labels { "system" } else { "user" }
        })).collect::<Vec<_>>(),
    });
    let reply = match &existing {
        Some(found) if config.replace => {
            let id = i64_field(found, "id").unwrap_or_default().to_string();
            let pool = i64_field(found, "poolId").unwrap_or(pool_id).to_string();
            let url = locations.url(ids::AGENTS, &[("poolId", &pool), ("agentId", &id)]);
            http.send(&Call::new(Method::PUT, url, "tenant").api("6.0-preview.2").json(agent), &auth).await?
        }
        Some(_) => {
            return Err(GithubError::Config(format!(
                "a runner named `{}` exists already; pass --replace to replace it",
                config.name
            )));
        }
        None => {
            let url = locations.url(ids::AGENTS, &[("poolId", &pool_id.to_string())]);
            http.send(&Call::new(Method::POST, url, "tenant").api("6.0-preview.2").json(agent), &auth).await?
        }
    };
    let reply = reply.ok_or(GithubError::Protocol { service: "tenant", what: "an empty agent".to_owned() })?;
    agent_to_config(&reply, config, key, labels, server_url, pool_id, pool_name)
}

fn agent_to_config(
    reply: &Value,
    config: &RegistrationConfig,
    key: RunnerKey,
    labels: Vec<String>,
    server_url: String,
    pool_id: i64,
    pool_name: String,
) -> Result<RunnerConfig, GithubError> {
    let protocol = |what: &str| GithubError::Protocol { service: "tenant", what: what.to_owned() };
    if bool_field(reply, "ephemeral").unwrap_or(false) != config.ephemeral {
        return Err(protocol("the service does not support ephemeral runners"));
    }
    if !bool_field(reply, "disableUpdate").unwrap_or(true) {
        return Err(protocol("the service does not support disabling updates"));
    }
    let authorization = field(reply, "authorization").ok_or_else(|| protocol("no authorization in the agent"))?;
    let client_id = str_field(authorization, "clientId").filter(|c| !c.is_empty());
    let authorization_url = str_field(authorization, "authorizationUrl").filter(|c| !c.is_empty());
    let (Some(client_id), Some(authorization_url)) = (client_id, authorization_url) else {
        return Err(protocol("no OAuth client id or authorization URL"));
    };
    let empty = Value::Null;
    let properties = field(reply, "properties").unwrap_or(&empty);
    // The official runner treats a missing property as "FIPS required".
    let fips = property_str(properties, "RequireFipsCryptography").map(|v| v.eq_ignore_ascii_case("true")).unwrap_or(true);
    let use_v2_flow = property_str(properties, "UseV2Flow").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let server_url_v2 = property_str(properties, "ServerUrlV2").filter(|s| !s.is_empty());
    Ok(RunnerConfig {
        settings: RunnerSettings {
            agent_id: i64_field(reply, "id").ok_or_else(|| protocol("no agent id"))?,
            agent_name: str_field(reply, "name").unwrap_or_else(|| config.name.clone()),
            pool_id,
            pool_name,
            server_url,
            git_hub_url: config.url.clone(),
            work_folder: "_work".to_owned(),
            disable_update: true,
            ephemeral: config.ephemeral,
            use_v2_flow: use_v2_flow && server_url_v2.is_some(),
            server_url_v2,
            use_runner_admin_flow: false,
            labels,
        },
        credentials: CredentialData {
            scheme: "OAuth".to_owned(),
            data: OAuthData {
                client_id,
                authorization_url,
                require_fips_cryptography: if fips { "True" } else { "False" }.to_owned(),
                oauth_endpoint_url: None,
                authorization_url_v2: None,
            },
        },
        key,
    })
}

/// Removes a runner's registration at GitHub, using a removal token (from the
/// repository's settings or `POST …/actions/runners/remove-token`). The local files are
/// left to the caller.
///
/// # Errors
/// [`GithubError`] from the calls; a runner GitHub no longer knows counts as removed.
pub async fn unregister(config: &RunnerConfig, removal_token: &Secret, api_url: Option<&str>) -> Result<(), GithubError> {
    let http = Http::new()?;
    let api = match api_url {
        Some(api) => api.to_owned(),
        None => api_url_for(&config.settings.git_hub_url)?,
    };
    if config.settings.use_runner_admin_flow {
        let scope = scope_path(&config.settings.git_hub_url)?;
        let url = crate::json::join_url(&api, &format!("{scope}/actions/runners/{}", config.settings.agent_id));
        return match http.send(&Call::new(Method::DELETE, url, "GitHub API"), &Auth::Remote(removal_token.clone())).await {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(e),
        };
    }
    let tenant = runner_registration(&http, &api, &config.settings.git_hub_url, removal_token, "remove").await?;
    let (server_url, tenant_token) = tenant
        .server
        .ok_or(GithubError::Protocol { service: "GitHub API", what: "no tenant URL or token".to_owned() })?;
    let locations = Locations::fetch(&http, &server_url, &Auth::None).await?;
    let url = locations.url(
        ids::AGENTS,
        &[("poolId", &config.settings.pool_id.to_string()), ("agentId", &config.settings.agent_id.to_string())],
    );
    match http.send(&Call::new(Method::DELETE, url, "tenant").api("6.0-preview.2"), &Auth::Bearer(tenant_token)).await {
        Ok(_) => Ok(()),
        Err(e) if e.status() == Some(404) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes the runner with its own OAuth credentials (used after an ephemeral job, when
/// no removal token is at hand).
pub(crate) async fn delete_self(auth: &Arc<crate::http::RunnerAuth>, settings: &RunnerSettings) -> Result<(), GithubError> {
    if settings.use_runner_admin_flow {
        // The runner-admin API takes only registration tokens; GitHub deletes a runner
        // registered as ephemeral itself once its job is complete.
        if !settings.ephemeral {
            tracing::warn!("a runner-admin registration can only be removed with a removal token; it stays");
        }
        return Ok(());
    }
    let locations = Locations::fetch(auth.http(), &settings.server_url, &Auth::None).await?;
    let url = locations.url(
        ids::AGENTS,
        &[("poolId", &settings.pool_id.to_string()), ("agentId", &settings.agent_id.to_string())],
    );
    match auth.send(&Call::new(Method::DELETE, url, "tenant").api("6.0-preview.2")).await {
        Ok(_) => Ok(()),
        Err(e) if e.status() == Some(404) || e.is_auth() => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_urls_follow_the_official_runner() {
        assert_eq!(api_url_for("https://github.com/o/r").ok().as_deref(), Some("https://api.github.com"));
        assert_eq!(api_url_for("https://acme.ghe.com/o").ok().as_deref(), Some("https://api.acme.ghe.com"));
        assert_eq!(api_url_for("http://127.0.0.1:8080/o/r").ok().as_deref(), Some("http://127.0.0.1:8080/api/v3"));
        assert!(matches!(api_url_for("not a url"), Err(GithubError::Config(_))));
    }

    #[test]
    fn scopes_follow_the_official_runner() {
        assert_eq!(scope_path("https://github.com/octo").ok().as_deref(), Some("orgs/octo"));
        assert_eq!(scope_path("https://github.com/octo/demo/").ok().as_deref(), Some("repos/octo/demo"));
        assert_eq!(scope_path("https://ghes.example/enterprises/acme").ok().as_deref(), Some("enterprises/acme"));
        assert!(matches!(scope_path("https://github.com/"), Err(GithubError::Config(_))));
    }
}
