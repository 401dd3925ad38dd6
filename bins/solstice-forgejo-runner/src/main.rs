//! `solstice-forgejo-runner`: a native Forgejo Actions runner. The work is done by
//! `solstice-service`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use solstice_config::Program;
use solstice_core::Secret;
use solstice_service::{EXIT_CODES_HELP, ForgejoRegistration, ServiceArgs, register_forgejo, run_forgejo_runner, run_main};

/// A native Forgejo Actions runner that runs each job in a fresh machine.
///
/// The configuration (`--config`, `SOLSTICE_CONFIG`) has the keys every Solstice CI
/// program reads, the runner's own in `[forgejo]`; `SOLSTICE_*` variables override
/// them (docs/operator-guide.md, "Configuration").
#[derive(Debug, Parser)]
#[command(version, about, after_help = EXIT_CODES_HELP)]
struct Cli {
    #[command(flatten)]
    service: ServiceArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Poll Forgejo for jobs and run them until SIGINT/SIGTERM (twice: cancel running jobs).
    Daemon,
    /// Register this runner with a Forgejo instance and write the runner file (mode 0600).
    Register {
        /// The instance URL, e.g. `https://codeberg.org`.
        #[arg(long)]
        instance: String,
        /// The registration token from the runner settings page.
        #[arg(long, env = "SOLSTICE_FORGEJO_REGISTRATION_TOKEN", hide_env_values = true)]
        token: String,
        /// The runner's name.
        #[arg(long, default_value = "solstice")]
        name: String,
        /// Comma-separated labels: `name` or `name:vm[:image]` (a VM), `name:host` (the host).
        #[arg(long, value_delimiter = ',', required = true)]
        labels: Vec<String>,
        /// Take a single job, then be removed by Forgejo.
        #[arg(long)]
        ephemeral: bool,
    },
}

fn main() -> ExitCode {
    run_main(|cli: Cli| async move {
        let config = cli.service.load(Program::ForgejoRunner)?;
        match cli.command {
            Command::Register { instance, token, name, labels, ephemeral } => {
                let registration = ForgejoRegistration { instance, token: Secret::new(token), name, labels, ephemeral };
                let file = register_forgejo(&config, registration).await?;
                let path = config.forgejo.unwrap_or_default().file;
                println!("Registered runner {} ({}); wrote {}", file.name, file.uuid, path.display());
                Ok(())
            }
            Command::Daemon => run_forgejo_runner(config).await,
        }
    })
}
