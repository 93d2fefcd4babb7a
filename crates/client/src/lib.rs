//! floodway's HTTP client, for services that reach a `floodway serve` over the network.
//!
//! - [`Producer`] enqueues tasks and handles backpressure for the caller: it honours the
//!   server's Retry-After (a full or overloaded queue, an exhausted rate limit) with jitter up
//!   to a deadline, and a circuit breaker makes it fail fast while the server is down. The
//!   same producer works over any broker in process ([`Producer::from_broker`]), such as the
//!   embedded one.
//! - [`HttpBroker`] implements [`floodway_core::Broker`] over HTTP, so the worker runtime runs
//!   unchanged against a remote server (`floodway worker --server URL`):
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use floodway_client::{ClientConfig, HttpBroker, Token};
//! use floodway_worker::{Outcome, TaskContext, Worker};
//!
//! let config = ClientConfig::new("http://127.0.0.1:7700").token(Token::new("fw_..."));
//! let broker = Arc::new(HttpBroker::connect(config).await?);
//! let worker = Worker::builder(broker)
//!     .queue("emails", 16)
//!     .handler("send_email", |_ctx: TaskContext, _email: serde_json::Value| async {
//!         Outcome::Complete
//!     })
//!     .build()?;
//! worker.run(floodway_worker::shutdown_signal()).await;
//! # Ok(()) }
//! ```
//!
//! Requests and answers use the server crate's wire types (`floodway_server::wire`), so the
//! client cannot drift from the API. TLS is rustls with the ring provider, trusting the
//! system's roots plus any given CA file. The token is kept in a [`Token`], whose `Debug`
//! form is redacted, and is sent in a header marked sensitive.

mod broker;
mod config;
mod error;
pub mod limits;
mod producer;
mod transport;

pub use broker::HttpBroker;
pub use config::{ClientConfig, Token};
pub use error::ClientError;
pub use floodway_backpressure::{BreakerConfig, BreakerState};
pub use producer::{Destination, HttpDestination, Producer, ProducerConfig, ProducerEvent};
