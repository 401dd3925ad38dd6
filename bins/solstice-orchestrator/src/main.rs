//! `solstice-orchestrator`: takes jobs for the labels it serves from the queue and runs
//! them, reporting every event back. The work is done by `solstice-service`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use solstice_config::Program;
use solstice_service::{EXIT_CODES_HELP, ServiceArgs, run_main, run_orchestrator};

/// The Solstice CI orchestrator.
#[derive(Debug, Parser)]
#[command(name = "solstice-orchestrator", version, about, after_help = EXIT_CODES_HELP)]
struct Cli {
    #[command(flatten)]
    service: ServiceArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve jobs until SIGTERM or SIGINT (the default).
    Run,
    /// Check the configuration and print it as resolved (TOML).
    CheckConfig,
}

fn main() -> ExitCode {
    run_main(|cli: Cli| async move {
        let config = cli.service.load(Program::Orchestrator)?;
        match cli.command.unwrap_or(Command::Run) {
            Command::CheckConfig => {
                print!("{}", toml::to_string(&config)?);
                Ok(())
            }
            Command::Run => run_orchestrator(config).await,
        }
    })
}
