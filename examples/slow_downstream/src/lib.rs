//! Workload W5 ("slow downstream", `shared/bench/WORKLOADS.md`) in one process, with
//! floodway's backpressure on and off.
//!
//! Producers offer 2,000 tasks a second for 30 seconds to a queue of the embedded broker;
//! each task's handler calls a simulated [`downstream`] that serves 500 requests a second and
//! refuses the rest (503 with Retry-After). [`workload::run`] runs it as a [`Scenario`] says,
//! samples the queue, and audits every accepted task by id at the end; [`plot`] draws the
//! timeline. The binary (`src/main.rs`) parses arguments and writes the files;
//! docs/backpressure.md shows the results.
//!
//! The modules, in the order a run uses them:
//! - [`scenario`]: every setting of a run, with W5's values;
//! - [`downstream`]: the simulated service and its admission model;
//! - [`workload`]: producers, worker, sampler and audit;
//! - [`timeline`] and [`summary`]: what a run measured;
//! - [`plot`]: the PNG.

pub mod downstream;
pub mod plot;
pub mod scenario;
pub mod summary;
pub mod timeline;
pub mod workload;

pub use scenario::Scenario;
pub use summary::Summary;
pub use workload::{Run, run};

#[cfg(test)]
mod tests;
