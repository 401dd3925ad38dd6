//! The runner's local files: `.runner`, `.credentials`, `.credentials_rsaparams`.
//!
//! The same three files, with the same camelCase JSON, as the official runner writes, so
//! either can read the other's. Every file is written with mode 0600, through a temporary
//! file renamed into place.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{GithubError, RunnerKey};

const RUNNER_FILE: &str = ".runner";
const CREDENTIALS_FILE: &str = ".credentials";
const KEY_FILE: &str = ".credentials_rsaparams";

/// What registration stored about the runner (the `.runner` file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct RunnerSettings {
    /// The agent id GitHub gave the runner.
    #[serde(alias = "AgentId")]
    pub agent_id: i64,
    /// The runner's name.
    #[serde(alias = "AgentName")]
    pub agent_name: String,
    /// The runner group (agent pool) id.
    #[serde(alias = "PoolId")]
    pub pool_id: i64,
    /// The runner group name.
    #[serde(alias = "PoolName")]
    pub pool_name: String,
    /// The tenant ("pipelines") base URL.
    #[serde(alias = "ServerUrl")]
    pub server_url: String,
    /// The repository or organisation URL the runner was registered for.
    #[serde(alias = "GitHubUrl")]
    pub git_hub_url: String,
    /// The work folder (unused by Solstice; kept for compatibility).
    #[serde(alias = "WorkFolder")]
    pub work_folder: String,
    /// The runner refuses self-updates.
    #[serde(alias = "DisableUpdate")]
    pub disable_update: bool,
    /// One job, then the registration is gone.
    #[serde(alias = "Ephemeral")]
    pub ephemeral: bool,
    /// Sessions and messages go to the broker directly.
    #[serde(alias = "UseV2Flow")]
    pub use_v2_flow: bool,
    /// The broker URL for `use_v2_flow` runners.
    #[serde(alias = "ServerUrlV2")]
    pub server_url_v2: Option<String>,
    /// Registered through the runner-admin API (`use_v2_flow` at registration): removal
    /// goes through the REST API, not the tenant.
    #[serde(alias = "UseRunnerAdminFlow")]
    pub use_runner_admin_flow: bool,
    /// The labels the runner registered with (Solstice's own addition).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

/// How the runner gets OAuth tokens (the `.credentials` file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CredentialData {
    /// Always `OAuth`.
    #[serde(alias = "Scheme")]
    pub scheme: String,
    /// The OAuth client settings.
    #[serde(alias = "Data")]
    pub data: OAuthData,
}

/// The OAuth client settings inside [`CredentialData`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct OAuthData {
    /// The client id (the JWT's `sub` and `iss`).
    #[serde(alias = "ClientId")]
    pub client_id: String,
    /// The token endpoint (the JWT's `aud`).
    #[serde(alias = "AuthorizationUrl")]
    pub authorization_url: String,
    /// `"True"` when assertions must be PS256 and session keys SHA-256.
    #[serde(alias = "RequireFipsCryptography")]
    pub require_fips_cryptography: String,
    /// Where tokens are requested if not at `authorization_url`.
    #[serde(alias = "OauthEndpointUrl", skip_serializing_if = "Option::is_none")]
    pub oauth_endpoint_url: Option<String>,
    /// The runner-admin token endpoint, kept when registration also named a legacy one
    /// (which is then `authorization_url`). Stored for the official runner's auth
    /// migration; Solstice uses `authorization_url`.
    #[serde(alias = "AuthorizationUrlV2", skip_serializing_if = "Option::is_none")]
    pub authorization_url_v2: Option<String>,
}

impl OAuthData {
    /// Whether the service requires FIPS cryptography (PS256, OAEP-SHA-256).
    pub fn fips(&self) -> bool {
        self.require_fips_cryptography.eq_ignore_ascii_case("true")
    }
}

/// A registered runner: settings, OAuth client data and the private key.
#[derive(Debug)]
pub struct RunnerConfig {
    /// The `.runner` file.
    pub settings: RunnerSettings,
    /// The `.credentials` file.
    pub credentials: CredentialData,
    /// The key from `.credentials_rsaparams`.
    pub key: RunnerKey,
}

/// The directory holding a runner's three files.
#[derive(Debug, Clone)]
pub struct RunnerStore {
    dir: PathBuf,
}

