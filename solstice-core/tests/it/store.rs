//! The SQLite store: the job life cycle, exactly-once finishing, VM records.

use solstice_core::{JobRequest, JobResult, JobState, StepCommand, Store, VmRecord};

async fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("state.db").display());
    let store = Store::connect(&url).await.expect("connect");
    (dir, store)
}

fn job() -> JobRequest {
    JobRequest::new("build", vec!["omnios".into()], vec![StepCommand::run("s", "true")])
}

#[tokio::test]
async fn a_job_goes_queued_provisioning_running_finished() {
    let (_dir, store) = temp_store().await;
    let j = job();
    store.record_queued(&j).await.expect("queue");
    store.record_queued(&j).await.expect("queue twice is harmless");
    let rec = store.job(j.id).await.expect("q").expect("exists");
    assert_eq!((rec.state, rec.attempt, rec.route_label.as_str()), (JobState::Queued, 0, "omnios"));
    assert_eq!(store.claim(j.id, "orch-a").await.expect("claim"), Some(1));
    store.mark_running(j.id).await.expect("running");
    let rec = store.job(j.id).await.expect("q").expect("exists");
    assert_eq!((rec.state, rec.owner.as_deref()), (JobState::Running, Some("orch-a")));
    assert!(rec.started_at.is_some());
    assert!(store.finish(j.id, JobResult::Success).await.expect("finish"));
    assert!(!store.finish(j.id, JobResult::Failure).await.expect("second finish"), "finished twice");
    let rec = store.job(j.id).await.expect("q").expect("exists");
    assert_eq!(rec.state, JobState::Finished(JobResult::Success));
    assert!(rec.finished_at.is_some());
    assert_eq!(store.claim(j.id, "orch-b").await.expect("claim"), None, "a finished job cannot be claimed");
}

#[tokio::test]
async fn a_redelivered_job_is_claimed_again_with_a_new_attempt() {
    let (_dir, store) = temp_store().await;
    let j = job();
    store.record_queued(&j).await.expect("queue");
    assert_eq!(store.claim(j.id, "dead").await.expect("claim"), Some(1));
    assert_eq!(store.claim(j.id, "alive").await.expect("claim"), Some(2));
    assert_eq!(store.jobs_in_state("provisioning", 10).await.expect("list").len(), 1);
}

#[tokio::test]
async fn state_survives_reopening_the_database() {
    let (dir, store) = temp_store().await;
    let j = job();
    store.record_queued(&j).await.expect("queue");
    drop(store);
    let url = format!("sqlite://{}", dir.path().join("state.db").display());
    let again = Store::connect(&url).await.expect("reopen");
    assert_eq!(again.job(j.id).await.expect("q").map(|r| r.state), Some(JobState::Queued));
}

#[tokio::test]
async fn vm_records_are_kept_per_owner_until_removed() {
    let (_dir, store) = temp_store().await;
    let j = job();
    let vm = VmRecord {
        id: "vm-1".into(),
        job_id: j.id,
        owner: "orch-a".into(),
        pid: Some(4242),
        ssh_port: Some(40022),
        files: vec!["/tmp/vm-1".into()],
    };
    store.record_vm(&vm).await.expect("record");
    assert_eq!(store.vms_of("orch-a").await.expect("list"), vec![vm.clone()]);
    assert!(store.vms_of("orch-b").await.expect("list").is_empty());
    store.remove_vm("vm-1").await.expect("remove");
    assert!(store.vms_of("orch-a").await.expect("list").is_empty());
}

#[tokio::test]
async fn unknown_urls_are_refused_clearly() {
    let err = Store::connect("mysql://x").await.expect_err("must fail");
    assert!(err.to_string().contains("unsupported store URL"), "{err}");
}

#[tokio::test]
async fn the_final_event_is_kept_with_the_final_state() {
    use solstice_core::{JobEvent, JobEventKind};
    let (_dir, store) = temp_store().await;
    let j = job();
    store.record_queued(&j).await.expect("queue");
    assert_eq!(store.final_event(j.id).await.expect("read"), None);
    store.claim(j.id, "a").await.expect("claim");
    let event = JobEvent {
        job_id: j.id,
        attempt: 1,
        seq: 9,
        at: time::OffsetDateTime::now_utc(),
        kind: JobEventKind::JobFinished { result: JobResult::Cancelled },
    };
    assert!(store.finish_with_event(&event).await.expect("finish"));
    assert!(!store.finish_with_event(&event).await.expect("second finish"));
    let stored = store.final_event(j.id).await.expect("read").expect("kept");
    assert_eq!((stored.seq, stored.kind), (9, JobEventKind::JobFinished { result: JobResult::Cancelled }));
    assert_eq!(store.job(j.id).await.expect("q").map(|r| r.state), Some(JobState::Finished(JobResult::Cancelled)));
}
