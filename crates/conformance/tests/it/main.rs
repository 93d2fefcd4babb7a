//! The conformance crate's integration tests: one binary, as in every floodway crate.

mod model_broker;
mod mutants;
