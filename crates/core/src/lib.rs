//! floodway's vocabulary: tasks, their states and legal transitions, leases with fencing,
//! retry policies, queue configuration, limits, and the [`Broker`] trait every backend
//! implements.
//!
//! This crate does no I/O and never sleeps or spawns: brokers, the worker runtime and the
//! server build on it, and its rules (above all [`transition`]) are the same for all of them.
//! Time and randomness come in as arguments ([`Clock`], `random: f64`), so everything here is
//! deterministic under test.

pub mod broker;
pub mod duration;
pub mod error;
pub mod id;
pub mod latency;
pub mod lease;
pub mod limits;
pub mod name;
pub mod queue;
pub mod retry;
pub mod state;
pub mod task;
pub mod time;
pub mod trace;

pub use broker::{
    Broker, Capabilities, DeadSelector, EffectRecord, Enqueued, FailOutcome, Failure, LeaseResults,
    Reservation, ReserveRequest, RetryDecision, TaskFilter,
};
pub use error::BrokerError;
pub use id::{IdGenerator, MalformedTaskId, TaskId};
pub use latency::{LATENCY_BUCKETS, LatencyHistogram};
pub use lease::{Fence, Lease, LeaseRef, Refusal};
pub use name::QueueName;
pub use queue::{
    DeadCounts, OverflowPolicy, QueueConfig, QueueStats, QueueTotals, RateLimit, StateCounts,
    Watermarks,
};
pub use retry::{Jitter, RetryPolicy};
pub use state::{DeadReason, Event, IllegalTransition, TaskState, transition};
pub use task::{Effects, Headers, NewTask, Task};
pub use time::{Clock, ManualClock, MonotonicClock, SystemClock, Timestamp};
pub use trace::{SpanId, TraceContext, TraceFlags, TraceId, TraceParent};
