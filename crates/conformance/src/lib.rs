//! The conformance suite: the one set of tests every floodway broker runs.
//!
//! The rules a broker keeps are written once, in the module docs of [`floodway_core::broker`].
//! This crate turns each rule into a case, an `async fn` generic over a [`Harness`], grouped by
//! area in [`cases`]. A broker crate runs all of them with one line in its integration tests:
//!
//! ```ignore
//! async fn harness() -> MyHarness { /* a fresh broker on a ManualClock */ }
//!
//! floodway_conformance::suite!(harness);
//! ```
//!
//! [`suite!`] expands to one `#[test]` per case, named after the case, so a failure names the
//! behaviour that broke. Besides the cases, [`model`] holds a deliberately simple in-memory
//! implementation of the same rules and a proptest that drives random operation sequences
//! against a broker and the model and checks that they agree after every step.
//!
//! The suite tests itself: this crate's own integration tests run it against
//! [`model::ModelBroker`], so every case is checked against the written rules before any real
//! broker runs it, and against the same broker with planted bugs (`tests/it/mutants.rs`), which
//! the aimed case and the proptest must catch.
//!
//! # What a harness promises
//!
//! - Each call of the factory gives a fresh, empty broker.
//! - The broker reads time from the harness's [`ManualClock`] and from nothing else, so the
//!   cases move time by hand and never sleep.
//! - The broker does no housekeeping of its own (promoting due tasks, dead-lettering expired
//!   ones, reaping expired leases) while the suite runs, beyond what `reserve`, `promote` and
//!   `reap` do: a background timer that fired between two steps of a case would make the exact
//!   counts and states the cases assert depend on the machine's speed. Disable such timers in
//!   the harness.
//! - [`Harness::restart`] closes the broker and reopens it on the same storage, when
//!   [`Harness::can_restart`] says the broker has storage to reopen.

use std::future::Future;

use floodway_core::{Broker, ManualClock};

pub mod cases;
pub mod model;

/// What a broker crate provides to run the suite.
pub trait Harness: Send + Sync + 'static {
    /// The broker under test.
    type Broker: Broker;

    /// The broker under test.
    fn broker(&self) -> &Self::Broker;

    /// The broker's clock: the harness built the broker with this ManualClock, so tests move
    /// time by hand, never sleep.
    fn clock(&self) -> &ManualClock;

    /// Whether restart() works for this broker.
    fn can_restart(&self) -> bool;

    /// Closes the broker and reopens it on the same storage (recovery). Panics if
    /// !can_restart().
    fn restart(&mut self) -> impl Future<Output = ()> + Send;
}

/// Runs `future` to completion on a fresh single-threaded tokio runtime with timers; every
/// generated test runs its case this way.
///
/// The runtime is built here rather than by `#[tokio::test]` in the broker crate so that the
/// suite decides how its cases run and broker crates need not name tokio's test macros.
#[doc(hidden)]
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a tokio runtime for a conformance case")
        .block_on(future)
}

/// Expands to one `#[test]` per case of the suite (and one for the model proptest), each
/// running against a fresh harness from `factory`, an `async fn() -> impl Harness`.
///
/// The proptest opens a broker for every sequence it tries (hundreds); a broker whose default
/// set-up is slow to open or sync can give it a cheaper factory with `model = ...`:
///
/// ```ignore
/// floodway_conformance::suite!(harness);
/// floodway_conformance::suite!(harness, model = harness_without_fsync);
/// ```
#[macro_export]
macro_rules! suite {
    ($factory:path) => {
        $crate::__cases!(tests $factory, $factory);
    };
    ($factory:path, model = $model_factory:path) => {
        $crate::__cases!(tests $factory, $model_factory);
    };
}

