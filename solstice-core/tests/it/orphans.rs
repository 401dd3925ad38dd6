//! Machines written down while they live and reaped after a crash.

use std::time::Duration;

use async_trait::async_trait;
use solstice_core::{
    Engine, HostExecutor, HostHypervisor, Hypervisor, HypervisorError, JobEventKind, JobQueue, JobRequest, JobResult,
    JobState, Machine, MachineFootprint, MachineRequest, MemoryQueue, ProvisionContext, StepCommand, Store, VmRecord,
};

async fn temp_store(dir: &tempfile::TempDir) -> Store {
    Store::connect(&format!("sqlite://{}", dir.path().join("state.db").display())).await.expect("connect")
}

/// Host machines that, like a VM, write their workspace down as their footprint.
struct RecordingHost(HostHypervisor);

#[async_trait]
impl Hypervisor for RecordingHost {
    fn serves(&self, label: &str) -> bool {
        self.0.serves(label)
    }

    async fn provision(&self, request: &MachineRequest, ctx: &ProvisionContext<'_>) -> Result<Machine, HypervisorError> {
        let machine = self.0.provision(request, ctx).await?;
        ctx.journal
            .record(&MachineFootprint {
                machine_id: machine.id.clone(),
                files: vec![machine.workspace.clone().into()],
                ..Default::default()
            })
            .await;
        Ok(machine)
    }

    async fn destroy(&self, machine: &Machine) -> Result<(), HypervisorError> {
        self.0.destroy(machine).await
    }
}

#[tokio::test]
async fn a_machine_is_recorded_while_it_lives_and_forgotten_once_destroyed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = temp_store(&dir).await;
    let engine = Engine::builder()
        .hypervisor(RecordingHost(HostHypervisor::new()))
        .executor(HostExecutor::new())
        .store(store.clone())
        .name("orch-a")
        .build()
        .expect("engine");
    let job = JobRequest::new("sleepy", vec!["host".into()], vec![StepCommand::run("wait", "sleep 2")]);
    let running = tokio::spawn({
        let engine = engine.clone();
        let job = job.clone();
        async move { engine.run_job_collect(job).await.0 }
    });
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = store.all_vms().await.expect("list");
        if !seen.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen.len(), 1, "the machine is recorded while the job runs");
    assert_eq!((seen[0].job_id, seen[0].owner.as_str()), (job.id, "orch-a"));
    assert!(std::path::Path::new(&seen[0].files[0]).is_dir(), "its workspace is the recorded file");
    assert_eq!(engine.metrics().machines_running(), 1);
    assert_eq!(running.await.expect("join"), JobResult::Success);
    assert_eq!(engine.metrics().machines_running(), 0);
    assert!(store.all_vms().await.expect("list").is_empty(), "a destroyed machine is forgotten");
}

