//! floodway's default broker: durable, single node, one data directory, no external service.
//!
//! The whole state lives in memory (module `state`), indexed so every operation is O(log n)
//! in the number of tasks. Every change is also a record (module `record`) appended to a log in
//! the data directory (module `storage`) and made durable with group commit before the call
//! that made it returns (module `broker`; `reserve` is the one exception, made safe by epoch
//! fences). On open, the newest snapshot plus the logs after it rebuild the state. The log is
//! compacted into a new snapshot, on a thread of its own, once half of the data files are
//! garbage.
//!
//! docs/decisions/0001 explains why this design beat SQLite, redb and fjall on floodway's
//! workloads; 0002 to 0004 explain the encoding, compaction and unsynced reservations.

mod broker;
mod disk;
#[cfg(any(test, feature = "fault-injection"))]
pub mod fault;
mod options;
mod record;
mod state;
mod storage;

pub use broker::EmbeddedBroker;
pub use options::{Durability, InvalidDurability, Options};
pub use storage::{OpenError, RecoveryReport};
