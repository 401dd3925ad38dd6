//! `solstice-orchestrator`: takes jobs for the labels it serves from the queue and runs
//! them, reporting every event back.
//!
//! Exit codes: 0 clean shutdown, 1 runtime failure, 3 bad configuration.

mod config;
mod service;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The Solstice CI orchestrator.
#[derive(Debug, Parser)]
#[command(name = "solstice-orchestrator", version, about, after_help = "Exit codes: 0 clean shutdown, 1 runtime failure, 3 bad configuration.")]
struct Cli {
    /// The TOML configuration file (see orchestrator.example.toml).
    #[arg(long, short, env = "SOLSTICE_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    #[arg(long, env = "SOLSTICE_LOG", default_value = "info", global = true)]
    log: String,
    /// Log lines as `text` or `json` (one object per line, for a log collector).
    #[arg(long, global = true, env = "SOLSTICE_LOG_FORMAT", default_value = "text")]
    log_format: solstice_config::LogFormat,
    /// Same as `--log-format json`.
    #[arg(long, global = true, hide = true)]
    json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve jobs until SIGTERM or SIGINT (the default).
    Run,
    /// Check the configuration and print it as resolved.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = if cli.json { solstice_config::LogFormat::Json } else { cli.log_format };
    solstice_config::init_logging(&cli.log, "info", format);
    let config = match config::load(cli.config.as_deref(), |name| std::env::var(name).ok(), std::env::var("HOSTNAME").ok()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(3);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => {
            println!("{config:#?}");
            ExitCode::SUCCESS
        }
        Command::Run => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: could not start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            match runtime.block_on(service::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