impl RunnerStore {
    /// A store in `dir` (created on save).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a runner is registered here (`.runner` exists).
    pub fn exists(&self) -> bool {
        self.dir.join(RUNNER_FILE).exists()
    }

    /// Reads the three files.
    ///
    /// # Errors
    /// [`GithubError::Io`] if a file cannot be read, [`GithubError::Config`] if one is
    /// invalid.
    pub fn load(&self) -> Result<RunnerConfig, GithubError> {
        let read = |name: &str| -> Result<String, GithubError> {
            let path = self.dir.join(name);
            let text = std::fs::read_to_string(&path).map_err(|e| GithubError::io(&path, e))?;
            Ok(text.trim_start_matches('\u{feff}').to_owned())
        };
        let settings: RunnerSettings = serde_json::from_str(&read(RUNNER_FILE)?)
            .map_err(|e| GithubError::Config(format!("{RUNNER_FILE}: {e}")))?;
        let credentials: CredentialData = serde_json::from_str(&read(CREDENTIALS_FILE)?)
            .map_err(|e| GithubError::Config(format!("{CREDENTIALS_FILE}: {e}")))?;
        if !credentials.scheme.eq_ignore_ascii_case("OAuth") {
            return Err(GithubError::Config(format!("{CREDENTIALS_FILE}: scheme `{}` is not OAuth", credentials.scheme)));
        }
        let key = RunnerKey::from_rsaparams_json(&read(KEY_FILE)?)?;
        Ok(RunnerConfig { settings, credentials, key })
    }

    /// Writes the three files with mode 0600.
    ///
    /// # Errors
    /// [`GithubError::Io`] if a file cannot be written.
    pub fn save(&self, config: &RunnerConfig) -> Result<(), GithubError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| GithubError::io(&self.dir, e))?;
        let settings = serde_json::to_string_pretty(&config.settings).map_err(|e| GithubError::Config(e.to_string()))?;
        let credentials =
            serde_json::to_string_pretty(&config.credentials).map_err(|e| GithubError::Config(e.to_string()))?;
        self.write(RUNNER_FILE, settings.as_bytes())?;
        self.write(CREDENTIALS_FILE, credentials.as_bytes())?;
        self.write(KEY_FILE, config.key.to_rsaparams_json()?.expose().as_bytes())
    }

    /// Deletes the three files (missing ones are fine).
    ///
    /// # Errors
    /// [`GithubError::Io`] if a file exists but cannot be removed.
    pub fn remove(&self) -> Result<(), GithubError> {
        for name in [RUNNER_FILE, CREDENTIALS_FILE, KEY_FILE] {
            let path = self.dir.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(GithubError::io(&path, e)),
            }
        }
        Ok(())
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), GithubError> {
        write_private(&self.dir.join(name), bytes)
    }
}

/// Writes `bytes` to `path` with mode 0600, through a temporary file renamed into place.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), GithubError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!("{name}.tmp"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(|e| GithubError::io(&tmp, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // An existing file keeps its mode on open: force 0600.
        file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(|e| GithubError::io(&tmp, e))?;
    }
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(|e| GithubError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| GithubError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RunnerStore::new(dir.path());
        let key = RunnerKey::from_rsaparams_json(
            crate::crypto::tests::test_key().to_rsaparams_json().expect("encode").expose(),
        )
        .expect("key");
        let config = RunnerConfig {
            settings: RunnerSettings { agent_id: 42, agent_name: "r".into(), pool_id: 1, ..Default::default() },
            credentials: CredentialData {
                scheme: "OAuth".into(),
                data: OAuthData { client_id: "c".into(), require_fips_cryptography: "False".into(), ..Default::default() },
            },
            key,
        };
        store.save(&config).expect("save");
        let back = store.load().expect("load");
        assert_eq!(back.settings, config.settings);
        assert_eq!(back.credentials, config.credentials);
        assert_eq!(back.key.public_params(), config.key.public_params());
        #[cfg(unix)]
        for name in [RUNNER_FILE, CREDENTIALS_FILE, KEY_FILE] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(name)).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        store.remove().expect("remove");
        assert!(!store.exists());
    }

    #[test]
    fn official_pascal_case_files_are_read() {
        let s: RunnerSettings =
            serde_json::from_str(r#"{"AgentId": 7, "AgentName": "x", "PoolId": 1, "ServerUrl": "http://t/"}"#).expect("parse");
        assert_eq!((s.agent_id, s.server_url.as_str()), (7, "http://t/"));
    }
}
