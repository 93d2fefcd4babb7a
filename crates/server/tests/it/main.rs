//! Integration tests of the HTTP API: one binary, one module per area. Every test runs the
//! real server (router, listener, limits) on a loopback port over a real embedded broker, and
//! talks to it with a real HTTP client, the way a service in any language would; the
//! dashboard's tests drive a real headless Chromium (`browser.rs`).

mod api;
mod auth;
mod backpressure;
mod browser;
mod dashboard;
mod errors;
mod fuzz;
mod limits;
mod metrics;
mod openapi;
mod support;
mod tls;
