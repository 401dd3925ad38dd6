//! `solstice`: run a workflow locally, translate and evaluate workflows, check
//! configuration files, serve runners and an orchestrator in one process.
//!
//! Exit codes: 0 success, 1 a job failed or was cancelled, or a service or a download failed,
//! 2 the workflow is invalid, 3 bad usage or configuration.

mod config;
mod image;
mod machines;
mod printer;
mod run;
mod serve;
mod vm;
mod workflow;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Solstice CI: GitHub and Forgejo Actions jobs in fresh virtual machines.
#[derive(Debug, Parser)]
#[command(name = "solstice", version, about, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log level for Solstice's own diagnostics (error, warn, info, debug, trace).
    #[arg(long, global = true, env = "SOLSTICE_LOG", default_value = "warn")]
    log: String,
    /// Log lines as `text` or `json` (one object per line, for a log collector).
    #[arg(long, global = true, env = "SOLSTICE_LOG_FORMAT", default_value = "text")]
    log_format: solstice_config::LogFormat,
}

const EXIT_CODES: &str =
    "Exit codes: 0 success, 1 a job failed or was cancelled, or a service or a download failed, 2 invalid workflow, 3 usage or configuration error.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a workflow's jobs here, streaming their logs; the exit code is the result.
    Run(run::RunArgs),
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

/// Errors that map to an exit code of their own.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The workflow could not be translated (already printed).
    #[error("the workflow is invalid")]
    InvalidWorkflow,
    /// Some job did not succeed.
    #[error("{0}")]
    JobsFailed(String),
    /// The configuration is bad or incomplete.
    #[error("{0:#}")]
    Config(anyhow::Error),
    /// A service stopped with an error, or an operation (a download) failed.
    #[error("{0:#}")]
    Service(anyhow::Error),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    solstice_config::init_logging(&cli.log, "warn", cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Workflow(cmd) => workflow::run(cmd),
            Command::Config(cmd) => config::run(cmd),
            Command::Image(args) => image::run(args).await,
            Command::Vm(args) => vm::run(args).await,
            Command::Serve(args) => serve::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<CliError>() {
            Some(CliError::InvalidWorkflow) => ExitCode::from(2),
            Some(CliError::JobsFailed(summary)) => {
                eprintln!("{summary}");
                ExitCode::from(1)
            }
            Some(CliError::Service(e)) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
            Some(CliError::Config(_)) | None => {
                eprintln!("error: {e:#}");
                ExitCode::from(3)
            }
        },
    }
}

/// Reads a workflow file, naming it in the error.
pub(crate) fn read_workflow(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("could not read {}: {e}", path.display()))
}
