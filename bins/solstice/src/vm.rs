//! `solstice vm list|kill`: the machines the local orchestrator (`solstice serve` or
//! `solstice-orchestrator`) recorded in its state store.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use solstice_core::{Hypervisor, Store, VmRecord};
use solstice_vm::QemuHypervisor;

use solstice_service::ProgramError;
use crate::output::outln;

#[derive(Debug, Args)]
pub struct VmArgs {
    /// The configuration of the orchestrator (`solstice.toml` or the orchestrator's
    /// file): its `[store] url` names the store.
    #[arg(long, short, global = true, env = "SOLSTICE_CONFIG")]
    config: Option<PathBuf>,
    /// The state store, instead of the configuration's (`sqlite://PATH`,
    /// `postgres://…`). Default: `sqlite://solstice-state.db`, as the services.
    #[arg(long, global = true, env = "SOLSTICE_STORE_URL")]
    store: Option<String>,
    #[command(subcommand)]
    command: VmCommand,
}

#[derive(Debug, Subcommand)]
enum VmCommand {
    /// List the recorded machines: their job, owner, process and whether it runs.
    List,
    /// Stop machines (their QEMU process, if it still is theirs) and remove their files.
    Kill {
        /// Machine ids, as `list` shows them.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Also delete the records. Without it the record stays for its orchestrator,
        /// which forgets it when the job ends, or (after a crash) reports the job failed
        /// when it restarts.
        #[arg(long)]
        forget: bool,
    },
}

pub async fn run(args: VmArgs) -> anyhow::Result<()> {
    let url = store_url(&args)?;
    let store = Store::connect(&url).await.with_context(|| format!("opening the state store {}", redact(&url))).map_err(ProgramError::failed)?;
    match args.command {
        VmCommand::List => list(&store).await,
        VmCommand::Kill { ids, forget } => kill(&store, &ids, forget).await,
    }
}

/// The store URL: `--store`, else the configuration's, else the services' default.
fn store_url(args: &VmArgs) -> anyhow::Result<String> {
    if let Some(url) = &args.store {
        return Ok(url.clone());
    }
    let Some(path) = &args.config else { return Ok(solstice_config::StoreConfig::default().url) };
    let url = crate::config::store_url_of(path).map_err(ProgramError::invalid)?;
    Ok(url)
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = &url[scheme + 3..at];
            let user = user.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Whether the machine's process runs: its pid is alive and its command line still names
/// the machine (QEMU's `-name` does; a reused pid does not).
fn process_runs(record: &VmRecord) -> bool {
    record.pid.is_some_and(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|cmdline| cmdline.split(|b| *b == 0).any(|arg| String::from_utf8_lossy(arg).contains(&record.id)))
    })
}

async fn list(store: &Store) -> anyhow::Result<()> {
    let vms = store.all_vms().await.map_err(ProgramError::failed)?;
    if vms.is_empty() {
        outln!("no machine recorded")?;
        return Ok(());
    }
    let mut rows = vec![["MACHINE", "JOB", "JOB STATE", "OWNER", "PID", "SSH", "PROCESS"].map(str::to_owned)];
    for vm in &vms {
        let job = store.job(vm.job_id).await.map_err(ProgramError::failed)?;
        let (name, state) = job.map_or_else(|| (vm.job_id.to_string(), "-".to_owned()), |j| (j.name, j.state.to_string()));
        let dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
        let process = if process_runs(vm) { "running" } else if vm.pid.is_some() { "gone" } else { "not started" };
        rows.push([
            vm.id.clone(),
            name,
            state,
            vm.owner.clone(),
            dash(vm.pid.map(|p| p.to_string())),
            dash(vm.ssh_port.map(|p| format!("127.0.0.1:{p}"))),
            process.to_owned(),
        ]);
    }
    let widths: Vec<usize> = (0..7).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    for row in &rows {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        outln!("{}", line.join("  ").trim_end())?;
    }
    Ok(())
}

async fn kill(store: &Store, ids: &[String], forget: bool) -> anyhow::Result<()> {
    let mut records = Vec::new();
    for id in ids {
        match store.vm(id).await.map_err(ProgramError::failed)? {
            Some(record) => records.push(record),
            None => return Err(ProgramError::invalid(anyhow::anyhow!("no machine `{id}` is recorded (see `solstice vm list`)")).into()),
        }
    }
    // Reaping needs no image or catalog: it stops the recorded process (only if it still
    // names the machine) and removes the recorded files.
    let hypervisor = QemuHypervisor::builder().build();
    for record in records {
        let was_running = process_runs(&record);
        hypervisor.reap(&record.footprint()).await.with_context(|| format!("killing {}", record.id)).map_err(ProgramError::failed)?;
        if forget {
            store.remove_vm(&record.id).await.map_err(ProgramError::failed)?;
        }
        let what = if was_running { "stopped and removed" } else { "was not running; removed its files" };
        let record_note = if forget { ", record deleted" } else { "" };
        outln!("✓ {}: {what}{record_note}", record.id)?;
    }
    Ok(())
}