/// The list of every case, in one place: it expands `__expand!` with the list, for the tests
/// (`suite!`) and for [`CASES`].
#[doc(hidden)]
#[macro_export]
macro_rules! __cases {
    ($($mode:tt)*) => {
        $crate::__expand! { [$($mode)*]
            enqueue::enqueued_task_is_ready_and_ack_completes_it,
            enqueue::enqueue_returns_increasing_ids_in_batch_order,
            enqueue::enqueue_keeps_what_the_producer_submitted,
            enqueue::enqueue_creates_the_queue_with_the_default_config,
            enqueue::task_without_a_retry_policy_takes_the_queue_default,
            enqueue::tasks_of_one_queue_are_invisible_to_another,
            reserve::reserve_spends_an_attempt_and_issues_the_next_fence,
            reserve::reserve_takes_higher_priority_first,
            reserve::reserve_takes_earlier_run_at_first_within_a_priority,
            reserve::due_task_is_ordered_by_its_run_at_not_by_when_it_was_promoted,
            reserve::reserve_takes_lower_id_first_when_priority_and_run_at_tie,
            reserve::reserve_never_returns_more_than_max,
            reserve::leased_task_is_not_reserved_again,
            reserve::reserve_records_the_worker_while_the_task_is_active,
            reserve::reserve_from_an_unknown_queue_returns_nothing,
            reserve::long_poll_reserve_returns_when_a_task_is_enqueued,
            schedule::delayed_task_is_scheduled_until_its_run_at,
            schedule::task_with_run_at_in_the_past_is_ready_at_once,
            schedule::promote_moves_due_tasks_to_ready_and_counts_them,
            schedule::reserve_promotes_due_tasks_before_choosing,
            leases::expired_lease_returns_task_to_ready_with_attempt_spent,
            leases::expired_lease_task_is_ordered_by_its_expiry_not_by_when_it_was_reaped,
            leases::reserve_reaps_expired_leases_before_choosing,
            leases::lease_expiring_on_the_last_attempt_dead_letters_the_task,
            leases::ack_with_stale_fence_is_refused_and_changes_nothing,
            leases::extend_with_stale_fence_is_refused_and_changes_nothing,
            leases::fail_with_stale_fence_is_refused_and_changes_nothing,
            leases::release_with_stale_fence_is_refused_and_changes_nothing,
            leases::ack_with_expired_but_unreaped_lease_is_refused_and_changes_nothing,
            leases::extend_fail_and_release_of_an_expired_lease_are_refused,
            leases::lease_taken_back_by_reap_is_refused_as_expired,
            leases::extend_moves_the_expiry_to_the_given_duration_from_now,
            leases::second_ack_of_a_task_is_refused_as_wrong_state,
            leases::batch_lease_operation_refuses_only_its_bad_items,
            leases::release_returns_task_to_ready_without_spending_an_attempt,
            retry::failed_task_retries_after_exact_backoff_until_max_attempts_then_dead_letters,
            retry::backoff_is_capped_at_backoff_max,
            retry::full_jitter_backoff_stays_within_the_ceiling_and_spreads,
            retry::fail_with_retry_after_waits_the_given_time,
            retry::fail_with_never_dead_letters_as_permanent_failure,
            retry::failure_message_is_kept_and_truncated,
            retry::retrying_task_is_promoted_when_its_backoff_passes,
            idempotency::duplicate_key_within_window_returns_the_first_task_id,
            idempotency::duplicate_key_matches_whatever_state_the_first_task_is_in,
            idempotency::key_creates_a_new_task_once_the_window_has_passed,
            idempotency::second_use_of_a_key_in_one_batch_is_a_duplicate_of_the_first,
            idempotency::idempotency_keys_are_per_queue,
            ttl::ttl_expiry_dead_letters_a_waiting_task_as_expired,
            ttl::reserve_never_hands_out_a_task_whose_ttl_passed,
            ttl::reserve_never_hands_out_a_task_whose_ttl_passed_while_it_ran,
            ttl::running_task_is_not_interrupted_by_its_ttl,
            ttl::ttl_applies_to_scheduled_and_retrying_tasks,
            ttl::queue_ttl_applies_to_tasks_without_their_own,
            overflow::reject_policy_refuses_the_whole_batch_and_writes_nothing,
            overflow::dead_letter_oldest_policy_dead_letters_the_oldest_waiting_tasks,
            overflow::batch_larger_than_length_max_is_refused_under_either_policy,
            overflow::length_counts_scheduled_ready_and_retrying_tasks_only,
            overflow::duplicates_do_not_count_toward_the_length,
            watermarks::enqueue_above_the_high_watermark_is_refused_until_down_to_the_low,
            watermarks::a_batch_crossing_the_high_watermark_is_refused_whole,
            watermarks::duplicates_alone_are_never_refused_by_the_watermark,
            throttling::queue_rate_limit_hands_out_a_burst_then_one_task_per_token,
            throttling::changing_the_rate_limit_refills_the_bucket_and_pausing_does_not,
            throttling::queue_concurrency_limit_counts_leases_and_every_way_out_frees_a_slot,
            throttling::key_concurrency_limit_passes_over_a_busy_key_keeping_its_place,
            throttling::key_rate_limit_gives_each_key_its_own_bucket,
            throttling::queue_and_key_limits_apply_together,
            effects::recorded_effects_come_back_with_the_task_in_later_attempts,
            effects::a_stale_or_expired_lease_cannot_record_an_effect,
            effects::invalid_or_too_many_effects_are_refused_whole,
            pause::paused_queue_yields_nothing_and_still_accepts_enqueues,
            pause::pause_leaves_leased_tasks_to_their_workers,
            dead_letters::dead_letters_are_listed_by_queue_and_reason,
            dead_letters::replay_by_ids_moves_dead_letters_to_ready_with_fresh_attempts,
            dead_letters::replay_matching_takes_the_oldest_first_up_to_the_limit,
            dead_letters::replay_matching_filters_by_queue_and_reason,
            dead_letters::purge_by_ids_deletes_dead_letters_for_ever,
            dead_letters::purge_matching_deletes_by_queue_and_reason_oldest_first,
            dead_letters::dead_letters_beyond_dead_retain_are_dropped_oldest_first,
            dead_letters::finished_tasks_beyond_completed_retain_are_deleted_oldest_first,
            dead_letters::list_pages_through_tasks_in_id_order,
            stats::stats_count_tasks_per_state,
            stats::stats_totals_count_every_event,
            stats::oldest_ready_age_is_the_wait_of_the_longest_waiting_ready_task,
            stats::oldest_ready_age_counts_ready_tasks_held_back_by_their_partition,
            stats::start_latency_counts_the_wait_from_due_to_reservation,
            stats::configure_replaces_the_config_and_keeps_the_tasks,
            stats::ping_answers_an_open_broker_and_changes_nothing,
            partitions::tasks_sharing_a_partition_key_run_one_at_a_time_in_enqueue_order,
            partitions::failed_partition_head_blocks_its_key_while_retrying,
            partitions::delayed_partition_head_blocks_later_tasks_of_its_key,
            partitions::finishing_the_head_in_any_way_unblocks_the_next,
            partitions::partition_keys_are_per_queue,
            cancel::cancel_withdraws_waiting_tasks,
            cancel::cancel_refuses_running_finished_and_unknown_tasks,
            bad_input::oversized_payload_is_refused_and_changes_nothing,
            bad_input::batch_too_large_is_refused_by_every_batch_call,
            bad_input::invalid_task_fields_are_refused_by_name_and_change_nothing,
            bad_input::invalid_reserve_request_is_refused_by_name_and_changes_nothing,
            bad_input::invalid_lease_duration_on_extend_is_refused_and_changes_nothing,
            bad_input::unknown_task_and_queue_are_refused,
            bad_input::invalid_list_filter_config_and_selector_are_refused,
            restart::restart_keeps_every_task_and_its_state,
            restart::restart_keeps_queue_config_and_totals,
            restart::lease_survives_restart_and_then_expires_normally,
            restart::lease_taken_before_restart_can_be_acked_after,
            restart::fences_keep_growing_across_restart,
            restart::ids_after_restart_are_greater_than_before,
            restart::idempotency_keys_survive_restart,
            restart::dead_letters_survive_restart_and_can_be_replayed,
            model::model_agrees_with_broker,
        }
    };
}

