//! Runs one job in a fresh QEMU VM of the tiny test guest (built on first use from this
//! host's Debian packages) and prints its log: the README's SDK example.
//!
//! `cargo run -p solstice-vm --example vm_job`

use solstice_core::{Engine, JobEventKind, JobRequest, StepCommand};
use solstice_vm::{MachineSetup, TINY_LINUX};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cache = std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_default().join(".cache/solstice");
    // Jobs for `tiny-linux` run in fresh QEMU VMs of the built-in test guest; add
    // `.catalog(ImageCatalog::from_toml(..)?)` and `.vm_label("omnios", "omnios-r151056")`
    // for real images, or `.host_label("host")` for jobs on this host.
    let machines = MachineSetup::new(cache).vm_label(TINY_LINUX, TINY_LINUX).build().await?;
    let engine = Engine::builder()
        .hypervisor(machines.hypervisor.clone())
        .executor(machines.executor.clone())
        .build()?;
    let job = JobRequest::new("hello", vec![TINY_LINUX.into()], vec![StepCommand::run("greet", "uname -a")]);
    let (result, events) = engine.run_job_collect(job).await;
    for event in &events {
        if let JobEventKind::Log { line, .. } = &event.kind {
            println!("{line}");
        }
    }
    println!("result: {result}");
    Ok(())
}
