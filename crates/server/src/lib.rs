//! floodway's HTTP server: API v1 over any [`floodway_core::Broker`], so services in any
//! language can enqueue tasks and work them.
//!
//! ```text
//!  client ──TCP──► listen: connection limit, TLS, header timeout (hyper + timer)
//!                    └─► router (axum): body limit, request timeout, request log and count
//!                          └─► extractors: token (401), rate limit (429), path, JSON body
//!                                └─► handler: scope (403), one broker call, wire types
//! ```
//!
//! - [`Server`] binds and serves; [`ServerConfig`] holds every setting (TOML file, then
//!   `FLOODWAY_SERVE_*` environment variables, then command-line flags).
//! - [`wire`] holds the JSON types of the API, which the OpenAPI document (`/openapi.json`,
//!   [`openapi`]) is generated from; the client crate uses the same types.
//! - [`ApiError`] is the one error type: `{"error": {"code", "message", "details"}}` with the
//!   right status. A refused request changes nothing.
//! - The web dashboard (`/` and `/dashboard/*`): static files compiled into the binary that
//!   call the API from the browser with the user's token; see the `dashboard` module.
//! - [`auth`]: bearer tokens with scopes per queue pattern, stored hashed, compared in constant
//!   time, each with a rate limit.
//!
//! The server is generic over the broker only at its entrance ([`Server::new`]); inside, the
//! broker is a trait object, so the router is compiled once whatever the broker. It holds no
//! state of its own beyond request counters and rate-limit buckets: several servers can share
//! one distributed broker.

mod app;
pub mod auth;
pub mod config;
mod dashboard;
mod erased;
pub mod error;
mod extract;
pub mod limits;
mod listen;
pub mod metrics;
mod routes;
pub mod wire;

pub use app::openapi;
pub use config::{
    ConfigError, Limits, Overrides, RateLimit, Scope, ServerConfig, TlsConfig, TokenConfig,
};
pub use error::ApiError;
pub use listen::{Listening, Server};
pub use routes::health::Health;
