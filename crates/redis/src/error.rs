//! [`ConnectError`]: why the Redis broker could not be opened. Once open, calls fail with
//! [`floodway_core::BrokerError`]; see `broker.rs` for how Redis errors map onto it.

/// Why [`crate::RedisBroker::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL is not one the broker understands.
    #[error(transparent)]
    Endpoint(#[from] crate::options::InvalidEndpoint),
    /// Redis could not be reached, or refused the connection.
    #[error("cannot connect to Redis at {endpoint}: {source}")]
    Redis {
        /// Where (passwords redacted).
        endpoint: String,
        /// What the client reported.
        #[source]
        source: redis::RedisError,
    },
    /// Redis may evict keys, which would silently delete tasks.
    #[error(
        "Redis at {node} has maxmemory-policy {policy}: under memory pressure it would delete \
         tasks. Set `maxmemory-policy noeviction` (or pass allow_eviction to accept the risk)"
    )]
    Eviction {
        /// The node.
        node: String,
        /// Its policy.
        policy: String,
    },
    /// The server is too old for the broker's scripts.
    #[error("Redis at {node} is version {version}; floodway needs 7.0 or later")]
    Version {
        /// The node.
        node: String,
        /// Its version.
        version: String,
    },
    /// The options ask for something this server cannot do (`wait_aof` on Redis before 7.2,
    /// or with `appendonly no`).
    #[error("Redis at {node} cannot do what the options ask: {reason}")]
    Unsupported {
        /// The node.
        node: String,
        /// What is missing.
        reason: String,
    },
    /// Redis holds no floodway dataset marker and the options say not to create one.
    #[error(
        "Redis holds no floodway dataset (prefix {prefix:?}) and create_if_missing is off: if \
         it restarted without persistence, every task is gone; initialise it deliberately"
    )]
    MissingDataset {
        /// The key prefix looked at.
        prefix: String,
    },
    /// The options are inconsistent (a shard count out of range, say).
    #[error("invalid option {0}")]
    Options(String),
    /// What Redis holds cannot be read by this build.
    #[error(transparent)]
    Malformed(#[from] crate::codec::Malformed),
}
