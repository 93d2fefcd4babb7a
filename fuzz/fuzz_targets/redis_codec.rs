//! The Redis broker's task codec on arbitrary bytes: every decoder (task record, body, retry
//! policy, queue configuration, dataset marker, task-id suffixes) must refuse what it cannot
//! read, never panic, and what it accepts must survive being encoded again.
//! Stable twin: `every_decoder_survives_random_and_mutated_input` in crates/redis/src/codec.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    floodway_redis::fuzzing::decode_all(data);
});
