//! Integration tests of the HTTP client: one binary, one module per area. Every test runs a
//! real `floodway_server::Server` on a loopback port over a real embedded broker; nothing is
//! mocked.

mod conformance;
mod producer;
mod support;
mod trace;
mod worker;
