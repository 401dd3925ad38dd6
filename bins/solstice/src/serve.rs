//! `solstice serve`: the runners of `[forgejo]` and `[github]` and an orchestrator in one
//! process (`solstice_service::run_serve`).

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The configuration file (see docs/deploy/solstice.toml). Without it, the
    /// environment overrides alone must configure a runner.
    #[arg(long, short, env = "SOLSTICE_CONFIG")]
    pub config: Option<PathBuf>,
}
