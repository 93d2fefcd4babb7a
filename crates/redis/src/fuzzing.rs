//! An entry point for fuzzing the task codec (feature `fuzzing`; also compiled for this
//! crate's tests): `fuzz/fuzz_targets/redis_codec.rs` calls it under libFuzzer, and a proptest
//! in `codec.rs` under the stable toolchain.

use floodway_core::{QueueName, TaskId};

use crate::codec::{
    Marker, Record, decode_body, decode_config, decode_retry, encode_body, encode_config,
    encode_retry, tids_from,
};

/// Runs every decoder of the codec on `bytes` (as a task record, a body, a retry policy, a
/// queue configuration's fields one per line, a dataset marker, task-id suffixes) and returns
/// how many accepted them. It panics only on a bug: a decoder that panics, or a value that does
/// not survive being encoded again and decoded.
pub fn decode_all(bytes: &[u8]) -> usize {
    let mut accepted = 0;
    if let Ok(record) = Record::decode(bytes) {
        accepted += 1;
        let queue = QueueName::new("fuzz").expect("a valid name");
        let _ = record.into_task(TaskId::from_u128(1), queue);
    }
    if let Ok(body) = decode_body(bytes) {
        accepted += 1;
        let again = encode_body(&body.kind, &body.headers, body.timeout, &body.payload);
        assert_eq!(decode_body(&again).expect("re-encoded body decodes"), body);
    }
    let _ = tids_from(bytes).map(|tids| tids.take(4).count());
    let Ok(text) = std::str::from_utf8(bytes) else {
        return accepted;
    };
    if let Ok(policy) = decode_retry(text) {
        accepted += 1;
        let again = decode_retry(&encode_retry(&policy)).expect("re-encoded policy decodes");
        assert_eq!(again, policy, "retry policy {text:?} does not round-trip");
    }
    if Marker::parse(text).is_ok() {
        accepted += 1;
    }
    let fields: Vec<&str> = text.split('\n').collect();
    if let Ok(config) = decode_config(&fields) {
        accepted += 1;
        let encoded = encode_config(&config);
        let fields: Vec<&str> = encoded.iter().map(String::as_str).collect();
        let again = decode_config(&fields).expect("re-encoded configuration decodes");
        assert_eq!(again, config, "configuration {text:?} does not round-trip");
    }
    accepted
}
