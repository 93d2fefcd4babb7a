//! Integration tests of the embedded broker: one binary (STYLE.md), one module per area.
//! The behaviour every broker shares is tested by the conformance suite (`conformance.rs`);
//! `storage.rs` covers what only this broker has: its files, recovery and group commit.

mod clock;
mod conformance;
mod disk_full;
mod limits;
mod power_loss;
mod recovery_fuzz;
mod storage;
