//! Provisioning overhead: time from `provision` to the first successful SSH command,
//! against a bare baseline that starts the same QEMU command line by hand and polls SSH
//! with the same retry interval.
//!
//! Run: `cargo bench -p solstice-vm --bench provision [-- --json FILE]` (needs QEMU and
//! the Debian packages of the test guest; `SOLSTICE_BENCH_RUNS` sets the runs per side,
//! default 3). `--json FILE` hands the figures to the harness in `benches/`.

use std::time::{Duration, Instant};

use solstice_bench::Figures;
use solstice_core::{JobId, LogSink, MachineRequest, ProvisionContext, SshAccess};
use solstice_vm::accel::Accel;
use solstice_vm::ports::PortAllocator;
use solstice_vm::qemu::{BootSpec, NetSpec, QemuProcess, VmSpec};
use solstice_vm::seed::SeedConfig;
use solstice_vm::ssh::{SshKeyPair, SshSession};
use solstice_vm::{AccelChoice, QemuHypervisor, TestGuest};
use tokio_util::sync::CancellationToken;

const INTERVAL: Duration = Duration::from_millis(250);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs: usize = std::env::var("SOLSTICE_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let mut figures = Figures::new(Figures::path_from_args(std::env::args().skip(1)))?;
    figures.number("runs", runs as f64)?;
    let cache = std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache/solstice")).unwrap_or_else(std::env::temp_dir);
    let guest = TestGuest::builder(&cache).ensure()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let run_dir = tempfile::tempdir()?;
        let ports = PortAllocator::new(47000..47500);
        let hypervisor = QemuHypervisor::builder()
            .image("tiny-linux", guest.catalog_entry())
            .probe_kernel(&guest.kernel)
            .accel(AccelChoice::Auto)
            .cache_dir(&cache)
            .run_dir(run_dir.path())
            .ports(ports.clone())
            .ssh_retry_interval(INTERVAL)
            .stop_grace(Duration::ZERO)
            .build();
        let accel = hypervisor.accelerator().await;
        println!("accelerator: {} ({})", accel.accel, accel.reason);
        figures.text("accelerator", &accel.accel.to_string())?;
        let (mut ours, mut bare) = (Vec::new(), Vec::new());
        for run in 0..runs {
            // Alternate the two sides so that drift in host load hits both alike.
            let t = baseline(&guest, accel.accel, &ports, run_dir.path()).await?;
            bare.push(t);
            let (console, mut rx) = LogSink::channel(4096);
            let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
            let request = MachineRequest { job_id: JobId::new(), label: "tiny-linux".into(), debug_ssh: false };
            let started = Instant::now();
            let cancel = CancellationToken::new();
            let machine = hypervisor.boot(&request, &ProvisionContext::new(&console, &cancel)).await?;
            let t2 = started.elapsed();
            ours.push(t2);
            drop(console);
            hypervisor.stop(&machine.id).await?;
            let _ = drain.await;
            println!("run {}: baseline {:.2} s, solstice {:.2} s", run + 1, t.as_secs_f64(), t2.as_secs_f64());
        }
        let (b, o) = (median(&mut bare), median(&mut ours));
        figures.number("baseline_median_s", b.as_secs_f64())?;
        figures.number("ours_median_s", o.as_secs_f64())?;
        println!("median boot-to-first-SSH-command: baseline {:.2} s, solstice {:.2} s", b.as_secs_f64(), o.as_secs_f64());
        println!("overhead ratio solstice/baseline: {:.3}", o.as_secs_f64() / b.as_secs_f64());
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Starts QEMU with the same command line by hand (keys and seed made before the clock
/// starts) and polls SSH every `INTERVAL` until `true` runs.
async fn baseline(
    guest: &TestGuest,
    accel: Accel,
    ports: &PortAllocator,
    dir: &std::path::Path,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let work = tempfile::tempdir_in(dir)?;
    let client = SshKeyPair::generate("bench")?;
    let host = SshKeyPair::generate("bench-host")?;
    let seed = SeedConfig {
        instance_id: "bench".into(),
        hostname: "bench".into(),
        user: "root".into(),
        authorized_keys: vec![client.public_openssh()],
        host_key: Some((host.private_openssh()?, host.public_openssh())),
        ..SeedConfig::default()
    };
    std::fs::write(work.path().join("seed.iso"), seed.to_iso()?)?;
    let port = ports.allocate()?;
    let spec = VmSpec {
        name: "bench".into(),
        accel,
        cpu: None,
        machine: "q35".into(),
        vcpus: 1,
        memory_mib: 512,
        boot: BootSpec::Kernel { kernel: guest.kernel.clone(), initrd: Some(guest.initrd.clone()), append: guest.append.clone() },
        disk: None,
        seed_iso: Some(work.path().join("seed.iso")),
        net: NetSpec::isolated(port.port()),
        qmp_socket: work.path().join("qmp.sock"),
        console_log: work.path().join("console.log"),
        console_socket: None,
        extra_args: Vec::new(),
    };
    let access = SshAccess {
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], port.port())),
        user: "root".into(),
        host_key: host.public_openssh(),
        client_key: client.private_openssh()?,
    };
    let started = Instant::now();
    let mut process = QemuProcess::spawn(std::path::Path::new("qemu-system-x86_64"), &spec, &work.path().join("qemu.log"), false)?;
    loop {
        if let Ok(session) = SshSession::connect(&access, Duration::from_secs(10)).await
            && session.exec("true").await.map(|o| o.exit_code == Some(0)).unwrap_or(false)
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            return Err("baseline guest never answered SSH".into());
        }
        tokio::time::sleep(INTERVAL).await;
    }
    let elapsed = started.elapsed();
    process.stop(None, Duration::ZERO).await?;
    Ok(elapsed)
}
