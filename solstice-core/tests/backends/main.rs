//! The queue and store suites, run against every backend with the same assertions:
//! the in-process queue and RabbitMQ (feature `amqp`), SQLite and PostgreSQL (feature
//! `postgres`). Run them all with
//! `eval "$(.ci/services.sh)" && cargo test -p solstice-core --features amqp,postgres --test backends`.

#[cfg(all(feature = "amqp", feature = "postgres"))]
mod claims;
mod queue_suite;
#[cfg(feature = "amqp")]
mod rabbit;
mod store_suite;
mod support;

/// One test per suite function, on one backend.
macro_rules! cases {
    ($fixture:ident, $backend:expr, $suite:ident: $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let fx = crate::support::$fixture::new($backend).await;
                crate::$suite::$name(&fx).await;
                fx.cleanup().await;
            }
        )*
    };
}

macro_rules! queue_cases {
    ($backend:expr) => {
        cases!(QueueFixture, $backend, queue_suite:
            routes_jobs_by_label,
            routes_by_the_first_specific_label,
            keeps_jobs_published_before_any_consumer,
            counts_the_jobs_waiting_per_label,
            redelivers_requeued_jobs_flagged,
            redelivers_jobs_dropped_unsettled,
            hands_a_dead_consumers_jobs_to_another,
            forgets_acknowledged_jobs,
            dead_letters_jobs_with_the_reason,
            routes_events_by_source_in_order,
            delivers_a_batch_of_events_one_by_one_in_order,
            a_batch_is_kept_until_every_event_in_it_is_acknowledged,
            keeps_unacknowledged_events_across_a_source_restart,
            broadcasts_cancels_to_every_consumer,
        );
    };
}

macro_rules! store_cases {
    ($backend:expr) => {
        cases!(StoreFixture, $backend, store_suite:
            records_a_queued_job_with_its_origin,
            recording_a_known_job_again_changes_nothing,
            claims_count_attempts_and_name_the_owner,
            runs_and_finishes_exactly_once,
            concurrent_finishes_have_one_winner,
            concurrent_claims_get_distinct_attempts,
            lists_jobs_by_state_oldest_first,
            keeps_vm_records_per_owner,
            two_handles_share_state,
            a_live_lease_holds_off_other_claims,
            an_expired_lease_is_taken_over,
            concurrent_leased_claims_have_one_winner,
            a_repository_has_one_debug_slot_across_orchestrators,
        );
    };
}

mod queue_memory {
    queue_cases!(crate::support::QueueBackend::Memory);
}

#[cfg(feature = "amqp")]
mod queue_rabbitmq {
    queue_cases!(crate::support::QueueBackend::RabbitMq);
}

mod store_sqlite {
    store_cases!(crate::support::StoreBackend::Sqlite);
}

#[cfg(feature = "postgres")]
mod store_postgres {
    store_cases!(crate::support::StoreBackend::Postgres);
}

/// A CI run that provides the services but builds without their features would pass
/// without testing them; make that loud instead.
#[test]
fn service_backends_are_compiled_in_when_services_are_provided() {
    let missing = |var: &str, compiled: bool, feature: &str| {
        if std::env::var_os(var).is_some() && !compiled {
            panic!(
                "{var} is set but solstice-core was built without the `{feature}` feature: \
                 run with `--features amqp,postgres` so its suite runs"
            );
        }
    };
    missing("SOLSTICE_TEST_AMQP_URL", cfg!(feature = "amqp"), "amqp");
    missing("SOLSTICE_TEST_POSTGRES_URL", cfg!(feature = "postgres"), "postgres");
}
