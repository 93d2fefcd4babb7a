//! The client's defaults, in one place. Each can be changed in [`crate::ClientConfig`].

use std::time::Duration;

/// How long a request may take beyond what it waits for on purpose (a reserve's long poll),
/// unless the configuration says otherwise. It matches the server's default request timeout.
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// How long connecting (and the TLS handshake) may take by default.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// How long an idle pooled connection is kept by default: shorter than the server's default
/// `header_read_timeout` (10s), which closes idle connections, so the client never sends a
/// request on a connection the server is closing.
pub const POOL_IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// Most idle connections kept per server by default.
pub const POOL_IDLE_MAX_DEFAULT: usize = 64;

const _: () = {
    assert!(
        POOL_IDLE_TIMEOUT_DEFAULT.as_millis()
            < floodway_server::limits::HEADER_READ_TIMEOUT_DEFAULT.as_millis()
    );
    assert!(
        TIMEOUT_DEFAULT.as_millis() >= floodway_server::limits::REQUEST_TIMEOUT_DEFAULT.as_millis()
    );
};