/// A process whose command line names the machine, as QEMU's `-name` does; returns
/// once it has exec'd (before that, its command line is still this test's).
async fn machine_process(machine_id: &str) -> std::process::Child {
    let mut child = std::process::Command::new("sh")
        .args(["-c", "while :; do sleep 1; done", machine_id])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    for _ in 0..500 {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(machine_id) {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the machine's stand-in process never started");
}

#[tokio::test]
async fn reaping_stops_the_process_removes_the_files_and_fails_the_job_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = temp_store(&dir).await;
    let queue = MemoryQueue::new();

    // What a crashed `orch-a` left: a claimed, running job and its machine.
    let mut job = JobRequest::new("orphan", vec!["host".into()], vec![StepCommand::run("s", "true")]);
    job.origin.source = "forge-1".into();
    store.record_queued(&job).await.expect("queue");
    assert_eq!(store.claim(job.id, "orch-a").await.expect("claim"), Some(1));
    store.mark_running(job.id).await.expect("running");
    let machine_dir = dir.path().join("vm-orphan-1a2b3c");
    std::fs::create_dir_all(machine_dir.join("sub")).expect("mkdir");
    std::fs::write(machine_dir.join("sub/overlay.qcow2"), b"disk").expect("write");
    let mut process = machine_process("vm-orphan-1a2b3c").await;
    let footprint = MachineFootprint {
        machine_id: "vm-orphan-1a2b3c".into(),
        pid: Some(process.id()),
        ssh_port: Some(2222),
        files: vec![machine_dir.clone()],
    };
    store.record_vm(&VmRecord::from_footprint(&footprint, job.id, "orch-a")).await.expect("record");

    // Another orchestrator's machine is not ours to reap.
    let other = JobRequest::new("other", vec!["host".into()], vec![]);
    store.record_queued(&other).await.expect("queue");
    let theirs = MachineFootprint { machine_id: "vm-theirs".into(), ..Default::default() };
    store.record_vm(&VmRecord::from_footprint(&theirs, other.id, "orch-b")).await.expect("record");

    let mut events = queue.consume_events("forge-1").await.expect("consume");
    let engine = Engine::builder()
        .hypervisor(HostHypervisor::new())
        .executor(HostExecutor::new())
        .store(store.clone())
        .name("orch-a")
        .build()
        .expect("engine");
    let reaped = engine.reap_orphans(Some(&queue as &dyn JobQueue)).await.expect("reap");

    assert_eq!(reaped.len(), 1);
    assert!(reaped[0].job_failed);
    assert!(engine.metrics().render().contains("solstice_machines_reaped_total 1\n"));
    assert_eq!(reaped[0].record.id, "vm-orphan-1a2b3c");
    let mut status = None;
    for _ in 0..500 {
        status = process.try_wait().expect("try_wait");
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let Some(status) = status else {
        let _ = process.kill();
        let _ = process.wait();
        panic!("the machine's process was not stopped");
    };
    assert!(!status.success(), "the machine's process was stopped");
    assert!(!machine_dir.exists(), "the machine's files are gone");
    let left: Vec<String> = store.all_vms().await.expect("list").into_iter().map(|v| v.id).collect();
    assert_eq!(left, vec!["vm-theirs".to_owned()]);

    let record = store.job(job.id).await.expect("query").expect("job");
    assert_eq!(record.state, JobState::Finished(JobResult::Failure));
    let last = store.final_event(job.id).await.expect("query").expect("final event");
    assert!(matches!(last.kind, JobEventKind::JobFinished { result: JobResult::Failure }));

    let first = tokio::time::timeout(Duration::from_secs(5), events.next()).await.expect("in time").expect("event");
    match &first.event.kind {
        JobEventKind::Log { line, .. } => assert!(line.contains("stopped unexpectedly"), "{line}"),
        other => panic!("expected the explanation first, got {other:?}"),
    }
    first.acker.ack().await.expect("ack");
    let second = tokio::time::timeout(Duration::from_secs(5), events.next()).await.expect("in time").expect("event");
    assert_eq!(second.event, last, "the reported final event is the stored one");
    assert!(second.event.seq > first.event.seq && second.event.attempt == 1);
    second.acker.ack().await.expect("ack");

    // A second start finds nothing more to reap and reports nothing twice.
    assert!(engine.reap_orphans(Some(&queue as &dyn JobQueue)).await.expect("reap").is_empty());
    tokio::time::timeout(Duration::from_millis(300), events.next()).await.expect_err("no second final event");
}

#[tokio::test]
async fn a_job_taken_over_by_another_orchestrator_is_left_to_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = temp_store(&dir).await;
    let job = JobRequest::new("moved", vec!["host".into()], vec![]);
    store.record_queued(&job).await.expect("queue");
    assert_eq!(store.claim(job.id, "orch-a").await.expect("claim"), Some(1));
    // Redelivered after orch-a died and claimed by orch-b.
    assert_eq!(store.claim(job.id, "orch-b").await.expect("claim"), Some(2));
    let footprint = MachineFootprint { machine_id: "vm-gone".into(), ..Default::default() };
    store.record_vm(&VmRecord::from_footprint(&footprint, job.id, "orch-a")).await.expect("record");
    let engine = Engine::builder()
        .hypervisor(HostHypervisor::new())
        .executor(HostExecutor::new())
        .store(store.clone())
        .name("orch-a")
        .build()
        .expect("engine");
    let reaped = engine.reap_orphans(None).await.expect("reap");
    assert_eq!(reaped.len(), 1);
    assert!(!reaped[0].job_failed, "orch-b runs it now");
    assert_eq!(store.job(job.id).await.expect("query").expect("job").owner.as_deref(), Some("orch-b"));
    assert!(store.all_vms().await.expect("list").is_empty());
}

#[tokio::test]
async fn reaping_needs_a_store() {
    let engine = Engine::builder().hypervisor(HostHypervisor::new()).executor(HostExecutor::new()).build().expect("engine");
    engine.reap_orphans(None).await.expect_err("reaping needs a store");
}
