//! Integration tests of the worker runtime against the real embedded broker: one binary
//! (STYLE.md), one module per area.

mod adaptive;
mod capacity;
mod config;
mod effects;
mod leases;
mod metrics;
mod outcomes;
mod shutdown;
mod support;
