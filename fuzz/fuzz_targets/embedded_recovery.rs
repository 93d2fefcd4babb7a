//! The embedded broker's recovery on arbitrary log bytes: opening a data directory whose log
//! holds them must never panic; it opens (a damaged tail is cut off) or refuses with
//! `Corrupt`, and what opened opens again to the same tasks.
//! Stable twin: crates/embedded/tests/it/recovery_fuzz.rs.
#![no_main]

use std::sync::Arc;

use floodway_core::{Broker, ManualClock, TaskFilter, Timestamp};
use floodway_embedded::fault::SimulatedDisk;
use floodway_embedded::{EmbeddedBroker, OpenError, Options};
use libfuzzer_sys::fuzz_target;

const DIR: &str = "/fuzz/data";
const LOG: &str = "/fuzz/data/log-00000000000000000000";

fn options() -> Options {
    Options {
        clock: Arc::new(ManualClock::new(Timestamp::from_millis(1_800_000_000_000))),
        maintenance_interval: None,
        ..Options::default()
    }
}

fuzz_target!(|data: &[u8]| {
    // Most inputs keep a valid header, so that the frames behind it are what gets explored.
    let mut log = b"FLOODLOG\x03\0\0\0\0\0\0\0".to_vec();
    match data.split_first() {
        Some((0, rest)) => log = rest.to_vec(),
        Some((_, rest)) => log.extend_from_slice(rest),
        None => {}
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let disk = SimulatedDisk::new();
        disk.write_file(LOG, &log).unwrap();
        let broker = match EmbeddedBroker::open_simulated(&disk, DIR, options()) {
            Ok(broker) => broker,
            Err(OpenError::Corrupt { .. }) => return,
            Err(other) => panic!("neither opened nor corrupt: {other}"),
        };
        let filter = TaskFilter {
            limit: 1000,
            ..TaskFilter::default()
        };
        let tasks = broker.list(filter.clone()).await.expect("reads work");
        broker.stats(None).await.expect("stats work");
        broker.close().await;
        let again = EmbeddedBroker::open_simulated(&disk, DIR, options()).expect("opens again");
        assert_eq!(again.list(filter).await.unwrap(), tasks);
        again.close().await;
    });
});
