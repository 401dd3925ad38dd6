//! The job state store, asserted the same way on SQLite and PostgreSQL.

use std::sync::Arc;

use solstice_core::{JobId, JobRequest, JobResult, JobState, Store, VmRecord};

use crate::support::StoreFixture;

fn job(name: &str) -> JobRequest {
    let mut job = JobRequest::new(name, vec!["self-hosted".into(), "omnios".into()], vec![]);
    job.origin.source = "forgejo:runner-1".into();
    job.origin.external_id = format!("task-{name}");
    job
}

pub async fn records_a_queued_job_with_its_origin(fx: &StoreFixture) {
    let j = job("build");
    fx.store.record_queued(&j).await.expect("record");
    let record = fx.store.job(j.id).await.expect("read").expect("the job is recorded");
    assert_eq!(record.id, j.id);
    assert_eq!(record.source, "forgejo:runner-1");
    assert_eq!(record.external_id, "task-build");
    assert_eq!(record.name, "build");
    assert_eq!(record.route_label, "omnios");
    assert_eq!(record.state, JobState::Queued);
    assert_eq!(record.attempt, 0);
    assert_eq!(record.owner, None);
    assert_eq!((record.started_at, record.finished_at), (None, None));
    let age = time::OffsetDateTime::now_utc() - record.created_at;
    assert!(age.whole_seconds().abs() < 60, "created_at is now, not {}", record.created_at);
    assert_eq!(fx.store.job(JobId::new()).await.expect("read"), None);
}

pub async fn recording_a_known_job_again_changes_nothing(fx: &StoreFixture) {
    let j = job("again");
    fx.store.record_queued(&j).await.expect("record");
    assert_eq!(fx.store.claim(j.id, "orch-a").await.expect("claim"), Some(1));
    fx.store.record_queued(&j).await.expect("record a redelivery");
    let record = fx.store.job(j.id).await.expect("read").expect("recorded");
    assert_eq!((record.state, record.attempt), (JobState::Provisioning, 1), "a redelivery resets nothing");
}

pub async fn claims_count_attempts_and_name_the_owner(fx: &StoreFixture) {
    let j = job("claim");
    assert_eq!(fx.store.claim(j.id, "orch-a").await.expect("claim"), None, "an unknown job cannot be claimed");
    fx.store.record_queued(&j).await.expect("record");
    assert_eq!(fx.store.claim(j.id, "orch-a").await.expect("claim"), Some(1));
    assert_eq!(fx.store.claim(j.id, "orch-b").await.expect("claim"), Some(2));
    let record = fx.store.job(j.id).await.expect("read").expect("recorded");
    assert_eq!(record.owner.as_deref(), Some("orch-b"));
    assert_eq!(record.attempt, 2);
    assert_eq!(record.state, JobState::Provisioning);
}

pub async fn runs_and_finishes_exactly_once(fx: &StoreFixture) {
    let j = job("finish");
    fx.store.record_queued(&j).await.expect("record");
    fx.store.mark_running(j.id).await.expect("mark running");
    assert_eq!(
        fx.store.job(j.id).await.expect("read").expect("recorded").state,
        JobState::Queued,
        "only a claimed job starts running"
    );
    fx.store.claim(j.id, "orch-a").await.expect("claim");
    fx.store.mark_running(j.id).await.expect("mark running");
    let running = fx.store.job(j.id).await.expect("read").expect("recorded");
    assert_eq!(running.state, JobState::Running);
    assert!(running.started_at.is_some());
    assert!(fx.store.finish(j.id, JobResult::Failure).await.expect("finish"));
    assert!(!fx.store.finish(j.id, JobResult::Success).await.expect("finish again"), "a job finishes once");
    let done = fx.store.job(j.id).await.expect("read").expect("recorded");
    assert_eq!(done.state, JobState::Finished(JobResult::Failure), "the first result stands");
    assert!(done.finished_at.is_some());
    assert_eq!(fx.store.claim(j.id, "orch-b").await.expect("claim"), None, "a finished job cannot be claimed");
}

