//! Leases and fencing: how a broker knows which worker may finish a task.
//!
//! Reserving a task gives the worker a [`Lease`] carrying a [`Fence`], a number that grows with
//! every reservation of that task. Ack, fail, extend and release must present the fence; the
//! broker refuses any fence but the task's current one, and refuses an expired lease. So a
//! worker that paused past its lease (a "zombie") cannot complete a task that another worker
//! now holds: its fence is stale.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::id::TaskId;
use crate::state::TaskState;
use crate::time::Timestamp;

/// A fencing token: grows with every reservation of a task. The first reservation gets fence
/// 1; a task never reserved has fence 0; after a broker restart the next fence may skip ahead.
/// Fences never decrease and are never issued twice, so a fence identifies one reservation of
/// one task for ever.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Fence(pub u64);

impl Fence {
    /// The fence of the next reservation.
    pub const fn next(self) -> Fence {
        Fence(self.0 + 1)
    }
}

impl fmt::Display for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a worker presents to act on a reserved task: the task and the fence it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseRef {
    /// The leased task.
    pub task_id: TaskId,
    /// The fence the reservation returned.
    pub fence: Fence,
}

/// A worker's right to run one task until `expires_at` (on the broker's clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lease {
    /// The leased task.
    pub task_id: TaskId,
    /// The reservation's fence.
    pub fence: Fence,
    /// When the broker takes the task back unless the lease is extended first.
    pub expires_at: Timestamp,
}

impl Lease {
    /// The reference a worker presents to ack, fail, extend or release.
    pub fn as_ref(&self) -> LeaseRef {
        LeaseRef {
            task_id: self.task_id,
            fence: self.fence,
        }
    }
}

/// Why a broker refused one item of a batch; the other items are unaffected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Refusal {
    /// No such task.
    #[error("unknown task")]
    UnknownTask,
    /// The task is not in a state the operation applies to (acking a task that is not active,
    /// cancelling one that is already running).
    #[error("task is {state}")]
    WrongState {
        /// The task's state.
        state: TaskState,
    },
    /// The fence presented is not the task's current one: another reservation superseded it.
    #[error("stale lease: fence {presented} was superseded by fence {current}")]
    StaleFence {
        /// The fence the caller presented.
        presented: Fence,
        /// The task's current fence.
        current: Fence,
    },
    /// The lease expired (on the broker's clock) before the call reached the broker.
    #[error("lease expired at {expired_at}")]
    LeaseExpired {
        /// When it expired.
        expired_at: Timestamp,
    },
}
