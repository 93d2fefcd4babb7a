//! Recovery of arbitrary and damaged bytes (issue 7, T16), on the stable toolchain: the same
//! inputs as the cargo-fuzz target `fuzz/fuzz_targets/embedded_recovery.rs`, through proptest.
//!
//! A real workload writes a log on the simulated disk; the test damages it (bytes flipped, cut,
//! repeated, inserted, or the whole body replaced by random bytes) and opens the broker on it.
//! Opening must never panic: it either refuses with `Corrupt` (damage before the end, where
//! recovery must not guess) or opens, and then every read works and a second opening finds
//! the same state. The undamaged log opens to exactly the state the workload left.

use std::sync::Arc;
use std::time::Duration;

use floodway_core::{
    Broker, ManualClock, NewTask, QueueName, ReserveRequest, TaskFilter, Timestamp,
};
use floodway_embedded::fault::SimulatedDisk;
use floodway_embedded::{EmbeddedBroker, OpenError, Options};
use proptest::prelude::*;

const DIR: &str = "/sim/data";
const LOG: &str = "/sim/data/log-00000000000000000000";
/// The log's header: magic and format version.
const HEADER_LEN: usize = 16;

fn options() -> Options {
    Options {
        clock: Arc::new(ManualClock::new(Timestamp::from_millis(1_800_000_000_000))),
        maintenance_interval: None,
        ..Options::default()
    }
}

/// A log written by a real workload: enqueues with every option, reservations, acks,
/// failures, a configuration.
fn workload_log() -> Vec<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let disk = SimulatedDisk::new();
        let broker = EmbeddedBroker::open_simulated(&disk, DIR, options()).unwrap();
        let queue = QueueName::new("fuzz").unwrap();
        let tasks = (0..6)
            .map(|i| {
                NewTask::new("k", format!("{{\"i\":{i}}}"))
                    .priority(i as u8)
                    .idempotency_key(format!("key-{i}"))
                    .delay(Duration::from_secs(i))
                    .header("trace", "abc")
            })
            .collect();
        broker.enqueue(&queue, tasks).await.unwrap();
        let held = broker
            .reserve(ReserveRequest::new(
                queue.clone(),
                2,
                Duration::from_secs(30),
            ))
            .await
            .unwrap();
        broker.ack(&[held[0].lease.as_ref()]).await.unwrap();
        broker.pause(&queue).await.unwrap();
        broker.close().await;
        disk.read_file(LOG).unwrap()
    })
}

/// Opens the broker on a disk whose only log holds `bytes`; panics only if the broker does.
fn open_damaged(bytes: &[u8]) -> Result<usize, OpenError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let disk = SimulatedDisk::new();
        disk.write_file(LOG, bytes).unwrap();
        let broker = EmbeddedBroker::open_simulated(&disk, DIR, options())?;
        let tasks = broker
            .list(TaskFilter {
                limit: 1000,
                ..TaskFilter::default()
            })
            .await
            .expect("reads work on whatever opened");
        broker.stats(None).await.expect("stats work");
        broker.close().await;
        let again = EmbeddedBroker::open_simulated(&disk, DIR, options())
            .expect("a directory that opened once opens again");
        let same = again
            .list(TaskFilter {
                limit: 1000,
                ..TaskFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(same, tasks, "a second opening finds the same tasks");
        again.close().await;
        Ok(tasks.len())
    })
}

#[derive(Clone, Debug)]
enum Damage {
    Flip(usize, u8),
    Cut(usize),
    Repeat(usize, usize),
    Insert(usize, Vec<u8>),
    Replace(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(at, bits)| Damage::Flip(at, bits)),
        any::<usize>().prop_map(Damage::Cut),
        (any::<usize>(), 1usize..200).prop_map(|(at, len)| Damage::Repeat(at, len)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..32))
            .prop_map(|(at, b)| Damage::Insert(at, b)),
        prop::collection::vec(any::<u8>(), 0..400).prop_map(Damage::Replace),
    ]
}

fn apply(log: &[u8], damage: &Damage) -> Vec<u8> {
    let (header, body) = log.split_at(HEADER_LEN);
    let mut body = body.to_vec();
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    match damage {
        Damage::Flip(i, bits) => {
            let i = at(*i, body.len());
            body[i] ^= bits;
        }
        Damage::Cut(i) => body.truncate(at(*i, body.len())),
        Damage::Repeat(i, len) => {
            let start = at(*i, body.len());
            let end = (start + len).min(body.len());
            let piece = body[start..end].to_vec();
            body.splice(end..end, piece);
        }
        Damage::Insert(i, bytes) => {
            let i = at(*i, body.len());
            body.splice(i..i, bytes.iter().copied());
        }
        Damage::Replace(bytes) => body.clone_from(bytes),
    }
    [header, &body].concat()
}

#[test]
fn the_undamaged_log_recovers_every_task() {
    assert_eq!(open_damaged(&workload_log()).unwrap(), 6);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_damaged_log_opens_or_is_refused_as_corrupt_never_a_panic(
        damages in prop::collection::vec(damage(), 1..3),
        raw in prop::collection::vec(any::<u8>(), 0..64),
        whole_file in any::<bool>(),
    ) {
        let log = workload_log();
        let bytes = if whole_file && damages.len() == 1 {
            // Sometimes not even the header is right.
            raw
        } else {
            damages.iter().fold(log, |log, d| apply(&log, d))
        };
        match open_damaged(&bytes) {
            Ok(tasks) => prop_assert!(tasks <= 6),
            Err(OpenError::Corrupt { .. }) => {}
            Err(other) => prop_assert!(false, "neither opened nor corrupt: {other}"),
        }
    }
}