pub async fn concurrent_finishes_have_one_winner(fx: &StoreFixture) {
    let store = Arc::new(fx.store.clone());
    for round in 0..5 {
        let j = job(&format!("race-{round}"));
        store.record_queued(&j).await.expect("record");
        store.claim(j.id, "orch-a").await.expect("claim");
        let racers: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                let result = if i % 2 == 0 { JobResult::Success } else { JobResult::Cancelled };
                tokio::spawn(async move { store.finish(j.id, result).await.expect("finish") })
            })
            .collect();
        let mut winners = 0;
        for racer in racers {
            winners += usize::from(racer.await.expect("racer"));
        }
        assert_eq!(winners, 1, "exactly one of 8 concurrent finishes wins");
    }
}

pub async fn concurrent_claims_get_distinct_attempts(fx: &StoreFixture) {
    let store = Arc::new(fx.store.clone());
    let j = job("claims");
    store.record_queued(&j).await.expect("record");
    let claims: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.claim(j.id, &format!("orch-{i}")).await.expect("claim") })
        })
        .collect();
    let mut attempts = Vec::new();
    for claim in claims {
        attempts.push(claim.await.expect("claim task").expect("claimed"));
    }
    attempts.sort_unstable();
    assert_eq!(attempts, (1..=8).collect::<Vec<u32>>(), "every claim sees its own attempt number");
}

pub async fn lists_jobs_by_state_oldest_first(fx: &StoreFixture) {
    let jobs: Vec<_> = (0..4).map(|i| job(&format!("list-{i}"))).collect();
    for j in &jobs {
        fx.store.record_queued(j).await.expect("record");
        // Distinct creation times (milliseconds).
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    fx.store.claim(jobs[1].id, "orch-a").await.expect("claim");
    let queued = fx.store.jobs_in_state("queued", 10).await.expect("list");
    let ids: Vec<_> = queued.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![jobs[0].id, jobs[2].id, jobs[3].id]);
    let limited = fx.store.jobs_in_state("queued", 2).await.expect("list");
    assert_eq!(limited.len(), 2);
    assert_eq!(limited[0].id, jobs[0].id);
    let provisioning = fx.store.jobs_in_state("provisioning", 10).await.expect("list");
    assert_eq!(provisioning.iter().map(|r| r.id).collect::<Vec<_>>(), vec![jobs[1].id]);
    assert!(fx.store.jobs_in_state("finished", 10).await.expect("list").is_empty());
}

pub async fn keeps_vm_records_per_owner(fx: &StoreFixture) {
    let (a, b) = (JobId::new(), JobId::new());
    let vm = |id: &str, job_id: JobId, owner: &str| VmRecord {
        id: id.to_owned(),
        job_id,
        owner: owner.to_owned(),
        pid: None,
        ssh_port: None,
        files: vec![format!("/var/tmp/{id}/overlay.qcow2"), format!("/var/tmp/{id}/seed.iso")],
    };
    fx.store.record_vm(&vm("vm-1", a, "orch-a")).await.expect("record");
    fx.store.record_vm(&vm("vm-2", b, "orch-b")).await.expect("record");
    let started = VmRecord { pid: Some(4242), ssh_port: Some(40022), ..vm("vm-1", a, "orch-a") };
    fx.store.record_vm(&started).await.expect("record the started machine");
    assert_eq!(fx.store.vms_of("orch-a").await.expect("list"), vec![started]);
    assert_eq!(fx.store.vms_of("orch-b").await.expect("list"), vec![vm("vm-2", b, "orch-b")]);
    fx.store.remove_vm("vm-1").await.expect("remove");
    assert!(fx.store.vms_of("orch-a").await.expect("list").is_empty());
    fx.store.remove_vm("vm-1").await.expect("removing twice is fine");
}

/// Two handles on one database, as two orchestrator processes have.
pub async fn two_handles_share_state(fx: &StoreFixture) {
    let other: Store = fx.reconnect().await;
    let j = job("shared");
    fx.store.record_queued(&j).await.expect("record");
    assert_eq!(other.claim(j.id, "orch-b").await.expect("claim"), Some(1));
    assert!(other.finish(j.id, JobResult::Success).await.expect("finish"));
    assert_eq!(fx.store.claim(j.id, "orch-a").await.expect("claim"), None);
}
