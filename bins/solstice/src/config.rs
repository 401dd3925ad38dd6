//! `solstice config check`: any program's file, with the checks that program runs.

use std::path::{Path, PathBuf};

use clap::{Subcommand, ValueEnum};
use solstice_config::{ConfigError, Program};
use solstice_service::check_config_text;

use crate::output::outln;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file and say what is wrong and where (file:line:column).
    /// Environment overrides are not applied: this checks the file alone.
    Check {
        /// The file of `solstice serve`, the orchestrator, or a runner.
        file: PathBuf,
        /// The program it configures. Default: guessed from its sections (`[forgejo]` and
        /// `[github]`: serve; one of them: that forge's runner; neither: the orchestrator).
        #[arg(long, value_enum)]
        kind: Option<Kind>,
    },
}

/// The programs `config check` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// `solstice serve`.
    Serve,
    /// `solstice-orchestrator`.
    Orchestrator,
    /// `solstice-forgejo-runner`.
    ForgejoRunner,
    /// `solstice-github-runner`.
    GithubRunner,
}

impl From<Kind> for Program {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Serve => Program::Serve,
            Kind::Orchestrator => Program::Orchestrator,
            Kind::ForgejoRunner => Program::ForgejoRunner,
            Kind::GithubRunner => Program::GithubRunner,
        }
    }
}

/// The file's name and text.
fn read(path: &Path) -> Result<(String, String), ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: name.clone(), source })?;
    Ok((name, text))
}

pub fn run(command: ConfigCommand) -> anyhow::Result<()> {
    let ConfigCommand::Check { file, kind } = command;
    let (name, text) = read(&file)?;
    let program = kind.map_or_else(|| Program::guess(&text), Program::from);
    check_config_text(program, &text, &name)?;
    let program = match program {
        Program::Serve => "`solstice serve`".to_owned(),
        other => format!("`{}`", other.name()),
    };
    outln!("{name}: a valid {program} configuration")?;
    Ok(())
}

/// The `[store] url` of a configuration file (checked as `config check` would).
pub fn store_url_of(path: &Path) -> anyhow::Result<String> {
    let (name, text) = read(path)?;
    let program = Program::guess(&text);
    Ok(check_config_text(program, &text, &name)?.store.url)
}
