//! The job state store, asserted the same way on SQLite and PostgreSQL.

use std::sync::Arc;

use std::time::Duration;

use solstice_core::{Claim, JobEvent, JobEventKind, JobId, JobRequest, JobResult, JobState, LeaseRenewal, Store, VmRecord};

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

fn finished(id: JobId, attempt: u32, result: JobResult) -> JobEvent {
    JobEvent { job_id: id, attempt, seq: 9, at: time::OffsetDateTime::now_utc(), kind: JobEventKind::JobFinished { result } }
}

const LONG: Duration = Duration::from_secs(60);

/// A redelivered copy of a running job, offered to another orchestrator while the
/// first one still renews its lease, is held; the holder can renew and finish.
pub async fn a_live_lease_holds_off_other_claims(fx: &StoreFixture) {
    let j = job("leased");
    fx.store.record_queued(&j).await.expect("record");
    let other: Store = fx.reconnect().await;
    assert_eq!(fx.store.claim_leased(j.id, "orch-a", "orch-a/1", LONG).await.expect("claim"), Claim::Claimed { attempt: 1 });
    match other.claim_leased(j.id, "orch-b", "orch-b/1", LONG).await.expect("claim") {
        Claim::Held { owner, until } => {
            assert_eq!(owner, "orch-a");
            let left = until - time::OffsetDateTime::now_utc();
            assert!(left.whole_seconds() > 50 && left.whole_seconds() <= 60, "the lease runs about 60 s, {left} left");
        }
        other => panic!("a second claim under a live lease got {other:?}"),
    }
    // Even the same orchestrator name from another process (a restart) is held.
    assert!(matches!(other.claim_leased(j.id, "orch-a", "orch-a/2", LONG).await.expect("claim"), Claim::Held { .. }));
    assert_eq!(fx.store.renew_lease(j.id, "orch-a/1", LONG).await.expect("renew"), LeaseRenewal::Renewed);
    assert_eq!(other.renew_lease(j.id, "orch-b/1", LONG).await.expect("renew"), LeaseRenewal::Lost, "only the holder renews");
    let record = fx.store.job(j.id).await.expect("read").expect("recorded");
    assert_eq!((record.attempt, record.owner.as_deref()), (1, Some("orch-a")), "held claims change nothing");
    assert!(!other.finish_leased(&finished(j.id, 1, JobResult::Success), "orch-b/1").await.expect("finish"));
    let end = finished(j.id, 1, JobResult::Failure);
    assert!(fx.store.finish_leased(&end, "orch-a/1").await.expect("finish"));
    assert_eq!(other.claim_leased(j.id, "orch-b", "orch-b/1", LONG).await.expect("claim"), Claim::Finished);
    // A renewal racing the holder's own finish is not a loss: the holder still reports
    // the job's last events.
    assert_eq!(fx.store.renew_lease(j.id, "orch-a/1", LONG).await.expect("renew"), LeaseRenewal::Finished);
    assert_eq!(other.renew_lease(j.id, "orch-b/1", LONG).await.expect("renew"), LeaseRenewal::Lost);
    let done = fx.store.job(j.id).await.expect("read").expect("recorded");
    assert_eq!(done.state, JobState::Finished(JobResult::Failure));
    let kept = fx.store.final_event(j.id).await.expect("read").expect("the final event is kept");
    assert_eq!((kept.attempt, &kept.kind), (1, &end.kind));
}

/// A job whose holder stopped renewing (it died) is taken over once the lease
/// expires; the old holder can then neither renew nor finish it.
pub async fn an_expired_lease_is_taken_over(fx: &StoreFixture) {
    let j = job("expiring");
    fx.store.record_queued(&j).await.expect("record");
    let short = Duration::from_millis(300);
    assert_eq!(fx.store.claim_leased(j.id, "orch-a", "orch-a/1", short).await.expect("claim"), Claim::Claimed { attempt: 1 });
    assert!(matches!(fx.store.claim_leased(j.id, "orch-b", "orch-b/1", LONG).await.expect("claim"), Claim::Held { .. }));
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(fx.store.claim_leased(j.id, "orch-b", "orch-b/1", LONG).await.expect("claim"), Claim::Claimed { attempt: 2 });
    assert_eq!(fx.store.renew_lease(j.id, "orch-a/1", LONG).await.expect("renew"), LeaseRenewal::Lost, "the old holder lost the job");
    assert!(!fx.store.finish_leased(&finished(j.id, 1, JobResult::Cancelled), "orch-a/1").await.expect("finish"));
    assert!(fx.store.finish_leased(&finished(j.id, 2, JobResult::Success), "orch-b/1").await.expect("finish"));
    let record = fx.store.job(j.id).await.expect("read").expect("recorded");
    assert_eq!((record.state, record.attempt, record.owner.as_deref()), (JobState::Finished(JobResult::Success), 2, Some("orch-b")));
    assert_eq!(fx.store.renew_lease(j.id, "orch-a/1", LONG).await.expect("renew"), LeaseRenewal::Lost, "finished by the new holder");
}

/// Of many instances claiming one job at once, exactly one gets it.
pub async fn concurrent_leased_claims_have_one_winner(fx: &StoreFixture) {
    let store = Arc::new(fx.store.clone());
    let j = job("lease-race");
    store.record_queued(&j).await.expect("record");
    let claims: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.claim_leased(j.id, &format!("orch-{i}"), &format!("orch-{i}/x"), LONG).await.expect("claim") })
        })
        .collect();
    let mut won = 0;
    for claim in claims {
        match claim.await.expect("claim task") {
            Claim::Claimed { attempt } => {
                assert_eq!(attempt, 1);
                won += 1;
            }
            Claim::Held { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(won, 1, "exactly one of 8 concurrent claims wins the lease");
}

/// One debug machine per repository across orchestrators: a second claim is declined
/// and names the holder; the holder's own claim again is fine; a released or expired
/// slot can be claimed by another job; another repository is independent.
pub async fn a_repository_has_one_debug_slot_across_orchestrators(fx: &StoreFixture) {
    let other: Store = fx.reconnect().await;
    let (a, b) = (JobId::new(), JobId::new());
    assert_eq!(fx.store.claim_debug_slot("org/app", a, "orch-a", LONG).await.expect("claim"), None);
    assert_eq!(other.claim_debug_slot("org/app", b, "orch-b", LONG).await.expect("claim"), Some(a), "held by a");
    assert_eq!(fx.store.claim_debug_slot("org/app", a, "orch-a", LONG).await.expect("claim"), None, "a again");
    assert_eq!(other.claim_debug_slot("org/lib", b, "orch-b", LONG).await.expect("claim"), None, "another repository");
    other.release_debug_slot("org/app", b).await.expect("release");
    assert_eq!(other.claim_debug_slot("org/app", b, "orch-b", LONG).await.expect("claim"), Some(a), "only the holder releases");
    fx.store.release_debug_slot("org/app", a).await.expect("release");
    assert_eq!(other.claim_debug_slot("org/app", b, "orch-b", Duration::from_millis(200)).await.expect("claim"), None);
    // b's orchestrator dies without releasing: the slot frees itself.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(fx.store.claim_debug_slot("org/app", a, "orch-a", LONG).await.expect("claim"), None, "expired");
}