/// Expands the case list for one use: `[tests factory, model_factory]` or `[names]`.
#[doc(hidden)]
#[macro_export]
macro_rules! __expand {
    ([tests $factory:path, $model_factory:path] $($area:ident :: $case:ident),* $(,)?) => {
        $( $crate::__test!($factory, $model_factory, $area, $case); )*
    };
    ([names] $($area:ident :: $case:ident),* $(,)?) => {
        /// Every case of the suite as `area::case`, in the order [`suite!`] expands them.
        pub const CASES: &[&str] = &[$(concat!(stringify!($area), "::", stringify!($case))),*];
    };
}

/// One generated test. The model proptest builds many harnesses, so it takes the factory
/// itself; every other case takes one fresh harness.
#[doc(hidden)]
#[macro_export]
macro_rules! __test {
    ($factory:path, $model_factory:path, model, $case:ident) => {
        #[test]
        fn $case() {
            $crate::model::$case(|| $model_factory());
        }
    };
    ($factory:path, $model_factory:path, $area:ident, $case:ident) => {
        #[test]
        fn $case() {
            $crate::block_on(async {
                let mut harness = $factory().await;
                $crate::cases::$area::$case(&mut harness).await;
            });
        }
    };
}

__cases!(names);

#[cfg(test)]
mod tests {
    use super::CASES;

    #[test]
    fn case_names_are_unique() {
        let mut names: Vec<&str> = CASES
            .iter()
            .map(|case| case.rsplit("::").next().unwrap_or(case))
            .collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "two cases share a name");
    }
}
