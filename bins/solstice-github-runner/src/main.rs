//! `solstice-github-runner`: a GitHub Actions self-hosted runner that runs jobs with
//! Solstice CI's engine. The work is done by `solstice-service`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use solstice_config::Program;
use solstice_core::Secret;
use solstice_github::RegistrationConfig;
use solstice_service::{EXIT_CODES_HELP, ServiceArgs, register_github, remove_github, run_github_runner, run_main, with_github_dir};

/// A GitHub Actions self-hosted runner that runs jobs in fresh virtual machines.
///
/// The configuration (`--config`, `SOLSTICE_CONFIG`) has the keys every Solstice CI
/// program reads, the runner's own in `[github]`; `SOLSTICE_*` variables override
/// them (docs/operator-guide.md, "Configuration").
#[derive(Debug, Parser)]
#[command(version, about, after_help = EXIT_CODES_HELP)]
struct Cli {
    #[command(flatten)]
    service: ServiceArgs,
    /// Directory of the runner's credential files (wins over `[github] dir` and SOLSTICE_GITHUB_DIR).
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Register this runner with a repository or organisation.
    Register {
        /// The repository or organisation: `https://github.com/OWNER` or `https://github.com/OWNER/REPO`.
        #[arg(long)]
        url: String,
        /// The registration token from the repository's settings.
        #[arg(long, env = "SOLSTICE_GITHUB_TOKEN", hide_env_values = true)]
        token: String,
        /// The runner's name.
        #[arg(long)]
        name: String,
        /// Extra labels, comma-separated (the first one routes jobs, e.g. `omnios`).
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        /// Replace a runner of the same name.
        #[arg(long)]
        replace: bool,
        /// Register for a single job.
        #[arg(long)]
        ephemeral: bool,
        /// Runner group (default group if absent).
        #[arg(long)]
        runner_group: Option<String>,
        /// REST API base, if it does not follow from the URL.
        #[arg(long)]
        api_url: Option<String>,
    },
    /// Unregister this runner and delete its credential files.
    Remove {
        /// The removal token from the repository's settings.
        #[arg(long, env = "SOLSTICE_GITHUB_TOKEN", hide_env_values = true)]
        token: String,
        /// REST API base, if it does not follow from the URL.
        #[arg(long)]
        api_url: Option<String>,
    },
    /// Take jobs and run them until stopped (SIGINT/SIGTERM); serves `/metrics` and `/healthz` on `[metrics] listen`.
    Run {
        /// Take one job, then unregister and exit.
        #[arg(long)]
        ephemeral: bool,
    },
}

fn main() -> ExitCode {
    run_main(|cli: Cli| async move {
        let config = with_github_dir(cli.service.load(Program::GithubRunner)?, cli.dir.as_deref());
        match cli.command {
            Command::Register { url, token, name, labels, replace, ephemeral, runner_group, api_url } => {
                let token = Secret::new(token);
                let registration =
                    RegistrationConfig { url, token, name, labels, replace, ephemeral, runner_group, api_url, ..Default::default() };
                register_github(&config, &registration).await.map(drop)
            }
            Command::Remove { token, api_url } => remove_github(&config, &Secret::new(token), api_url.as_deref()).await,
            Command::Run { ephemeral } => run_github_runner(config, ephemeral).await,
        }
    })
}
