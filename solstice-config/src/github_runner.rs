//! The GitHub runner's configuration: read by `solstice-github-runner`, and by
//! `solstice config check`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use crate::orchestrator::check_capacity;
use crate::{BadValue, EnvOverride};

/// The file of `solstice-github-runner` (`--config`, or `SOLSTICE_GITHUB_CONFIG`). Every
/// key has a default, so an empty file is valid: it serves `host` jobs on this host from
/// the in-process queue.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GithubRunnerConfig {
    /// Directory of the credential files. The binary's `--dir` flag (env
    /// `SOLSTICE_GITHUB_DIR`) overrides it. Default: the current directory.
    pub dir: PathBuf,
    /// Queue routes the in-process engine serves. Env `SOLSTICE_GITHUB_LABELS`
    /// (comma-separated). Default: `["host"]`.
    pub labels: Vec<String>,
    /// Jobs run at once. Default: 1.
    pub capacity: usize,
    /// Labels whose jobs run in fresh QEMU VMs, each mapped to an image of
    /// `image_catalog` (or `tiny-linux`, the small guest built from the host's Debian
    /// packages), e.g. `{ omnios = "omnios-r151056" }`. Labels not listed run on this
    /// host; keys that are not in `labels` are not used. Default: none.
    pub vm_images: BTreeMap<String, String>,
    /// The image catalog (TOML, see docs/images.md). Default: none.
    pub image_catalog: Option<PathBuf>,
    /// Where images, the test guest and the KVM verdict are cached. Default:
    /// `~/.cache/solstice`.
    pub cache_dir: Option<PathBuf>,
    /// A RabbitMQ URL (`amqp://…`) to hand jobs to orchestrators on other hosts; none
    /// (or empty) means the in-process queue. Env `SOLSTICE_GITHUB_QUEUE_URL`, where an
    /// empty value removes the file's URL. Default: none.
    #[serde(deserialize_with = "empty_is_none")]
    pub queue_url: Option<String>,
    /// Run jobs in this process too. Turn off when orchestrators elsewhere consume the
    /// RabbitMQ queue. Default: true.
    pub engine: bool,
    /// Where `/metrics` (Prometheus text) and `/healthz` are served; empty: nowhere.
    /// Env `SOLSTICE_GITHUB_METRICS_LISTEN`. Default: `127.0.0.1:9466` (the
    /// orchestrator's default is 9464, the Forgejo runner's 9465).
    pub metrics_listen: String,
}

impl Default for GithubRunnerConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("."),
            labels: vec!["host".into()],
            capacity: 1,
            vm_images: BTreeMap::new(),
            image_catalog: None,
            cache_dir: None,
            queue_url: None,
            engine: true,
            metrics_listen: "127.0.0.1:9466".to_owned(),
        }
    }
}

/// The environment variables that override the GitHub runner's file. (`SOLSTICE_GITHUB_DIR`
/// is not one of them: it is the environment form of the binary's `--dir` flag.)
pub const GITHUB_RUNNER_ENV: &[EnvOverride] = &[
    EnvOverride::text("SOLSTICE_GITHUB_QUEUE_URL", "queue_url"),
    EnvOverride::text("SOLSTICE_GITHUB_METRICS_LISTEN", "metrics_listen"),
    EnvOverride::list("SOLSTICE_GITHUB_LABELS", "labels"),
];

/// `queue_url`: an empty string, from the file or the environment, means none.
fn empty_is_none<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.filter(|url| !url.is_empty()))
}

