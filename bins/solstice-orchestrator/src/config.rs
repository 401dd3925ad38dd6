//! The orchestrator's configuration: a TOML file, then `SOLSTICE_*` environment
//! overrides, then checks. The schema and the loader are shared with `solstice`
//! (`config check`, `serve`) in `solstice-config`.

use std::path::Path;

pub use solstice_config::{ConfigError, OrchestratorConfig};
use solstice_config::{ORCHESTRATOR_ENV, load as load_file};

/// Loads the file (if any), then applies the [`ORCHESTRATOR_ENV`] overrides, then
/// checks it. An empty `name` becomes `hostname` (the binary passes `$HOSTNAME`), else
/// `orchestrator`.
pub fn load(
    path: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
    hostname: Option<String>,
) -> Result<OrchestratorConfig, ConfigError> {
    let mut config = load_file::<OrchestratorConfig>(path, ORCHESTRATOR_ENV, env)?.check(OrchestratorConfig::check)?.into_value();
    if config.name.is_empty() {
        config.name = hostname.filter(|h| !h.is_empty()).unwrap_or_else(|| "orchestrator".into());
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_line_and_column() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("o.toml");
        std::fs::write(&path, "capacity = 2\n\n[queue]\nurll = \"x\"\n").expect("write");
        let text = load(Some(&path), |_| None, None).expect_err("unknown key").to_string();
        assert!(text.starts_with(&format!("{}:4:1: ", path.display())), "{text}");
        assert!(text.contains("unknown field `urll`"), "{text}");
    }

    #[test]
    fn environment_overrides_win_and_are_checked() {
        let env = |name: &str| match name {
            "SOLSTICE_CAPACITY" => Some("8".to_owned()),
            "SOLSTICE_QUEUE_URL" => Some("amqp://127.0.0.1".to_owned()),
            "SOLSTICE_HOST_LABELS" => Some("host, linux-host".to_owned()),
            _ => None,
        };
        let config = load(None, env, Some("ci-1".into())).expect("load");
        assert_eq!((config.capacity, config.queue.url.as_str()), (8, "amqp://127.0.0.1"));
        assert_eq!(config.host_labels, ["host", "linux-host"]);
        assert_eq!(config.name, "ci-1");
        let bad = load(None, |n| (n == "SOLSTICE_CAPACITY").then(|| "many".to_owned()), None).expect_err("bad number");
        assert!(bad.to_string().contains("SOLSTICE_CAPACITY"));
        let zero = load(None, |n| (n == "SOLSTICE_CAPACITY").then(|| "0".to_owned()), None).expect_err("zero");
        assert!(zero.to_string().contains("at least 1"));
        assert_eq!(load(None, |_| None, None).expect("defaults").name, "orchestrator");
    }
}
