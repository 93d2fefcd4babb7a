//! floodway's backpressure primitives, each a small state machine with no I/O, no clock of its
//! own and no threads:
//!
//! - [`TokenBucket`]: rate limiting (rate + burst, configured as a [`RateLimit`]), for queues
//!   and keys;
//! - [`CircuitBreaker`]: a producer stops calling a failing broker for a while, then probes;
//! - [`WatermarkGate`]: refuse enqueues above a high watermark until the depth falls below a low
//!   one (hysteresis);
//! - [`AimdLimiter`]: a worker's concurrency that grows additively while a downstream copes and
//!   halves when it reports overload, as TCP's congestion window does;
//! - [`DrainMeter`]: how fast a queue completes tasks, so a refusal can say when to come back;
//! - [`retry_delay`]: how long a producer waits before trying again, honouring a Retry-After hint
//!   with jitter.
//!
//! Time is always an argument: a [`Duration`](std::time::Duration) since an origin the caller
//! chooses (a process start, or the Unix epoch), so tests step time by hand and never sleep.
//! Brokers, the worker and the client hold these values behind their own locks and feed them
//! their clock.

mod aimd;
mod breaker;
mod bucket;
mod drain;
mod error;
mod limit;
mod retry;
mod watermark;

pub use aimd::{AimdConfig, AimdLimiter};
pub use breaker::{BreakerConfig, BreakerOpen, BreakerState, CircuitBreaker};
pub use bucket::TokenBucket;
pub use drain::{DrainMeter, RETRY_AFTER_MAX, RETRY_AFTER_MIN, RETRY_AFTER_UNKNOWN};
pub use error::InvalidConfig;
pub use limit::{RATE_MAX, RateLimit};
pub use retry::retry_delay;
pub use watermark::{WatermarkGate, Watermarks};
