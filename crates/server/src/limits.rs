//! The server's defaults and bounds, in one place.
//!
//! Limits on tasks themselves (payload size, batch size, lease bounds, the longest reserve
//! wait) live in [`floodway_core::limits`]; this module names only what belongs to HTTP: how
//! much a request may carry, how long it may take, and how many connections and tokens the
//! server holds. Every default can be changed in the configuration ([`crate::Limits`]) within
//! the bounds below; relations between them are checked at compile time at the bottom.

use std::time::Duration;

use floodway_core::limits as core;

/// The address `floodway serve` listens on by default: loopback only, so a server started
/// without tokens is reachable from this machine alone.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:7700";

/// Largest request body accepted by default. A single task's payload is at most
/// [`core::PAYLOAD_BYTES_MAX`] (1 MiB); JSON escaping or base64 can grow it by a third, and a
/// batch carries many, so the default leaves room for a maximal payload and then some.
pub const BODY_BYTES_MAX_DEFAULT: usize = 8 * 1024 * 1024;

/// Smallest body limit a configuration may set: a maximal payload, base64-encoded, must fit.
pub const BODY_BYTES_MAX_MIN: usize = core::PAYLOAD_BYTES_MAX / 3 * 4 + 64 * 1024;

/// Largest body limit a configuration may set.
pub const BODY_BYTES_MAX_MAX: usize = 256 * 1024 * 1024;

/// Most tasks (or leases, ids) one request may carry by default: the broker's own limit.
pub const BATCH_SIZE_MAX_DEFAULT: usize = core::BATCH_SIZE_MAX;

/// How long a client may take to send a request's headers, and how long an idle keep-alive
/// connection stays open, by default. Slow or silent clients (slowloris) are disconnected
/// after this.
pub const HEADER_READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// How long one request may take, by default, from the end of its headers to its response.
/// A mutating request cut off by it may or may not have taken effect (503 `timeout`).
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// Longest a reserve request may wait for tasks (long poll) by default. Longer waits asked
/// for are shortened to this, which keeps a long poll inside the request timeout.
pub const RESERVE_WAIT_MAX_DEFAULT: Duration = Duration::from_secs(20);

/// Time the request timeout must leave after the longest reserve wait, for the reservation
/// itself and the response.
pub const RESERVE_WAIT_MARGIN: Duration = Duration::from_secs(5);

/// Most connections served at once by default; further connections wait in the kernel's
/// accept queue until one closes.
pub const CONNECTIONS_MAX_DEFAULT: usize = 1024;

/// Largest connection limit a configuration may set.
pub const CONNECTIONS_MAX_MAX: usize = 100_000;

/// Longest a TLS handshake may take before the connection is dropped.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown lets requests in flight finish before closing their connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Most bearer tokens a configuration may hold; each request compares against all of them.
pub const TOKENS_MAX: usize = 1000;

/// Most queue patterns one token may hold.
pub const TOKEN_QUEUES_MAX: usize = 100;

/// Longest bearer token accepted in a request, in bytes; longer ones are refused unread.
pub const TOKEN_LEN_MAX: usize = 512;

/// Most tasks a `GET` list returns when the request names no limit.
pub const LIST_LIMIT_DEFAULT: usize = 100;

/// Largest request header block, in bytes.
pub const HEADER_BYTES_MAX: usize = 64 * 1024;

const _: () = {
    assert!(BODY_BYTES_MAX_MIN <= BODY_BYTES_MAX_DEFAULT);
    assert!(BODY_BYTES_MAX_DEFAULT <= BODY_BYTES_MAX_MAX);
    assert!(BATCH_SIZE_MAX_DEFAULT <= core::BATCH_SIZE_MAX);
    assert!(LIST_LIMIT_DEFAULT <= core::LIST_LIMIT_MAX);
    assert!(
        RESERVE_WAIT_MAX_DEFAULT.as_millis() + RESERVE_WAIT_MARGIN.as_millis()
            <= REQUEST_TIMEOUT_DEFAULT.as_millis()
    );
    assert!(RESERVE_WAIT_MAX_DEFAULT.as_millis() <= core::RESERVE_WAIT_MAX.as_millis());
    assert!(CONNECTIONS_MAX_DEFAULT <= CONNECTIONS_MAX_MAX);
};

/// Most series the server's request metrics hold (counts by route, method and status, and
/// durations by route and method, together). Routes come from the router and methods are
/// folded to a fixed set, so real servers stay far below; past it new series are not counted.
pub const HTTP_SERIES_MAX: usize = 4096;
