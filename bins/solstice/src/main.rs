//! `solstice`: run a workflow locally, translate and evaluate workflows, check
//! configuration files, serve runners and an orchestrator in one process.
//!
//! Exit codes: the table of every Solstice CI program, `solstice_service::Exit`.

mod config;
mod image;
mod machines;
mod output;
mod printer;
mod run;
mod serve;
mod vm;
mod workflow;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use solstice_config::{LogConfig, Program};
use solstice_service::{EXIT_CODES_HELP, ProgramError, init_logging, load_config, run_main, run_serve};

/// Solstice CI: GitHub and Forgejo Actions jobs in fresh virtual machines.
#[derive(Debug, Parser)]
#[command(name = "solstice", version, about, after_help = EXIT_CODES_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter for Solstice's own diagnostics (error, warn, info, debug, trace, or a
    /// directive). Default: `warn`; for `serve`, its file's `[log] level`.
    #[arg(long, global = true, env = "SOLSTICE_LOG_LEVEL")]
    log: Option<String>,
    /// Log lines as `text` or `json` (one object per line, for a log collector).
    #[arg(long, global = true, env = "SOLSTICE_LOG_FORMAT")]
    log_format: Option<solstice_config::LogFormat>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a workflow's jobs here, streaming their logs; the exit code is the result.
    Run(Box<run::RunArgs>),
    /// Translate or evaluate workflows without running anything.
    #[command(subcommand)]
    Workflow(workflow::WorkflowCommand),
    /// Download, list and prune the images of an image catalog.
    Image(image::ImageArgs),
    /// List and kill the machines the local orchestrator recorded.
    Vm(vm::VmArgs),
    /// Check configuration files.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Run the configured runner services and an orchestrator in this process
    /// (all-in-one mode) until SIGTERM or SIGINT.
    Serve(serve::ServeArgs),
}

fn main() -> ExitCode {
    run_main(|cli: Cli| async move {
        let (level, format) = (cli.log.as_deref(), cli.log_format);
        if let Command::Serve(args) = cli.command {
            let config = load_config(Program::Serve, args.config.as_deref())?;
            init_logging(level, format, &config.log);
            return run_serve(config).await;
        }
        init_logging(Some(level.unwrap_or("warn")), format, &LogConfig::default());
        let result = match cli.command {
            Command::Run(args) => run::run(*args).await,
            Command::Workflow(cmd) => workflow::run(cmd),
            Command::Config(cmd) => config::run(cmd),
            Command::Image(args) => image::run(args).await,
            Command::Vm(args) => vm::run(args).await,
            Command::Serve(_) => Ok(()),
        };
        // `… | head` closed our stdout: the reader has what it wanted (see `output`).
        result.or_else(|e| if output::is_broken_pipe(&e) { Ok(()) } else { Err(e) })
    })
}

/// Reads a workflow file, naming it in the error.
pub(crate) fn read_workflow(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).map_err(|e| ProgramError::invalid(anyhow::anyhow!("could not read {}: {e}", path.display())).into())
}