impl GithubRunnerConfig {
    /// Checks what the schema cannot: a capacity of at least 1, labels for the engine
    /// to serve when it runs, the queue URL's scheme, and someone to run the jobs
    /// (`engine = false` needs a `queue_url` that orchestrators elsewhere consume).
    ///
    /// A `vm_images` key that is not in `labels` is not an error: the runner never uses
    /// it, and a host that narrows `labels` with `SOLSTICE_GITHUB_LABELS` while sharing
    /// its file with others leaves such keys behind. Without an engine `labels` and
    /// `capacity` are not used either, but a capacity of 0 is refused all the same.
    ///
    /// # Errors
    /// The first [`BadValue`]; [`Loaded::check`](crate::Loaded::check) places it.
    pub fn check(&self) -> Result<(), BadValue> {
        check_capacity(self.capacity)?;
        if self.engine && self.labels.is_empty() {
            return Err(BadValue::new("labels", "is empty: the engine would serve no jobs"));
        }
        match &self.queue_url {
            Some(url) if !url.starts_with("amqp://") && !url.starts_with("amqps://") => {
                Err(BadValue::new("queue_url", format!("`{url}` is not an amqp:// or amqps:// URL")))
            }
            None if !self.engine => Err(BadValue::new(
                "engine",
                "is false but there is no queue_url: no process would run the jobs (set queue_url to the RabbitMQ \
                 that orchestrators consume, or turn the engine on)",
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{load, load_str, parse};

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned())
    }

    fn check(text: &str) -> Result<GithubRunnerConfig, crate::ConfigError> {
        parse::<GithubRunnerConfig>(text, "g.toml")?.check(GithubRunnerConfig::check).map(crate::Loaded::into_value)
    }

    #[test]
    fn without_a_file_every_key_has_its_default_and_passes_the_checks() {
        let config = load::<GithubRunnerConfig>(None, GITHUB_RUNNER_ENV, |_| None)
            .and_then(|c| c.check(GithubRunnerConfig::check))
            .expect("defaults are valid")
            .into_value();
        assert_eq!(config, GithubRunnerConfig::default());
        assert_eq!(config.dir, PathBuf::from("."));
        assert_eq!(config.labels, ["host"]);
        assert_eq!(config.capacity, 1);
        assert!(config.vm_images.is_empty() && config.image_catalog.is_none() && config.cache_dir.is_none());
        assert_eq!(config.queue_url, None);
        assert!(config.engine);
        assert_eq!(config.metrics_listen, "127.0.0.1:9466");
        assert_eq!(check("").expect("an empty file is valid"), GithubRunnerConfig::default());
    }

    #[test]
    fn the_deployment_example_parses_and_passes_the_checks() {
        let config = check(include_str!("../../docs/deploy/github-runner.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.dir, PathBuf::from("/var/lib/solstice/github"));
        assert_eq!(config.labels, ["omnios", "host"]);
        assert_eq!(config.vm_images.get("omnios").map(String::as_str), Some("omnios-r151054"));
        assert_eq!(config.metrics_listen, GithubRunnerConfig::default().metrics_listen);
        assert_eq!(config.metrics_listen, "127.0.0.1:9466");
    }

    #[test]
    fn environment_overrides_keep_their_names_and_meanings() {
        let text = "labels = [\"omnios\"]\nqueue_url = \"amqp://file\"\nmetrics_listen = \"127.0.0.1:1\"\n";
        let config = load_str::<GithubRunnerConfig>(
            text,
            "g.toml",
            GITHUB_RUNNER_ENV,
            env(&[
                ("SOLSTICE_GITHUB_LABELS", " omnios , openindiana,,host "),
                ("SOLSTICE_GITHUB_QUEUE_URL", "amqps://env"),
                ("SOLSTICE_GITHUB_METRICS_LISTEN", ""),
            ]),
        )
        .expect("valid")
        .into_value();
        assert_eq!(config.labels, ["omnios", "openindiana", "host"]);
        assert_eq!(config.queue_url.as_deref(), Some("amqps://env"));
        assert_eq!(config.metrics_listen, "", "an empty address turns the endpoint off");
        // An empty queue URL in the environment removes the file's: the in-process queue.
        let config = load_str::<GithubRunnerConfig>(text, "g.toml", GITHUB_RUNNER_ENV, env(&[("SOLSTICE_GITHUB_QUEUE_URL", "")]))
            .expect("valid")
            .into_value();
        assert_eq!(config.queue_url, None);
        assert_eq!(config.labels, ["omnios"]);
        assert_eq!(config.metrics_listen, "127.0.0.1:1");
        // The same for an empty one in the file.
        assert_eq!(check("queue_url = \"\"\n").expect("valid").queue_url, None);
        // A bad value from the environment is blamed on its variable.
        let err = load_str::<GithubRunnerConfig>("", "g.toml", GITHUB_RUNNER_ENV, env(&[("SOLSTICE_GITHUB_QUEUE_URL", "redis://x")]))
            .expect("parses")
            .check(GithubRunnerConfig::check)
            .expect_err("not amqp");
        assert_eq!(err.to_string(), "environment variable SOLSTICE_GITHUB_QUEUE_URL: queue_url: `redis://x` is not an amqp:// or amqps:// URL");
        let err = load_str::<GithubRunnerConfig>("", "g.toml", GITHUB_RUNNER_ENV, env(&[("SOLSTICE_GITHUB_LABELS", " , ")]))
            .expect("parses")
            .check(GithubRunnerConfig::check)
            .expect_err("no labels");
        assert!(err.to_string().starts_with("environment variable SOLSTICE_GITHUB_LABELS: labels: is empty"), "{err}");
    }

    #[test]
    fn syntax_type_and_unknown_key_errors_name_the_line_and_column() {
        let err = check("dir = \"/srv/gh\"\n\nlables = [\"host\"]\n").expect_err("unknown key");
        let text = err.to_string();
        assert!(text.starts_with("g.toml:3:1: unknown field `lables`"), "{text}");
        assert!(text.contains("`labels`") && text.contains("`metrics_listen`"), "the message lists the keys: {text}");
        let err = check("capacity = 1\nengine = \"no\"\n").expect_err("wrong type");
        assert!(err.to_string().starts_with("g.toml:2:10: invalid type: string \"no\""), "{err}");
        let err = check("queue_url = 5\n").expect_err("wrong type");
        assert!(err.to_string().starts_with("g.toml:1:13: invalid type: integer `5`"), "{err}");
        let err = check("labels = [\"host\"\n").expect_err("syntax");
        assert!(err.to_string().starts_with("g.toml:1:"), "{err}");
    }

    #[test]
    fn the_checks_refuse_what_cannot_work_at_its_line() {
        let cases = [
            ("capacity = 0\n", "g.toml:1:12: capacity: must be at least 1"),
            ("capacity = 0\nengine = false\nqueue_url = \"amqp://x\"\n", "g.toml:1:12: capacity: must be at least 1"),
            ("dir = \".\"\nlabels = []\n", "g.toml:2:10: labels: is empty: the engine would serve no jobs"),
            (
                "queue_url = \"http://rabbitmq:5672\"\n",
                "g.toml:1:13: queue_url: `http://rabbitmq:5672` is not an amqp:// or amqps:// URL",
            ),
            ("queue_url = \"rabbitmq.internal\"\nengine = false\n", "g.toml:1:13: queue_url: `rabbitmq.internal` is not an amqp://"),
            ("labels = [\"host\"]\nengine = false\n", "g.toml:2:10: engine: is false but there is no queue_url"),
            ("engine = false\nqueue_url = \"\"\n", "g.toml:1:10: engine: is false but there is no queue_url"),
        ];
        for (text, expected) in cases {
            let err = check(text).expect_err(text);
            assert!(err.to_string().starts_with(expected), "{text:?}: expected `{expected}`, got `{err}`");
        }
        // What can work passes.
        for text in [
            "engine = false\nqueue_url = \"amqps://u:p@rabbitmq.internal:5671/%2f\"\n",
            // Without an engine the labels are not used.
            "engine = false\nlabels = []\nqueue_url = \"amqp://x\"\n",
            // A VM image for a label this host does not serve is never used.
            "labels = [\"host\"]\n[vm_images]\nomnios = \"omnios-r151056\"\n",
        ] {
            check(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        }
    }
}
