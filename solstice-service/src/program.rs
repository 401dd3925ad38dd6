//! What every `main` does: parse the command line, load the configuration, set up
//! logging, run on a tokio runtime, and end with the exit code of the table.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use solstice_config::{BadValue, ConfigError, LogConfig, LogFormat, Program, ServiceConfig};
use solstice_forgejo::LabelSpec;

use crate::exit::{Exit, report};

/// The options every service binary takes: the configuration file and the logging
/// overrides. Flatten it into the binary's `Cli`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// The configuration file (TOML; every key is listed in docs/operator-guide.md,
    /// "Configuration"). Without it every key has its default; `SOLSTICE_*` variables
    /// override either.
    #[arg(long, short, env = "SOLSTICE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Log filter, an EnvFilter directive (`info`, `solstice_core=debug,warn`); wins over
    /// `[log] level` and SOLSTICE_LOG_LEVEL.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log: Option<String>,
    /// Log lines as `text` or `json` (one object per line); wins over `[log] format`.
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

impl ServiceArgs {
    /// Loads `program`'s configuration ([`load_config`]) and sets up logging from its
    /// `[log]` and these flags.
    ///
    /// # Errors
    /// The [`ConfigError`] (exit 2).
    pub fn load(&self, program: Program) -> Result<ServiceConfig, ConfigError> {
        let config = load_config(program, self.config.as_deref())?;
        init_logging(self.log.as_deref(), self.log_format, &config.log);
        Ok(config)
    }
}

/// `program`'s configuration: the file (if any), the `SOLSTICE_*` variables of the
/// process, the program's checks and the Forgejo label specs, its defaults filled in.
///
/// # Errors
/// [`ConfigError`] at the file's line and column, or naming the variable.
pub fn load_config(program: Program, path: Option<&Path>) -> Result<ServiceConfig, ConfigError> {
    Ok(program.load(path, |name| std::env::var(name).ok())?.check(check_label_specs)?.into_value())
}

/// Checks a file's text alone for `program`, with the same checks as [`load_config`]
/// (for `solstice config check`).
///
/// # Errors
/// [`ConfigError`] at the line and column of the first problem.
pub fn check_config_text(program: Program, text: &str, name: &str) -> Result<ServiceConfig, ConfigError> {
    Ok(program.parse(text, name)?.check(check_label_specs)?.into_value())
}

/// `[forgejo] labels` are label specs (`name[:vm[:image]]`, `name:host`).
fn check_label_specs(config: &ServiceConfig) -> Result<(), BadValue> {
    for spec in config.forgejo.iter().flat_map(|f| &f.labels) {
        LabelSpec::parse(spec).map_err(|e| BadValue::new("forgejo.labels", e.to_string()))?;
    }
    Ok(())
}

/// Installs the `tracing` subscriber: the `level` and `format` flags if given, else the
/// configuration's `[log]`.
pub fn init_logging(level: Option<&str>, format: Option<LogFormat>, config: &LogConfig) {
    solstice_config::init_logging(level.unwrap_or(&config.level), "info", format.unwrap_or(config.format));
}

/// The whole of a binary's `main`: parses `C` (a usage error exits 3; `--help` and
/// `--version` exit 0), runs `run` on a tokio runtime, and turns its error into the
/// message (`error: {e:#}`) and exit code of the table ([`Exit::of`]).
pub fn run_main<C, F, Fut>(run: F) -> ExitCode
where
    C: clap::Parser,
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let cli = match C::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout and are a success; anything else is usage.
            let _ = e.print();
            return if e.exit_code() == 0 { Exit::Success } else { Exit::Usage }.into();
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return Exit::Failed.into();
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}
