//! Task identity: [`TaskId`], a UUIDv7, and the [`IdGenerator`] that makes them in order.
//!
//! Ids are time-ordered, so sorting tasks by id sorts them by creation, "oldest first" needs no
//! extra index, and ids made by one generator are strictly increasing even within a
//! millisecond.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::time::Timestamp;

/// A task's identity: a UUIDv7 (RFC 9562), unique and ordered by creation time.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(Uuid);

impl TaskId {
    /// The id with the given 128-bit value; used by storage codecs.
    pub const fn from_u128(value: u128) -> Self {
        TaskId(Uuid::from_u128(value))
    }

    /// The id's 128-bit value; ordering by it is ordering by id.
    pub const fn as_u128(self) -> u128 {
        self.0.as_u128()
    }

    /// The millisecond the id was made in.
    pub fn created_at(self) -> Timestamp {
        Timestamp::from_millis((self.as_u128() >> 80) as u64)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a string is not a task id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "malformed task id {input:?}: expected a UUID such as 01934f6e-8c4a-7b1e-9a4d-2f1c3b5a6d7e"
)]
pub struct MalformedTaskId {
    /// The text that was given, cut to 64 characters.
    pub input: String,
}

impl FromStr for TaskId {
    type Err = MalformedTaskId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::try_parse(s).map(TaskId).map_err(|_| MalformedTaskId {
            input: s.chars().take(64).collect(),
        })
    }
}

/// Makes strictly increasing UUIDv7 ids.
///
/// Within one millisecond the 74 bits after the timestamp count up from a random start
/// (RFC 9562, "monotonic random"), so ids stay ordered even when thousands are made per
/// millisecond; if the counter would overflow, the id borrows the next millisecond. The caller
/// supplies time and randomness, which keeps this type pure and its output reproducible in
/// tests.
#[derive(Debug, Default, Clone)]
pub struct IdGenerator {
    /// The last id returned; every later id is greater.
    last: u128,
}

const VERSION_BITS: u128 = 0x7 << 76;
const VARIANT_BITS: u128 = 0b10 << 62;
const RAND_A_MASK: u128 = 0xfff << 64;
const RAND_B_MASK: u128 = (1 << 62) - 1;

impl IdGenerator {
    /// A generator whose ids will all be greater than `floor` (the greatest id already stored,
    /// when a broker reopens).
    pub fn after(floor: TaskId) -> Self {
        IdGenerator {
            last: floor.as_u128(),
        }
    }

    /// The next id for time `now`, using `random` for the bits after the timestamp.
    pub fn next(&mut self, now: Timestamp, random: u128) -> TaskId {
        let millis = u128::from(now.as_millis() & ((1 << 48) - 1));
        // Start the counter in the lower half of its range so that many increments fit
        // before it would spill into the next millisecond.
        let random = random & !(1 << 73);
        let rand_a = (random >> 62) << 64 & RAND_A_MASK;
        let rand_b = random & RAND_B_MASK;
        let candidate = millis << 80 | VERSION_BITS | rand_a | VARIANT_BITS | rand_b;
        let id = if candidate > self.last {
            candidate
        } else {
            increment(self.last)
        };
        self.last = id;
        TaskId::from_u128(id)
    }
}

/// The smallest valid UUIDv7 greater than `id`: the 74-bit counter plus one, carrying into the
/// timestamp when it overflows.
fn increment(id: u128) -> u128 {
    let millis = id >> 80;
    let counter = ((id & RAND_A_MASK) >> 2) | (id & RAND_B_MASK);
    let (millis, counter) = if counter == (1 << 74) - 1 {
        (millis + 1, 0)
    } else {
        (millis, counter + 1)
    };
    let rand_a = (counter >> 62) << 64;
    let rand_b = counter & RAND_B_MASK;
    millis << 80 | VERSION_BITS | rand_a | VARIANT_BITS | rand_b
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_are_valid_uuid_v7() {
        let mut ids = IdGenerator::default();
        let id = ids.next(Timestamp::from_millis(1_795_338_930_123), u128::MAX);
        let uuid = Uuid::from_u128(id.as_u128());
        assert_eq!(uuid.get_version_num(), 7);
        assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(id.created_at(), Timestamp::from_millis(1_795_338_930_123));
    }

    #[test]
    fn display_round_trips() {
        let mut ids = IdGenerator::default();
        let id = ids.next(Timestamp::from_millis(42), 7);
        assert_eq!(id.to_string().parse::<TaskId>().unwrap(), id);
    }

    #[test]
    fn malformed_id_is_named() {
        let err = "not-a-uuid".parse::<TaskId>().unwrap_err();
        assert!(err.to_string().contains("not-a-uuid"));
    }

    #[test]
    fn counter_overflow_borrows_the_next_millisecond() {
        let now = Timestamp::from_millis(1000);
        let last = 1000u128 << 80 | VERSION_BITS | RAND_A_MASK | VARIANT_BITS | RAND_B_MASK;
        let mut ids = IdGenerator { last };
        let id = ids.next(now, 0);
        assert_eq!(id.created_at(), Timestamp::from_millis(1001));
        assert!(id.as_u128() > last);
        assert_eq!(Uuid::from_u128(id.as_u128()).get_version_num(), 7);
    }

    proptest! {
        #[test]
        fn ids_strictly_increase(steps in prop::collection::vec((0u64..3, any::<u128>()), 1..200)) {
            let mut ids = IdGenerator::default();
            let mut now = 1_700_000_000_000u64;
            let mut previous: Option<TaskId> = None;
            for (advance, random) in steps {
                now += advance;
                let id = ids.next(Timestamp::from_millis(now), random);
                let uuid = Uuid::from_u128(id.as_u128());
                prop_assert_eq!(uuid.get_version_num(), 7);
                prop_assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122);
                if let Some(previous) = previous {
                    prop_assert!(id > previous);
                }
                previous = Some(id);
            }
        }
    }
}
