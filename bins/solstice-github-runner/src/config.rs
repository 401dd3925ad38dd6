//! The runner's TOML configuration: [`solstice_config::GithubRunnerConfig`], loaded by
//! the shared loader (errors name the file, line and column, or the variable) with its
//! environment overrides, then `--dir`.

use solstice_config::{ConfigError, GITHUB_RUNNER_ENV, GithubRunnerConfig, load};

use crate::Cli;

/// The name the rest of the binary knows the configuration by.
pub(crate) use solstice_config::GithubRunnerConfig as RunnerFileConfig;

/// The file of `--config` (none: every key has its default), the environment overrides,
/// the checks, then `--dir` (or `SOLSTICE_GITHUB_DIR`) over `dir`.
pub(crate) fn load_config(cli: &Cli) -> Result<GithubRunnerConfig, ConfigError> {
    let mut config = load::<GithubRunnerConfig>(cli.config.as_deref(), GITHUB_RUNNER_ENV, |name| std::env::var(name).ok())?
        .check(GithubRunnerConfig::check)?
        .into_value();
    if let Some(dir) = &cli.dir {
        config.dir = dir.clone();
    }
    Ok(config)
}
