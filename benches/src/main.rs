//! `solstice-bench`: builds every benchmark of the workspace in release mode, runs each
//! with its baseline in the same run, prints one table and writes the same rows as JSON.
//! `scripts/bench` runs it; `docs/benchmarks.md` describes the benchmarks and their goals.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use solstice_bench::Report;

mod artifacts;
mod process;
mod suites;

use suites::{Context, Suite};

/// Runs every benchmark of the workspace beside its baseline, in one run, and reports one
/// table (metric, ours, baseline, ratio, goal, met) and the same rows as JSON.
#[derive(Debug, Parser)]
#[command(
    name = "solstice-bench",
    after_help = "A figure that cannot be measured (no QEMU, no RabbitMQ, a benchmark that failed) keeps its row, \
                  with the reason.\n\nExit codes: 0 the table was printed and the JSON written, whether the goals \
                  were met or not (the table says); 1 the harness failed (a build error, a file it cannot write); \
                  2 usage."
)]
struct Cli {
    /// Smaller workloads and shorter criterion sampling: about 1.5 minutes of measuring on
    /// 2 cores once the release build is done.
    #[arg(long)]
    quick: bool,
    /// Where to write the rows as JSON. Default: `solstice-bench/results.json` in the cargo
    /// target directory ($CARGO_TARGET_DIR, or `target/` of the workspace).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Run only this benchmark (repeatable). Default: all of them.
    #[arg(long, value_enum, value_name = "BENCHMARK")]
    only: Vec<Suite>,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("solstice-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .context("formatting the start time")?;
    let started = Instant::now();
    let root = workspace_root();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let work = target_dir.join("solstice-bench");
    let out = cli.out.unwrap_or_else(|| work.join("results.json"));
    let suites = if cli.only.is_empty() { Suite::ALL.to_vec() } else { cli.only };

    // Criterion results and figures of earlier runs must not be read as this run's.
    let criterion_home = work.join("criterion");
    let figures = work.join("figures");
    for dir in [&criterion_home, &figures] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }

    let targets: Vec<_> = suites.iter().map(|s| s.target()).collect();
    let executables = artifacts::build(&root, &targets)?;
    let built = started.elapsed();
    eprintln!("solstice-bench: release build done in {:.0} s", built.as_secs_f64());

    let context = Context { quick: cli.quick, criterion_home, figures, executables };
    let mut rows = Vec::new();
    for suite in &suites {
        rows.extend(suite.run(&context));
    }
    let wall = started.elapsed();
    let report = Report::new(rows, cli.quick, started_at, wall.as_secs_f64());

    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let json = serde_json::to_string_pretty(&report.to_json()).context("encoding the report")?;
    std::fs::write(&out, json + "\n").with_context(|| format!("writing {}", out.display()))?;

    println!("{}", report.table());
    println!(
        "{} run: {:.0} s in all, {:.0} s of it building, {:.0} s measuring.",
        if cli.quick { "Quick" } else { "Full" },
        wall.as_secs_f64(),
        built.as_secs_f64(),
        (wall - built).as_secs_f64()
    );
    println!("JSON: {}", out.display());
    Ok(())
}

/// The workspace this harness belongs to: the parent of its package directory.
fn workspace_root() -> PathBuf {
    let package = Path::new(env!("CARGO_MANIFEST_DIR"));
    package.parent().unwrap_or(package).to_owned()
}
